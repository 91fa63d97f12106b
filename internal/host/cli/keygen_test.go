package cli

import (
	"bytes"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeygen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	r := mustSpine(t, nil, "keygen", "--out", dir)
	key, pub := filepath.Join(dir, "spine.key"), filepath.Join(dir, "spine.pub")
	if !strings.Contains(r.stdout, key) || !strings.Contains(r.stdout, pub) {
		t.Errorf("keygen does not say what it wrote: %q", r.stdout)
	}
	st, err := os.Stat(key)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("spine.key mode %v, want 0600", st.Mode().Perm())
	}
	for p, typ := range map[string]string{key: "PRIVATE KEY", pub: "PUBLIC KEY"} {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := pem.Decode(data); b == nil || b.Type != typ {
			t.Errorf("%s is not a PEM %q block", p, typ)
		}
	}

	openssl := lookTool(t, "openssl", "openssl")
	for _, args := range [][]string{
		{"pkey", "-in", key, "-noout"},
		{"pkey", "-pubin", "-in", pub, "-noout"},
	} {
		if out, err := exec.Command(openssl, args...).CombinedOutput(); err != nil {
			t.Errorf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	// A second keygen into the same place is refused and leaves both files alone.
	before := [][]byte{read(t, key), read(t, pub)}
	r = spine(t, nil, "keygen", "--out", dir)
	if r.code != 1 || !strings.Contains(r.stderr, "refuse to overwrite") {
		t.Errorf("second keygen: %v", r)
	}
	if !bytes.Equal(before[0], read(t, key)) || !bytes.Equal(before[1], read(t, pub)) {
		t.Error("second keygen changed the keys")
	}
	// Only the public half left: still refused, nothing written.
	dir2 := t.TempDir()
	writeFile(t, filepath.Join(dir2, "spine.pub"), "old", 0o644)
	if r := spine(t, nil, "keygen", "--out", dir2); r.code != 1 {
		t.Errorf("keygen over an existing spine.pub: %v", r)
	}
	if _, err := os.Stat(filepath.Join(dir2, "spine.key")); err == nil {
		t.Error("spine.key written beside an existing spine.pub")
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		{"keygen"},
		{"keygen", "--out", "x", "extra"},
		{"build", "--config", "x"},
		{"inspect"},
		{"verify", "img"},
		{"audit"},
		{"keygen", "--no-such-flag"},
		{"no-such-command"},
	} {
		if r := spine(t, nil, args...); r.code != 2 || r.stderr == "" {
			t.Errorf("spine %s: %v, want exit 2 with a message", strings.Join(args, " "), r)
		}
	}
	if r := spine(t, nil, "help"); r.code != 0 || !strings.Contains(r.stdout, "keygen") {
		t.Errorf("spine help: %v", r)
	}
}

func read(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
