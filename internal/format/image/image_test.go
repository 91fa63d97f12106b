package image

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"alpinespine.org/spine/internal/format/keys"
	"alpinespine.org/spine/internal/format/manifest"
	"alpinespine.org/spine/internal/format/verity"
	"alpinespine.org/spine/internal/host/squashfs"
)

// testKey is fixed so that the fuzz seeds in testdata stay signed by the key the fuzzer trusts.
func testKey() ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
}

func testPub() []ed25519.PublicKey {
	return []ed25519.PublicKey{testKey().Public().(ed25519.PublicKey)}
}

// pseudoRandom is incompressible, reproducible filler: a sha256 chain.
func pseudoRandom(n int) []byte {
	out := make([]byte, 0, n+sha256.Size)
	s := sha256.Sum256([]byte("spine image test"))
	for len(out) < n {
		out = append(out, s[:]...)
		s = sha256.Sum256(s[:])
	}
	return out[:n]
}

// makeImage assembles a signed image from a SquashFS holding payload incompressible bytes:
// 0 gives a one-block filesystem (a tree without levels), 1 MiB gives a two-level tree.
func makeImage(tb testing.TB, payload int) (string, manifest.Manifest) {
	tb.Helper()
	dir := tb.TempDir()
	tree := filepath.Join(dir, "tree")
	if err := os.MkdirAll(filepath.Join(tree, "bin"), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "bin/bay0"), pseudoRandom(payload), 0o755); err != nil {
		tb.Fatal(err)
	}
	sq := filepath.Join(dir, "root.squashfs")
	if err := squashfs.Make(context.Background(), tree, sq, 1700000000); err != nil {
		tb.Fatalf("%v (apt-get install squashfs-tools)", err)
	}
	out := filepath.Join(dir, "spine.img")
	m, err := Assemble(out, sq, Assembly{
		Manifest: manifest.Manifest{Format: manifest.FormatVersion, Name: "test", Version: 3,
			Constitution: manifest.Constitution, Kernel: "6.1.0-test", BuildTime: 1700000000, Personas: []string{"app"}},
		Key:     testKey(),
		Salt:    []byte("0123456789abcdef0123456789abcdef"),
		UUID:    [16]byte{1, 2, 3, 4, 5, 6, 0x47, 8, 0x89, 10, 11, 12, 13, 14, 15, 16},
		Workers: 1,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out, m
}

func readFile(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func check(b []byte, trusted []ed25519.PublicKey) (manifest.Manifest, error) {
	return Check(bytes.NewReader(b), int64(len(b)), trusted, 1)
}

func TestAssembleLayout(t *testing.T) {
	p, m := makeImage(t, 1<<20)
	b := readFile(t, p)
	got, err := CheckFile(p, testPub(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if got.RootHash != m.RootHash || got.Name != "test" || got.Version != 3 {
		t.Errorf("CheckFile manifest %+v, Assemble returned %+v", got, m)
	}
	im, f, err := OpenFile(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ft := im.Footer
	if ft.ImageSize != uint64(len(b)) || ft.DataSize != m.DataBlocks*4096 || ft.HashOffset != m.HashOffset || ft.HashSize != m.HashSize {
		t.Errorf("footer %+v disagrees with manifest %+v (image %d bytes)", ft, m, len(b))
	}
	if m.HashSize != uint64(verity.HashAreaSize(VerityParams(m))) || m.DataBlocks < 256 {
		t.Errorf("hash size %d for %d blocks", m.HashSize, m.DataBlocks)
	}
	// The parts are where the footer says, and the signature is over the exact bytes.
	mb := b[ft.ManifestOffset : ft.ManifestOffset+uint64(ft.ManifestSize)]
	if !bytes.Equal(mb, im.ManifestBytes) {
		t.Error("ManifestBytes are not the bytes at the manifest offset")
	}
	if canon, _ := m.Marshal(); !bytes.Equal(canon, mb) {
		t.Errorf("manifest in the image is not canonical: %s", mb)
	}
	if !ed25519.Verify(testPub()[0], mb, im.Signature) {
		t.Error("signature does not verify with plain ed25519")
	}
	// The SquashFS is the data area's start; the padding after it is zero.
	sq, err := squashfs.List(context.Background(), p)
	if err != nil || len(sq) != 3 {
		t.Errorf("unsquashfs of the image: %v %v", sq, err)
	}
	hashArea, root, err := verity.Build(bytes.NewReader(b[:ft.DataSize]), VerityParams(m), 1)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(hashArea, b[ft.HashOffset:ft.HashOffset+ft.HashSize]) || !bytes.Equal(root, m.RootHashBytes()) {
		t.Error("hash area or root hash differs from an independent verity.Build")
	}
	if mm, err := im.Manifest(); err != nil || mm.RootHash != m.RootHash {
		t.Errorf("Manifest() = %+v, %v", mm, err)
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o644 {
		t.Errorf("image mode %v", st.Mode())
	}
}

func TestAssembleReproducible(t *testing.T) {
	a, _ := makeImage(t, 5000)
	b, _ := makeImage(t, 5000)
	if !bytes.Equal(readFile(t, a), readFile(t, b)) {
		t.Error("same inputs, different images")
	}
}

func TestAssembleLeavesNothingOnFailure(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.squashfs")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out", "spine.img")
	os.Mkdir(filepath.Dir(out), 0o755)
	bad := manifest.Manifest{Format: 1, Name: "x", Version: 1, Constitution: "0.1"}
	for name, a := range map[string]struct {
		sq string
		m  manifest.Manifest
	}{
		"empty squashfs": {empty, bad},
		"missing":        {filepath.Join(dir, "missing"), bad},
		"bad manifest":   {empty + ".x", manifest.Manifest{Name: "Bad Name"}},
	} {
		if name == "bad manifest" {
			os.WriteFile(a.sq, []byte("some bytes"), 0o644)
		}
		if _, err := Assemble(out, a.sq, Assembly{Manifest: a.m, Key: testKey(), Salt: []byte{1}}); err == nil {
			t.Errorf("%s: Assemble succeeded", name)
		}
		if ents, _ := os.ReadDir(filepath.Dir(out)); len(ents) != 0 {
			t.Errorf("%s: left %v behind", name, ents)
		}
	}
}

// TestTamper damages an image in every part and checks that it is refused with an error
// naming what is wrong.
func TestTamper(t *testing.T) {
	p, m := makeImage(t, 1<<20)
	good := readFile(t, p)
	ft := footerOf(t, good)
	flip := func(off uint64) []byte {
		b := bytes.Clone(good)
		b[off] ^= 0x40
		return b
	}
	badOffsets := func(fn func(*Footer)) []byte {
		f := ft
		fn(&f)
		b := bytes.Clone(good)
		copy(b[len(b)-FooterSize:], encode(t, f))
		return b
	}
	other, _, _ := ed25519.GenerateKey(nil)
	leaf0 := ft.HashOffset + 4096*2 // superblock, top block, then the first leaf block
	for _, tc := range []struct {
		name    string
		b       []byte
		trusted []ed25519.PublicKey
		want    string
	}{
		{"data first block", flip(0), nil, "data block 0 "},
		{"data middle", flip(ft.DataSize / 2), nil, "data block"},
		{"data padding", flip(ft.DataSize - 1), nil, "data block"},
		{"hash superblock", flip(ft.HashOffset + 8), nil, "superblock"},
		{"hash top", flip(ft.HashOffset + 4096 + 3), nil, "root hash"},
		{"hash leaf", flip(leaf0 + 100), nil, "hash block"},
		{"hash leaf padding", flip(ft.ManifestOffset - 1), nil, "hash block"},
		{"manifest", flip(ft.ManifestOffset + 20), nil, "trusted key"},
		{"signature", flip(ft.ManifestOffset + uint64(ft.ManifestSize) + 5), nil, "trusted key"},
		{"footer", flip(ft.ImageSize - 40), nil, "footer"},
		{"footer magic", flip(ft.ImageSize - FooterSize), nil, "magic"},
		{"truncated 1", good[:len(good)-1], nil, "footer"},
		{"truncated 4096", good[:len(good)-4096], nil, "footer"},
		{"truncated to nothing", good[:10], nil, "too short"},
		{"trailing garbage", append(bytes.Clone(good), "garbage"...), nil, "footer"},
		{"trailing block", append(bytes.Clone(good), make([]byte, 4096)...), nil, "footer"},
		{"footer repeated", append(bytes.Clone(good), good[len(good)-FooterSize:]...), nil, "trailing data"},
		{"untrusted key", good, []ed25519.PublicKey{other}, "trusted key"},
		{"no key", good, []ed25519.PublicKey{}, "trusted key"},
		{"image size beyond file", badOffsets(func(f *Footer) { f.ImageSize += 4096; f.ManifestOffset += 4096; f.HashSize += 4096 }), nil, "footer"},
		{"manifest beyond file", badOffsets(func(f *Footer) { f.ManifestOffset = 1 << 40 }), nil, "footer"},
		{"hash offset inside data", badOffsets(func(f *Footer) { f.HashOffset -= 4096 }), nil, "footer"},
		{"data smaller", badOffsets(func(f *Footer) { f.DataSize -= 4096; f.HashOffset -= 4096; f.HashSize += 4096 }), nil, "disagrees"},
		{"manifest shorter", badOffsets(func(f *Footer) { f.ManifestSize--; f.SignatureSize++ }), nil, "signature size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			trusted := tc.trusted
			if trusted == nil {
				trusted = testPub()
			}
			_, err := check(tc.b, trusted)
			if err == nil {
				t.Fatal("damaged image accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
	// Rotation: any trusted key will do.
	if got, err := check(good, []ed25519.PublicKey{other, testPub()[0]}); err != nil || got.RootHash != m.RootHash {
		t.Errorf("second of two keys: %v", err)
	}
	if _, err := check(good, testPub()); err != nil {
		t.Errorf("the pristine image no longer verifies: %v", err)
	}
	var ce *verity.CorruptionError
	if _, err := check(flip(0), testPub()); !errors.As(err, &ce) || ce.Area != "data" {
		t.Errorf("data damage is not a verity.CorruptionError: %v", err)
	}
	if _, err := check(good, []ed25519.PublicKey{other}); !errors.Is(err, keys.ErrUntrusted) {
		t.Errorf("untrusted key: %v is not keys.ErrUntrusted", err)
	}
}

// TestSignedLies: a manifest signed by the trusted key that disagrees with the footer or
// with the size of its own tree is refused before a single block is read.
func TestSignedLies(t *testing.T) {
	p, m := makeImage(t, 20000)
	good := readFile(t, p)
	ft := footerOf(t, good)
	resign := func(m manifest.Manifest, f Footer) []byte {
		mb, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		f.ManifestSize = uint32(len(mb))
		f.ImageSize = f.ManifestOffset + uint64(len(mb)) + 64 + FooterSize
		var b []byte
		b = append(b, good[:ft.ManifestOffset]...)
		b = append(b, mb...)
		b = append(b, ed25519.Sign(testKey(), mb)...)
		return append(b, encode(t, f)...)
	}
	if _, err := check(resign(m, ft), testPub()); err != nil {
		t.Fatalf("re-signed pristine manifest refused: %v", err)
	}
	lie := m
	lie.HashSize += 4096
	lie.DataBlocks++
	lie.HashOffset += 4096
	if _, err := check(resign(lie, ft), testPub()); err == nil || !strings.Contains(err.Error(), "disagrees") {
		t.Errorf("manifest disagreeing with the footer: %v", err)
	}
	lie = m
	lie.HashSize += 4096
	f := ft
	f.HashSize += 4096
	f.ManifestOffset += 4096
	b := resign(lie, f)
	b = append(b[:ft.ManifestOffset], append(make([]byte, 4096), b[ft.ManifestOffset:]...)...)
	if _, err := check(b, testPub()); err == nil || !strings.Contains(err.Error(), "hash_size") {
		t.Errorf("hash area larger than the tree: %v", err)
	}
	lie = m
	lie.RootHash = strings.Repeat("00", 32)
	if _, err := check(resign(lie, ft), testPub()); err == nil || !strings.Contains(err.Error(), "root hash") {
		t.Errorf("signed wrong root hash: %v", err)
	}
}

func footerOf(t testing.TB, b []byte) Footer {
	t.Helper()
	f, err := ParseFooter(b[len(b)-FooterSize:])
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestOpenShortReads: a reader that ends early is an error, not a panic or a zeroed part.
func TestOpenShortReads(t *testing.T) {
	p, _ := makeImage(t, 0)
	good := readFile(t, p)
	if _, err := Open(bytes.NewReader(good[:len(good)-FooterSize]), int64(len(good))); err == nil {
		t.Error("Open with a size beyond the data succeeded")
	}
	if _, _, err := OpenFile(filepath.Join(t.TempDir(), "missing.img")); err == nil {
		t.Error("OpenFile of a missing file succeeded")
	}
	if _, err := CheckFile(filepath.Join(t.TempDir(), "missing.img"), testPub(), 1); err == nil {
		t.Error("CheckFile of a missing file succeeded")
	}
	le := binary.LittleEndian
	if le.Uint64(good[len(good)-FooterSize+56:]) != uint64(len(good)) {
		t.Error("footer image size is not the file size")
	}
}

// TestFromParts: an image made from its footer, manifest and signature authenticates like
// the whole file, and refuses (without a panic) to verify data it does not have.
func TestFromParts(t *testing.T) {
	p, m := makeImage(t, 0)
	good := readFile(t, p)
	ft := footerOf(t, good)
	mb := good[ft.ManifestOffset : ft.ManifestOffset+uint64(ft.ManifestSize)]
	sig := good[ft.ManifestOffset+uint64(ft.ManifestSize) : ft.ImageSize-FooterSize]
	im := FromParts(ft, mb, sig)
	got, err := im.Authenticate(testPub())
	if err != nil || got.RootHash != m.RootHash {
		t.Fatalf("Authenticate = %+v, %v", got, err)
	}
	if err := im.VerifyData(got, 1); err == nil {
		t.Error("VerifyData without data succeeded")
	}
	bad := bytes.Clone(sig)
	bad[0] ^= 1
	if _, err := FromParts(ft, mb, bad).Authenticate(testPub()); !errors.Is(err, keys.ErrUntrusted) {
		t.Errorf("damaged signature: %v", err)
	}
}
