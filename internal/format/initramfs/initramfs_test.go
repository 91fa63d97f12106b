package initramfs

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"slices"
	"strings"
	"testing"
)

// testKey returns a fixed Ed25519 public key in PEM, as spine keygen writes it.
func testKey(t testing.TB, seed byte) []byte {
	t.Helper()
	pub := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize)).Public()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func build(t *testing.T, s Spec) ([]byte, []Entry) {
	t.Helper()
	var buf bytes.Buffer
	if err := Build(&buf, s); err != nil {
		t.Fatal(err)
	}
	entries, err := List(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), entries
}

func entryMap(entries []Entry) map[string]Entry {
	m := make(map[string]Entry)
	for _, e := range entries {
		m[e.Name] = e
	}
	return m
}

func names(entries []Entry) []string {
	var n []string
	for _, e := range entries {
		n = append(n, e.Name)
	}
	return n
}

// TestBuild: the initramfs holds exactly bay0 as /init, its sha256, the trusted keys and empty
// mount points (no shell, no tools, no modules), and the same spec gives the same bytes.
func TestBuild(t *testing.T) {
	s := Spec{Bay0: []byte("\x7fELF bay0"), TrustedKeys: [][]byte{testKey(t, 1), testKey(t, 2)}}
	first, entries := build(t, s)
	if again, _ := build(t, s); !bytes.Equal(first, again) {
		t.Fatal("two builds of the same spec differ")
	}
	want := []string{
		"dev", "dev/console", "etc", "etc/bay0", "etc/bay0/bay0.sha256", "etc/bay0/keys", "etc/bay0/keys/0.pub", "etc/bay0/keys/1.pub",
		"init", "newroot", "proc", "run", "sys",
	}
	if got := names(entries); !slices.Equal(got, want) {
		t.Fatalf("entries\n%q\nwant\n%q", got, want)
	}
	m := entryMap(entries)
	sum := sha256.Sum256(s.Bay0)
	if e := m[Bay0SumPath]; string(e.Data) != hex.EncodeToString(sum[:])+"\n" || e.Mode != 0o644 {
		t.Errorf("bay0 sum: %q", e.Data)
	}
	// A caller that knows the sum (stage 0, from the signed manifest) is taken at its word.
	s.Bay0SHA256 = strings.Repeat("ab", 32)
	if _, given := build(t, s); string(entryMap(given)[Bay0SumPath].Data) != s.Bay0SHA256+"\n" {
		t.Errorf("given bay0 sum not written: %q", entryMap(given)[Bay0SumPath].Data)
	}
	if e := m["init"]; e.Mode != 0o755 || string(e.Data) != string(s.Bay0) {
		t.Errorf("init: %v", e)
	}
	if e := m["etc/bay0/keys/1.pub"]; !bytes.Equal(e.Data, s.TrustedKeys[1]) || e.Mode != 0o644 {
		t.Errorf("key 1: %v", e)
	}
	if e := m[ConsolePath]; e.Mode != fs.ModeDevice|fs.ModeCharDevice|0o600 || e.Major != 5 || e.Minor != 1 {
		t.Errorf("console: %v %d:%d", e.Mode, e.Major, e.Minor)
	}
	for _, e := range entries {
		if e.Mode.IsDir() && e.Mode != fs.ModeDir|0o755 {
			t.Errorf("%s: mode %v", e.Name, e.Mode)
		}
	}
}

// TestBuildExtra: extra files land where asked, with their directories and modes.
func TestBuildExtra(t *testing.T) {
	s := Spec{Bay0: []byte("bay0"), TrustedKeys: [][]byte{testKey(t, 1)},
		Extra: []Entry{{Name: "lib/x/extra", Mode: 0o600, Data: []byte("x")}, {Name: "bay0", Mode: 0o755, Data: []byte("b")}}}
	_, entries := build(t, s)
	m := entryMap(entries)
	if e := m["lib/x/extra"]; string(e.Data) != "x" || e.Mode != 0o600 {
		t.Errorf("extra: %v", e)
	}
	if e := m["bay0"]; string(e.Data) != "b" || e.Mode != 0o755 {
		t.Errorf("bay0: %v", e)
	}
	if e := m["lib/x"]; e.Mode != fs.ModeDir|0o755 {
		t.Errorf("lib/x: %v", e)
	}
}

func TestBuildErrors(t *testing.T) {
	good := func() Spec {
		return Spec{Bay0: []byte("bay0"), TrustedKeys: [][]byte{testKey(t, 1)}}
	}
	tests := []struct {
		name   string
		change func(*Spec)
		want   error
		text   string
	}{
		{"no bay0", func(s *Spec) { s.Bay0 = nil }, ErrSpec, "bay0"},
		{"no keys", func(s *Spec) { s.TrustedKeys = nil }, ErrSpec, "keys"},
		{"key not PEM", func(s *Spec) { s.TrustedKeys = [][]byte{[]byte("ssh-ed25519 AAAA")} }, ErrSpec, "key 0"},
		{"private key", func(s *Spec) {
			s.TrustedKeys = [][]byte{pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})}
		}, ErrSpec, "key 0"},
		{"two PEM blocks in one key", func(s *Spec) {
			s.TrustedKeys = [][]byte{append(testKey(t, 1), testKey(t, 2)...)}
		}, ErrSpec, "key 0"},
		{"extra file over init", func(s *Spec) { s.Extra = []Entry{{Name: "init", Mode: 0o755}} }, ErrSpec, `"init"`},
		{"extra file over a directory", func(s *Spec) { s.Extra = []Entry{{Name: "etc/bay0", Mode: 0o644}} }, ErrSpec, `"etc/bay0"`},
		{"extra file twice", func(s *Spec) { s.Extra = []Entry{{Name: "a", Mode: 0o644}, {Name: "a", Mode: 0o644}} }, ErrSpec, `"a"`},
		{"extra file escaping", func(s *Spec) { s.Extra = []Entry{{Name: "../a", Mode: 0o644}} }, ErrSpec, `"../a"`},
		{"extra directory", func(s *Spec) { s.Extra = []Entry{{Name: "d", Mode: fs.ModeDir | 0o755}} }, ErrSpec, `"d"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := good()
			tt.change(&s)
			err := Build(&bytes.Buffer{}, s)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.text) {
				t.Fatalf("got %v, want %v mentioning %q", err, tt.want, tt.text)
			}
		})
	}
}

// TestRole: a role lands in the role file and reads back; no role writes no file; anything but
// the three roles is refused when building and when reading.
func TestRole(t *testing.T) {
	for _, r := range []Role{RoleStage0, SlotRole("a"), SlotRole("b")} {
		_, entries := build(t, Spec{Bay0: []byte("bay0"), TrustedKeys: [][]byte{testKey(t, 1)}, Role: r})
		e, ok := entryMap(entries)[RolePath]
		if !ok {
			t.Fatalf("role %q: no %s", r, RolePath)
		}
		got, err := ParseRole(e.Data)
		if err != nil || got != r {
			t.Errorf("role %q read back as %q, %v", r, got, err)
		}
	}
	_, entries := build(t, Spec{Bay0: []byte("bay0"), TrustedKeys: [][]byte{testKey(t, 1)}})
	if _, ok := entryMap(entries)[RolePath]; ok {
		t.Error("stage 1 initramfs has a role file")
	}
	if slot, ok := SlotRole("b").Slot(); !ok || slot != "b" {
		t.Errorf("SlotRole(b).Slot() = %q, %v", slot, ok)
	}
	for _, bad := range []Role{"slot c", "stage2", "slot", " stage0"} {
		if err := Build(io.Discard, Spec{Bay0: []byte("bay0"), TrustedKeys: [][]byte{testKey(t, 1)}, Role: bad}); !errors.Is(err, ErrSpec) {
			t.Errorf("role %q built: %v", bad, err)
		}
		if _, err := ParseRole([]byte(string(bad) + "\n")); !errors.Is(err, ErrRole) {
			t.Errorf("role %q parsed: %v", bad, err)
		}
	}
	if _, err := ParseRole([]byte("stage0")); !errors.Is(err, ErrRole) {
		t.Errorf("role without newline parsed: %v", err)
	}
}

func FuzzParseRole(f *testing.F) {
	f.Add([]byte("stage0\n"))
	f.Add([]byte("slot a\n"))
	f.Add([]byte("slot c\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRole(b)
		if err != nil {
			return
		}
		if string(r)+"\n" != string(b) {
			t.Fatalf("%q parsed as %q", b, r)
		}
		if _, ok := r.Slot(); !ok && r != RoleStage1 && r != RoleStage0 {
			t.Fatalf("%q parsed as an unknown role", b)
		}
	})
}
