package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"alpinespine.org/spine/internal/format/image"
)

func TestVerifyValid(t *testing.T) {
	d := demo(t)
	i := inspect(t, d.img)
	r := mustSpine(t, nil, "verify", "--pub", d.keys.pub, d.img)
	if lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n"); len(lines) != 1 || !strings.Contains(lines[0], i.RootHash) {
		t.Errorf("verify printed %q, want one line with the root hash %s", r.stdout, i.RootHash)
	}
	if r.stderr != "" {
		t.Errorf("verify wrote to stderr: %q", r.stderr)
	}

	// Rotation: valid when any of several keys signed it, in any order.
	other := filepath.Join(t.TempDir(), "other")
	mustSpine(t, nil, "keygen", "--out", other)
	otherPub := filepath.Join(other, "spine.pub")
	mustSpine(t, nil, "verify", "--pub", otherPub, "--pub", d.keys.pub, d.img)
	mustSpine(t, nil, "verify", d.img, "--pub", d.keys.pub, "--pub", otherPub)

	r = spine(t, nil, "verify", "--pub", otherPub, d.img)
	if r.code != 1 || !strings.Contains(r.stderr, "not made by a trusted key") || r.stdout != "" {
		t.Errorf("verify with an untrusted key: %v", r)
	}
	if r := spine(t, nil, "verify", "--pub", d.keys.key, d.img); r.code != 1 || !strings.Contains(r.stderr, "PUBLIC KEY") {
		t.Errorf("verify with a private key as --pub: %v", r)
	}
}

// TestVerifyDamage damages a copy of the demo image in every part: spine verify exits 1 and
// names what is wrong. It must never panic (a panic fails the test binary).
func TestVerifyDamage(t *testing.T) {
	d := demo(t)
	good := read(t, d.img)
	ft, err := image.ParseFooter(good[len(good)-image.FooterSize:])
	if err != nil {
		t.Fatal(err)
	}
	flip := func(off uint64) []byte {
		b := bytes.Clone(good)
		b[off] ^= 0x80
		return b
	}
	withFooter := func(fn func(*image.Footer)) []byte {
		f := ft
		fn(&f)
		enc, err := f.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		b := bytes.Clone(good)
		copy(b[len(b)-image.FooterSize:], enc)
		return b
	}
	sigOff := ft.ManifestOffset + uint64(ft.ManifestSize)
	for _, tc := range []struct {
		name string
		img  []byte
		want string
	}{
		{"data byte", flip(4096*100 + 17), "data block 100 does not match"},
		{"data superblock of squashfs", flip(0), "data block 0 does not match"},
		{"hash tree leaf", flip(ft.HashOffset + 3*4096 + 7), "hash block 1 of level 0"},
		{"hash tree top", flip(ft.HashOffset + 4096 + 1), "root hash"},
		{"verity superblock", flip(ft.HashOffset + 100), "superblock"},
		{"manifest", flip(ft.ManifestOffset + 10), "signature is not made by a trusted key"},
		{"signature", flip(sigOff + 63), "signature is not made by a trusted key"},
		{"footer", flip(ft.ImageSize - 30), "footer: checksum"},
		{"footer magic", flip(ft.ImageSize - image.FooterSize), "footer: no SPINEIMG magic"},
		{"truncated by 1", good[:len(good)-1], "footer: no SPINEIMG magic"},
		{"truncated by 4096", good[:len(good)-4096], "footer: no SPINEIMG magic"},
		{"trailing garbage", append(bytes.Clone(good), "garbage\n"...), "footer: no SPINEIMG magic"},
		{"trailing copy of the footer", append(bytes.Clone(good), good[len(good)-image.FooterSize:]...), "trailing data"},
		{"footer offsets past the end", withFooter(func(f *image.Footer) {
			f.HashSize += 1 << 20
			f.ManifestOffset += 1 << 20
			f.ImageSize += 1 << 20
		}), "footer says the image is"},
		{"footer manifest outside", withFooter(func(f *image.Footer) { f.ManifestOffset = 1 << 39 }), "does not follow the hash area"},
		{"footer data past the end", withFooter(func(f *image.Footer) { f.DataSize = 1 << 39; f.HashOffset = 1 << 39 }), "footer"},
		{"footer smaller data", withFooter(func(f *image.Footer) {
			f.DataSize -= 4096
			f.HashOffset -= 4096
			f.HashSize += 4096
		}), "footer disagrees with the signed manifest"},
		{"empty file", nil, "too short"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "damaged.img")
			if err := os.WriteFile(p, tc.img, 0o644); err != nil {
				t.Fatal(err)
			}
			r := spine(t, nil, "verify", "--pub", d.keys.pub, p)
			if r.code != 1 {
				t.Fatalf("verify of a damaged image: %v", r)
			}
			if !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "is not a valid Spine") {
				t.Errorf("stderr %q does not say %q", r.stderr, tc.want)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q", r.stdout)
			}
		})
	}
	if r := spine(t, nil, "verify", "--pub", d.keys.pub, filepath.Join(t.TempDir(), "missing.img")); r.code != 1 {
		t.Errorf("verify of a missing file: %v", r)
	}
}
