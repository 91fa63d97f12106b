package persistfmt

import (
	"bytes"
	"context"
	"crypto/aes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/xts"

	"alpinespine.org/spine/internal/bay0/persist"
)

const testPass = "correct horse battery staple"

// testLimits let TestKDF through and keep a fuzzed header cheap.
var testLimits = persist.Limits{MemoryKiB: 8 << 10, Passes: 8, Iterations: 2000}

// formatted is one container made with TestKDF, shared by the tests that only read it.
var formatted struct {
	once sync.Once
	path string
	err  error
}

func formattedImage(t *testing.T) string { return formattedImageF(t) }

func formattedImageF(t testing.TB) string {
	t.Helper()
	formatted.once.Do(func() {
		dir, err := os.MkdirTemp("", "persist-test-")
		if err != nil {
			formatted.err = err
			return
		}
		formatted.path = filepath.Join(dir, "persist.img")
		formatted.err = Format(context.Background(), formatted.path, MinSize, []byte(testPass), TestKDF())
	})
	if formatted.err != nil {
		t.Fatalf("Format: %v", formatted.err)
	}
	return formatted.path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if formatted.path != "" {
		os.RemoveAll(filepath.Dir(formatted.path))
	}
	os.Exit(code)
}

// cryptsetup runs the reference tool; a missing tool fails the test with the package name.
func cryptsetup(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("cryptsetup"); err != nil {
		t.Fatalf("cryptsetup is missing (install the Debian package cryptsetup-bin): %v", err)
	}
	cmd := exec.Command("cryptsetup", args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestFormatLuksDump(t *testing.T) {
	img := formattedImage(t)
	st, err := os.Stat(img)
	if err != nil || st.Size() != MinSize {
		t.Fatalf("image size: %v, %v", st, err)
	}
	dump, err := cryptsetup(t, "", "luksDump", img)
	if err != nil {
		t.Fatalf("luksDump: %v\n%s", err, dump)
	}
	for _, re := range []string{
		`(?m)^Version:\s+2$`,
		`(?m)^Label:\s+persist$`,
		`(?m)^\s+offset: 8388608 \[bytes\]$`,
		`(?m)^\s+length: \(whole device\)$`,
		`(?m)^\s+cipher: aes-xts-plain64$`,
		`(?m)^\s+sector: 4096 \[bytes\]$`,
		`(?m)^\s+PBKDF:\s+argon2id$`,
		`(?m)^\s+Time cost:\s+4$`,
		`(?m)^\s+Memory:\s+8192$`,
		`(?m)^\s+Threads:\s+1$`,
		`(?m)^\s+Key:\s+512 bits$`,
	} {
		if !regexp.MustCompile(re).MatchString(dump) {
			t.Errorf("luksDump does not match %s:\n%s", re, dump)
		}
	}
	if n := strings.Count(dump, ": luks2"); n != 1 {
		t.Errorf("%d keyslots, want 1", n)
	}
}

func TestFormatTestPassphrase(t *testing.T) {
	img := formattedImage(t)
	if out, err := cryptsetup(t, testPass, "open", "--test-passphrase", "--disable-locks", "--key-file=-", img); err != nil {
		t.Errorf("the right passphrase does not open the container: %v\n%s", err, out)
	}
	for _, wrong := range []string{testPass + "\n", "correct horse battery stapl", "x"} {
		out, err := cryptsetup(t, wrong, "open", "--test-passphrase", "--disable-locks", "--key-file=-", img)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("passphrase %q: %v (want exit status 2, no key available)\n%s", wrong, err, out)
		}
	}
}

// TestFormatNoPlaintext checks that nothing of the ext4 filesystem is left in the clear.
func TestFormatNoPlaintext(t *testing.T) {
	b, err := os.ReadFile(formattedImage(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"lost+found", "/persist"} {
		if bytes.Contains(b, []byte(s)) {
			t.Errorf("the container holds %q in the clear", s)
		}
	}
	// The ext4 magic sits at byte 56 of the superblock, 1024 bytes into the filesystem.
	for off := 0; off+4096 <= len(b); off += 4096 {
		if binary.LittleEndian.Uint16(b[off+1024+56:]) == 0xef53 && binary.LittleEndian.Uint32(b[off+1024+24:]) == 2 {
			t.Errorf("an ext4 superblock in the clear at %d", off)
		}
	}
}

// TestUnsealDecryptsExt4 unseals the container with bay0's unlock path and decrypts the first sector of
// the data segment as dm-crypt will: it must be the start of the ext4 filesystem.
func TestUnsealDecryptsExt4(t *testing.T) {
	c, err := persist.Open(formattedImage(t), testLimits)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Unseal([]byte("wrong")); !errors.Is(err, persist.ErrWrongPassphrase) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	v, err := c.Unseal([]byte(testPass))
	if err != nil {
		t.Fatal(err)
	}
	if v.Offset != ReduceSize/2 || v.Length != MinSize-ReduceSize/2 || v.SectorSize != SectorSize || v.Cipher != Cipher || v.IVTweak != 0 || v.UUID == "" {
		t.Errorf("volume %+v", *v)
	}
	f, err := os.Open(v.Device)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sector := make([]byte, SectorSize)
	if _, err := f.ReadAt(sector, int64(v.Offset)); err != nil {
		t.Fatal(err)
	}
	ciph, err := xts.NewCipher(aes.NewCipher, v.Key)
	if err != nil {
		t.Fatal(err)
	}
	ciph.Decrypt(sector, sector, 0) // plain64 IV of the first sector: 0
	if magic := binary.LittleEndian.Uint16(sector[1024+56:]); magic != 0xef53 {
		t.Errorf("decrypted first sector has no ext4 magic (%#x): wrong key or layout", magic)
	}
	if label := string(bytes.TrimRight(sector[1024+120:1024+136], "\x00")); label != persist.Partition {
		t.Errorf("ext4 label %q, want %q", label, persist.Partition)
	}
	checkExt4(t, f, v.Offset, v.Length, ciph)
	key := v.Key
	v.Wipe()
	if !bytes.Equal(key, make([]byte, len(key))) || v.Key != nil {
		t.Error("Wipe left the volume key")
	}
}

// TestVolumeKeyMatchesCryptsetup: bay0 unseals the volume key cryptsetup dumps from what
// Format wrote.
func TestVolumeKeyMatchesCryptsetup(t *testing.T) {
	img := formattedImage(t)
	out, err := cryptsetup(t, testPass, "luksDump", "--dump-volume-key", "--batch-mode", "--key-file=-", img)
	if err != nil {
		t.Fatalf("luksDump --dump-volume-key: %v\n%s", err, out)
	}
	_, dump, ok := strings.Cut(out, "MK dump:")
	if !ok {
		t.Fatalf("no MK dump in:\n%s", out)
	}
	want, err := hex.DecodeString(strings.Join(strings.Fields(dump), ""))
	if err != nil {
		t.Fatal(err)
	}
	c, err := persist.Open(img, testLimits)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	v, err := c.Unseal([]byte(testPass))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(v.Key, want) {
		t.Errorf("volume key differs from cryptsetup's")
	}
}

func TestFormatRefuses(t *testing.T) {
	out := filepath.Join(t.TempDir(), "p.img")
	ctx := context.Background()
	for name, err := range map[string]error{
		"small":      Format(ctx, out, MinSize-SectorSize, []byte(testPass), TestKDF()),
		"unaligned":  Format(ctx, out, MinSize+1, []byte(testPass), TestKDF()),
		"empty pass": Format(ctx, out, MinSize, nil, TestKDF()),
		"bad kdf":    Format(ctx, out, MinSize, []byte(testPass), KDF{Type: "md5"}),
	} {
		if err == nil {
			t.Errorf("%s: Format accepted it", name)
		}
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused Format left %s: %v", out, err)
	}
}

func TestKDFArgs(t *testing.T) {
	for _, c := range []struct {
		k    KDF
		want string // "" means an error
	}{
		{DefaultKDF(), "--pbkdf argon2id --pbkdf-memory 131072 --pbkdf-parallel 1 --pbkdf-force-iterations 4"},
		{TestKDF(), "--pbkdf argon2id --pbkdf-memory 8192 --pbkdf-parallel 1 --pbkdf-force-iterations 4"},
		{KDF{Type: KDFArgon2i, MemoryKiB: 65536, Parallel: 2, IterTime: 1500e6}, "--pbkdf argon2i --pbkdf-memory 65536 --pbkdf-parallel 2 --iter-time 1500"},
		{KDF{Type: KDFPBKDF2, Iterations: 100000}, "--pbkdf pbkdf2 --hash sha256 --pbkdf-force-iterations 100000"},
		{KDF{Type: KDFPBKDF2, Iterations: 10}, ""},
		{KDF{Type: KDFArgon2id, MemoryKiB: 8192, Parallel: 1, Iterations: 1}, ""},
		{KDF{Type: KDFArgon2id, MemoryKiB: 16, Parallel: 1, Iterations: 4}, ""},
		{KDF{Type: KDFArgon2id, MemoryKiB: 8192, Parallel: 0, Iterations: 4}, ""},
		{KDF{Type: KDFArgon2id, MemoryKiB: 8192, Parallel: 1}, ""},
		{KDF{Type: "scrypt"}, ""},
		{KDF{}, ""},
	} {
		a, err := c.k.args()
		got := strings.Join(a, " ")
		if c.want == "" && err == nil || c.want != "" && got != c.want {
			t.Errorf("%+v: args %q, %v; want %q", c.k, got, err, c.want)
		}
	}
}

// checkExt4 decrypts the whole data segment as dm-crypt would and has e2fsprogs check the
// filesystem: consistent, with project quotas, 256-byte inodes and bay0's reserve.
func checkExt4(t *testing.T, f *os.File, off, length uint64, ciph *xts.Cipher) {
	t.Helper()
	plain := make([]byte, length)
	if _, err := f.ReadAt(plain, int64(off)); err != nil {
		t.Fatal(err)
	}
	for i := uint64(0); i < length/SectorSize; i++ {
		s := plain[i*SectorSize : (i+1)*SectorSize]
		// plain64 IVs count 512-byte sectors, whatever the encryption sector size.
		ciph.Decrypt(s, s, i*SectorSize/512)
	}
	fs := filepath.Join(t.TempDir(), "ext4.img")
	if err := os.WriteFile(fs, plain, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("e2fsck", "-fn", fs).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn (Debian package e2fsprogs): %v\n%s", err, out)
	}
	out, err := exec.Command("dumpe2fs", "-h", fs).CombinedOutput()
	if err != nil {
		t.Fatalf("dumpe2fs -h: %v\n%s", err, out)
	}
	dump := string(out)
	for _, re := range []string{
		`(?m)^Filesystem features:.* quota( |$)`,
		`(?m)^Filesystem features:.* project( |$)`,
		`(?m)^Inode size:\s+256$`,
		`(?m)^Project quota inode:\s+\d+$`,
		`(?m)^Reserved blocks uid:\s+0 `,
	} {
		if !regexp.MustCompile(re).MatchString(dump) {
			t.Errorf("dumpe2fs does not match %s:\n%s", re, dump)
		}
	}
	m := regexp.MustCompile(`(?m)^Reserved block count:\s+(\d+)$`).FindStringSubmatch(dump)
	if m == nil {
		t.Fatalf("no reserved block count:\n%s", dump)
	}
	if n, _ := strconv.Atoi(m[1]); n*SectorSize < ReserveMin {
		t.Errorf("%d reserved blocks, want at least %d bytes for bay0", n, ReserveMin)
	}
}
