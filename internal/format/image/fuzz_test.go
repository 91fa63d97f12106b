package image

import (
	"bytes"
	"crypto/ed25519"
	"testing"

	"alpinespine.org/spine/internal/format/verity"
)

// FuzzOpen feeds arbitrary bytes to the whole read path (Open, Authenticate, VerifyData).
// It must never panic, and whatever it accepts must really be a good image: signed by the
// trusted key, its hash area and root hash exactly what verity.Build makes of its data, and
// its parts tiling the input.
func FuzzOpen(f *testing.F) {
	p, _ := makeImage(f, 0)
	good := readFile(f, p)
	ft := footerOf(f, good)
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add(append(bytes.Clone(good), 0))
	for _, off := range []uint64{0, ft.HashOffset + 10, ft.ManifestOffset + 30, ft.ImageSize - 70} {
		b := bytes.Clone(good)
		b[off] ^= 1
		f.Add(b)
	}
	f.Add(good[ft.HashOffset:])
	f.Add(good[len(good)-FooterSize:])
	trusted := testPub()

	f.Fuzz(func(t *testing.T, data []byte) {
		im, err := Open(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		m, err := im.Authenticate(trusted)
		if err != nil {
			return
		}
		if err := im.VerifyData(m, 1); err != nil {
			return
		}
		ft := im.Footer
		if ft.ImageSize != uint64(len(data)) || ft.ManifestOffset+uint64(ft.ManifestSize)+uint64(ft.SignatureSize)+FooterSize != ft.ImageSize {
			t.Fatalf("accepted image whose parts do not tile it: %+v, %d bytes", ft, len(data))
		}
		mb := data[ft.ManifestOffset : ft.ManifestOffset+uint64(ft.ManifestSize)]
		sig := data[ft.ManifestOffset+uint64(ft.ManifestSize) : ft.ImageSize-FooterSize]
		if !bytes.Equal(mb, im.ManifestBytes) || !ed25519.Verify(trusted[0], mb, sig) {
			t.Fatal("accepted image whose manifest is not signed by the trusted key")
		}
		hashArea, root, err := verity.Build(bytes.NewReader(data[:ft.DataSize]), VerityParams(m), 1)
		if err != nil {
			t.Fatalf("accepted image whose data cannot be hashed: %v", err)
		}
		if !bytes.Equal(root, m.RootHashBytes()) || !bytes.Equal(hashArea, data[ft.HashOffset:ft.HashOffset+ft.HashSize]) {
			t.Fatal("accepted image whose hash tree is not the tree of its data")
		}
	})
}
