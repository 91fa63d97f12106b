package luks2

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// cheap are limits that let the tests' cheap containers through and keep fuzzing fast.
var cheap = Limits{MemoryKiB: 2048, Passes: 5, Iterations: 5000}

// cryptsetup runs the reference tool; a missing tool fails the test with the package name.
func cryptsetup(t testing.TB, stdin string, args ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("cryptsetup"); err != nil {
		t.Fatalf("cryptsetup is missing (install the Debian package cryptsetup-bin): %v", err)
	}
	cmd := exec.Command("cryptsetup", append([]string{"--disable-locks", "--batch-mode"}, args...)...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// slotSpec is one keyslot a test container gets: its passphrase and its cryptsetup KDF options.
type slotSpec struct {
	pass string
	kdf  []string
}

var (
	argon2id = []string{"--pbkdf", "argon2id", "--pbkdf-memory", "1024", "--pbkdf-parallel", "1", "--pbkdf-force-iterations", "4"}
	argon2i  = []string{"--pbkdf", "argon2i", "--pbkdf-memory", "2048", "--pbkdf-parallel", "2", "--pbkdf-force-iterations", "5"}
	pbkdf256 = []string{"--pbkdf", "pbkdf2", "--hash", "sha256", "--pbkdf-force-iterations", "1000"}
	pbkdf512 = []string{"--pbkdf", "pbkdf2", "--hash", "sha512", "--pbkdf-force-iterations", "1001"}
	pbkdf1   = []string{"--pbkdf", "pbkdf2", "--hash", "sha1", "--pbkdf-force-iterations", "1002"}
)

// makeContainer has cryptsetup write a LUKS2 container with the given keyslots (the first one
// made by luksFormat with its options and the data sector size; the others added) and returns
// its path and the volume key cryptsetup reports.
func makeContainer(t testing.TB, sector string, slots ...slotSpec) (string, []byte) {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "c.img")
	if err := os.WriteFile(img, make([]byte, 20<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"luksFormat", "--type", "luks2", "--cipher", Cipher, "--key-size", "512",
		"--sector-size", sector, "--key-file=-"}, slots[0].kdf...)
	if out, err := cryptsetup(t, slots[0].pass, append(args, img)...); err != nil {
		t.Fatalf("luksFormat: %v\n%s", err, out)
	}
	for _, s := range slots[1:] {
		newKey := filepath.Join(dir, "new")
		if err := os.WriteFile(newKey, []byte(s.pass), 0o600); err != nil {
			t.Fatal(err)
		}
		args := append([]string{"luksAddKey", "--key-file=-"}, s.kdf...)
		if out, err := cryptsetup(t, slots[0].pass, append(args, img, newKey)...); err != nil {
			t.Fatalf("luksAddKey: %v\n%s", err, out)
		}
	}
	out, err := cryptsetup(t, slots[0].pass, "luksDump", "--dump-volume-key", "--key-file=-", img)
	if err != nil {
		t.Fatalf("luksDump --dump-volume-key: %v\n%s", err, out)
	}
	_, dump, ok := strings.Cut(out, "MK dump:")
	if !ok {
		t.Fatalf("no MK dump in:\n%s", out)
	}
	key, err := hex.DecodeString(strings.Join(strings.Fields(dump), ""))
	if err != nil || len(key) != KeySize {
		t.Fatalf("MK dump %q: %v", dump, err)
	}
	return img, key
}

func openFile(t testing.TB, path string, lim Limits) (*Container, error) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return Open(bytes.NewReader(b), int64(len(b)), lim)
}

// TestUnsealMatchesCryptsetup opens containers cryptsetup wrote with every KDF, several
// keyslots and both sector sizes: every passphrase gives cryptsetup's volume key, a wrong one
// none.
func TestUnsealMatchesCryptsetup(t *testing.T) {
	for _, c := range []struct {
		name   string
		sector string
		slots  []slotSpec
	}{
		{"argon2id", "4096", []slotSpec{{"first secret", argon2id}}},
		{"argon2i-512", "512", []slotSpec{{"first secret", argon2i}}},
		{"pbkdf2-sha256", "4096", []slotSpec{{"first secret", pbkdf256}}},
		{"three-slots", "4096", []slotSpec{{"first secret", argon2id}, {"second secret", pbkdf512}, {"third secret", argon2i}}},
		{"sha1-slots", "512", []slotSpec{{"first secret", pbkdf1}, {"second secret", argon2id}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			img, want := makeContainer(t, c.sector, c.slots...)
			ct, err := openFile(t, img, cheap)
			if err != nil {
				t.Fatal(err)
			}
			if len(ct.Header.Keyslots) != len(c.slots) || len(ct.Header.Notes) != 0 || len(ct.Damaged()) != 0 {
				t.Errorf("header %+v, damaged %v", ct.Header, ct.Damaged())
			}
			if ct.Header.Segment.SectorSize != map[string]uint64{"512": 512, "4096": 4096}[c.sector] || ct.Header.Segment.Size != 0 {
				t.Errorf("segment %+v", ct.Header.Segment)
			}
			for i, s := range c.slots {
				key, slot, err := ct.Unseal([]byte(s.pass))
				if err != nil {
					t.Fatalf("passphrase of keyslot %d: %v", i, err)
				}
				if !bytes.Equal(key, want) {
					t.Errorf("keyslot %d: volume key differs from cryptsetup's", i)
				}
				if slot.ID != i || slot.KDF.Type != s.kdf[1] {
					t.Errorf("opened keyslot %+v, want %d (%s)", slot, i, s.kdf[1])
				}
			}
			if _, _, err := ct.Unseal([]byte("not a secret")); !errors.Is(err, ErrWrongPassphrase) {
				t.Errorf("wrong passphrase: %v", err)
			}
		})
	}
}

// damage overwrites n bytes at off of the file with b.
func damage(t testing.TB, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// testPassphrase asks cryptsetup whether pass opens the container.
func testPassphrase(t *testing.T, img, pass string) error {
	_, err := cryptsetup(t, pass, "open", "--test-passphrase", "--key-file=-", img)
	return err
}

// TestDamagedHeaderCopy: with one header copy damaged, the other is used and the damage is
// named, as cryptsetup does; with both damaged the container is ErrDamaged, not "not LUKS".
func TestDamagedHeaderCopy(t *testing.T) {
	img, want := makeContainer(t, "4096", slotSpec{"secret", pbkdf256})
	orig, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	hdrSize := int64(binary.BigEndian.Uint64(orig[offHdrSize:]))
	for _, c := range []struct {
		name  string
		off   int64
		b     []byte
		note  string
		using int64
	}{
		{"primary-sector-zeroed", 0, make([]byte, 512), "primary LUKS2 header is damaged", hdrSize},
		{"primary-json-bit", binHeaderSize + 3, []byte{'X'}, "primary LUKS2 header is damaged", hdrSize},
		{"secondary-zeroed", hdrSize, make([]byte, 4096), "secondary LUKS2 header is damaged", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "c.img")
			if err := os.WriteFile(p, orig, 0o600); err != nil {
				t.Fatal(err)
			}
			damage(t, p, c.off, c.b)
			if err := testPassphrase(t, p, "secret"); err != nil {
				t.Fatalf("cryptsetup does not open it either: %v", err)
			}
			ct, err := openFile(t, p, cheap)
			if err != nil {
				t.Fatal(err)
			}
			if ct.Header.Offset != c.using || len(ct.Header.Notes) != 1 || !strings.Contains(ct.Header.Notes[0], c.note) {
				t.Errorf("using the copy at %d with notes %q; want %d and %q", ct.Header.Offset, ct.Header.Notes, c.using, c.note)
			}
			key, _, err := ct.Unseal([]byte("secret"))
			if err != nil || !bytes.Equal(key, want) {
				t.Errorf("unseal: %v (key matches: %v)", err, bytes.Equal(key, want))
			}
		})
	}
	t.Run("both", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "c.img")
		if err := os.WriteFile(p, orig, 0o600); err != nil {
			t.Fatal(err)
		}
		damage(t, p, binHeaderSize+3, []byte{'X'})
		damage(t, p, hdrSize+binHeaderSize+3, []byte{'X'})
		if _, err := openFile(t, p, cheap); !errors.Is(err, ErrDamaged) || errors.Is(err, ErrNotLUKS) {
			t.Errorf("both copies damaged: %v, want ErrDamaged", err)
		}
	})
	t.Run("zeros", func(t *testing.T) {
		if _, err := Open(bytes.NewReader(make([]byte, 8<<20)), 8<<20, cheap); !errors.Is(err, ErrNotLUKS) || !strings.Contains(err.Error(), "never formatted") {
			t.Errorf("zeros: %v", err)
		}
	})
}

// TestDamagedKeyslot: a keyslot whose key material was destroyed is reported as damage; the
// other keyslots still open; with no intact keyslot Open says so before any passphrase.
func TestDamagedKeyslot(t *testing.T) {
	img, want := makeContainer(t, "4096", slotSpec{"first", pbkdf256}, slotSpec{"second", pbkdf512})
	ct, err := openFile(t, img, cheap)
	if err != nil {
		t.Fatal(err)
	}
	area0, area1 := ct.Header.Keyslots[0].AreaOffset, ct.Header.Keyslots[1].AreaOffset
	damage(t, img, int64(area0)+4096, make([]byte, 512))
	if err := testPassphrase(t, img, "first"); err == nil {
		t.Fatal("cryptsetup still opens the damaged keyslot: the damage missed it")
	}
	ct, err = openFile(t, img, cheap)
	if err != nil {
		t.Fatal(err)
	}
	if d := ct.Damaged(); len(d) != 1 || d[0] != 0 || !strings.Contains(ct.DamageReport(), "keyslot 0: its key material is destroyed") {
		t.Errorf("damaged %v: %s", d, ct.DamageReport())
	}
	if key, _, err := ct.Unseal([]byte("second")); err != nil || !bytes.Equal(key, want) {
		t.Errorf("the intact keyslot: %v", err)
	}
	if _, _, err := ct.Unseal([]byte("first")); !errors.Is(err, ErrWrongPassphrase) {
		t.Errorf("the damaged keyslot's passphrase: %v", err)
	}
	damage(t, img, int64(area1), bytes.Repeat([]byte{0xff}, 512))
	_, err = openFile(t, img, cheap)
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "keyslot 1") {
		t.Errorf("every keyslot damaged: %v", err)
	}
}

// TestReadHeaderRefuses: metadata bay0 cannot or must not open is refused with its reason.
func TestReadHeaderRefuses(t *testing.T) {
	hdr := seedHeader(t)
	js := string(jsonOf(hdr))
	for _, c := range []struct{ name, from, to, msg string }{
		{"memory over the limit", `"memory":1024`, `"memory":1048576`, "limits"},
		{"passes over the limit", `"time":4`, `"time":50`, "limits"},
		{"other cipher", `"encryption":"aes-xts-plain64","sector_size"`, `"encryption":"serpent-xts-plain64","sector_size"`, "segment"},
		{"requirements", `"config":{`, `"config":{"requirements":{"mandatory":["online-reencrypt-v2"]},`, "requirements"},
		{"short key", `"key_size":64,"af"`, `"key_size":32,"af"`, "key"},
		{"too many stripes", `"stripes":4000`, `"stripes":4001`, "splitter"},
		{"digest cost", `"iterations":1000`, `"iterations":1000000`, "digest"},
		{"digest names no slot", `"keyslots":["0"]`, `"keyslots":["7"]`, "does not exist"},
	} {
		if !strings.Contains(js, c.from) {
			t.Fatalf("%s: seed JSON lacks %q:\n%s", c.name, c.from, js)
		}
		bad := withJSON(hdr, []byte(strings.Replace(js, c.from, c.to, 1)))
		if _, err := ReadHeader(bytes.NewReader(bad), cheap); err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: ReadHeader = %v, want an error mentioning %q", c.name, err, c.msg)
		}
	}
}

var seed struct {
	once sync.Once
	hdr  []byte
}

// seedHeader is the primary header and keyslot area (8 MiB) of a cheap argon2id container
// with a pbkdf2 digest of 1000 iterations, made once by cryptsetup.
func seedHeader(t testing.TB) []byte {
	seed.once.Do(func() {
		img, _ := makeContainer(t, "4096", slotSpec{"secret", argon2id})
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		// A fixed digest cost, so that the tests can name it.
		js := string(jsonOf(b))
		i := strings.Index(js, `"digests"`)
		j := strings.Index(js[i:], `"iterations":`) + i + len(`"iterations":`)
		k := strings.IndexAny(js[j:], ",}") + j
		if js[j:k] != "1000" {
			t.Logf("digest iterations %s: the seed keeps them", js[j:k])
		}
		seed.hdr = b[:8<<20]
	})
	if seed.hdr == nil {
		t.Fatal("no seed header")
	}
	return seed.hdr
}

// withJSON returns a copy of hdr (primary copy only: the secondary is zeroed) whose metadata
// is js, with a valid checksum, so that fuzzing reaches the JSON checks.
func withJSON(hdr, js []byte) []byte {
	out := append([]byte(nil), hdr...)
	size := int(binary.BigEndian.Uint64(out[offHdrSize:]))
	clear(out[size : 2*size])
	area := out[binHeaderSize:size]
	clear(area)
	copy(area[:len(area)-1], js)
	clear(out[offCsum : offCsum+64])
	sum := sha256.Sum256(out[:size])
	copy(out[offCsum:], sum[:])
	return out
}

func jsonOf(hdr []byte) []byte {
	js := hdr[binHeaderSize:binary.BigEndian.Uint64(hdr[offHdrSize:])]
	return js[:bytes.IndexByte(js, 0)]
}

// FuzzReadHeader gives arbitrary metadata (with a correct checksum): never a panic, and
// whatever is accepted stays within the limits.
func FuzzReadHeader(f *testing.F) {
	hdr := seedHeader(f)
	f.Add(jsonOf(hdr))
	f.Add([]byte(`{"keyslots":{},"segments":{},"digests":{},"config":{}}`))
	f.Fuzz(func(t *testing.T, js []byte) {
		h, err := ReadHeader(bytes.NewReader(withJSON(hdr, js)), cheap)
		if err != nil {
			return
		}
		for _, k := range h.Keyslots {
			if k.KDF.MemoryKiB > cheap.MemoryKiB || k.KDF.Iterations > max(cheap.Passes, cheap.Iterations) {
				t.Fatalf("accepted %+v beyond %+v", k, cheap)
			}
		}
	})
}

// FuzzUnseal opens a real container whose metadata is fuzzed: a crafted partition ends in an
// error, never a panic or a runaway derivation in PID 1.
func FuzzUnseal(f *testing.F) {
	hdr := seedHeader(f)
	f.Add(jsonOf(hdr), []byte("secret"))
	f.Fuzz(func(t *testing.T, js, pass []byte) {
		b := withJSON(hdr, js)
		c, err := Open(bytes.NewReader(b), int64(len(b))+16<<20, cheap)
		if err != nil {
			return
		}
		if key, _, err := c.Unseal(pass); err == nil && len(key) != KeySize {
			t.Fatalf("a %d-byte key", len(key))
		}
	})
}

// FuzzAFMerge checks the merge against its definition on one stripe (the key itself) and that
// any input gives a key of the right length.
func FuzzAFMerge(f *testing.F) {
	f.Add(bytes.Repeat([]byte{1}, 3*KeySize), uint8(3))
	f.Fuzz(func(t *testing.T, split []byte, stripes uint8) {
		n := int(stripes%8) + 1
		if len(split) < n*KeySize {
			return
		}
		key, err := afMerge(split[:n*KeySize], KeySize, n, "sha256")
		if err != nil || len(key) != KeySize {
			t.Fatalf("afMerge: %v", err)
		}
		if n == 1 && !bytes.Equal(key, split[:KeySize]) {
			t.Fatal("one stripe is the key itself")
		}
	})
}
