package verity

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// These tests compare Build with the reference implementation, veritysetup
// from cryptsetup, which formats plain files without device-mapper.

var (
	testSalt = mustHex("00112233445566778899aabbccddeeff0102030405060708090a0b0c0d0e0f10")
	testUUID = [16]byte{0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0x4d, 0xef, 0x80, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07}
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func uuidString(u [16]byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

func veritysetup(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("veritysetup")
	if err != nil {
		t.Fatalf("veritysetup not found (install the Debian package cryptsetup-bin): %v", err)
	}
	return path
}

// randomData returns n bytes of deterministic pseudo-random data.
func randomData(n int, seed uint64) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 's', 'p', 'i', 'n', 'e'}).Read(b)
	return b
}

// format runs `veritysetup format` and returns the hash file and the root hash it printed.
func format(t *testing.T, dataPath string, p Params) (hashArea, root []byte) {
	t.Helper()
	hashPath := dataPath + ".hash"
	salt := hex.EncodeToString(p.Salt)
	if salt == "" {
		salt = "-"
	}
	cmd := exec.Command(veritysetup(t), "format",
		"--data-block-size", fmt.Sprint(p.DataBlockSize),
		"--hash-block-size", fmt.Sprint(p.HashBlockSize),
		"--data-blocks", fmt.Sprint(p.DataBlocks),
		"--hash", p.Algorithm,
		"--salt", salt,
		"--uuid", uuidString(p.UUID),
		dataPath, hashPath)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, out)
	}
	for line := range strings.Lines(string(out)) {
		if v, ok := strings.CutPrefix(line, "Root hash:"); ok {
			root = mustHex(strings.TrimSpace(v))
		}
	}
	if root == nil {
		t.Fatalf("no root hash in veritysetup output:\n%s", out)
	}
	hashArea, err = os.ReadFile(hashPath)
	if err != nil {
		t.Fatal(err)
	}
	return hashArea, root
}

// firstDiff describes where a and b first differ, for failure messages.
func firstDiff(a, b []byte) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("first difference at byte %d (block %d of 4096): %02x vs %02x", i, i/4096, a[i], b[i])
		}
	}
	return fmt.Sprintf("lengths %d and %d", len(a), len(b))
}

func TestBuildMatchesVeritysetup(t *testing.T) {
	const kib4 = 4096
	cases := []struct {
		name     string
		blocks   uint64
		dbs, hbs uint32
		salt     []byte
	}{
		{"1 block", 1, kib4, kib4, testSalt},
		{"2 blocks", 2, kib4, kib4, testSalt},
		{"127 blocks", 127, kib4, kib4, testSalt},
		{"128 blocks", 128, kib4, kib4, testSalt},
		{"129 blocks", 129, kib4, kib4, testSalt},
		{"3 MiB plus a block", 3*256 + 1, kib4, kib4, testSalt},
		{"no salt", 300, kib4, kib4, nil},
		{"256-byte salt", 300, kib4, kib4, randomData(MaxSaltSize, 9)},
		{"512-byte blocks, 3 levels", 300, 512, 512, testSalt},
		{"data 4096, hash 1024", 1000, kib4, 1024, testSalt},
		// 128*128 blocks fit two levels; one more needs a third.
		{"3 levels", 128*128 + 1, kib4, kib4, testSalt},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := Params{Algorithm: "sha256", DataBlockSize: c.dbs, HashBlockSize: c.hbs, DataBlocks: c.blocks, Salt: c.salt, UUID: testUUID}
			data := randomData(int(c.blocks)*int(c.dbs), c.blocks)
			dataPath := filepath.Join(t.TempDir(), "data")
			if err := os.WriteFile(dataPath, data, 0o600); err != nil {
				t.Fatal(err)
			}
			wantArea, wantRoot := format(t, dataPath, p)

			f, err := os.Open(dataPath)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			area, root, err := Build(f, p, 0)
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			if !bytes.Equal(area, wantArea) {
				t.Errorf("hash area (%d bytes) differs from veritysetup's (%d bytes): %s", len(area), len(wantArea), firstDiff(area, wantArea))
			}
			if got := HashAreaSize(p); got != int64(len(wantArea)) {
				t.Errorf("HashAreaSize = %d, veritysetup wrote %d", got, len(wantArea))
			}
			if !bytes.Equal(root, wantRoot) {
				t.Errorf("root = %x, veritysetup says %x", root, wantRoot)
			}
			if err := Verify(f, bytes.NewReader(wantArea), p, wantRoot, 0); err != nil {
				t.Errorf("Verify of veritysetup's hash area: %v", err)
			}
		})
	}
}

func TestVeritysetupVerifiesOurHashArea(t *testing.T) {
	for _, blocks := range []uint64{1, 129, 128*128 + 1} {
		t.Run(fmt.Sprint(blocks), func(t *testing.T) {
			p := Params{Algorithm: "sha256", DataBlockSize: 4096, HashBlockSize: 4096, DataBlocks: blocks, Salt: testSalt, UUID: testUUID}
			dir := t.TempDir()
			data := randomData(int(blocks)*4096, blocks+1000)
			dataPath, hashPath := filepath.Join(dir, "data"), filepath.Join(dir, "hash")
			if err := os.WriteFile(dataPath, data, 0o600); err != nil {
				t.Fatal(err)
			}
			area, root, err := Build(bytes.NewReader(data), p, 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(hashPath, area, 0o600); err != nil {
				t.Fatal(err)
			}
			verify := func() error {
				out, err := exec.Command(veritysetup(t), "verify", dataPath, hashPath, hex.EncodeToString(root)).CombinedOutput()
				if err != nil {
					return fmt.Errorf("%w: %s", err, out)
				}
				return nil
			}
			if err := verify(); err != nil {
				t.Fatalf("veritysetup verify rejects our hash area: %v", err)
			}
			// And it does reject a damaged one, so the check above means something.
			data[len(data)-1] ^= 1
			if err := os.WriteFile(dataPath, data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := verify(); err == nil {
				t.Fatal("veritysetup verify accepts damaged data")
			}
		})
	}
}
