package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"strings"
	"testing"
)

// goodFooter describes a small image: 2 data blocks, 1 hash block, a 300-byte manifest.
func goodFooter() Footer {
	return Footer{DataSize: 8192, HashOffset: 8192, HashSize: 4096, ManifestOffset: 12288,
		ManifestSize: 300, SignatureSize: 64, ImageSize: 12288 + 300 + 64 + FooterSize}
}

func encode(t testing.TB, f Footer) []byte {
	t.Helper()
	b, err := f.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// reseal recomputes the checksum, so that a test reaches the checks behind it.
func reseal(b []byte) []byte {
	binary.LittleEndian.PutUint32(b[76:], crc32.Checksum(b[:76], castagnoli()))
	return b
}

func TestFooterRoundTrip(t *testing.T) {
	b := encode(t, goodFooter())
	if len(b) != FooterSize || string(b[:8]) != "SPINEIMG" {
		t.Fatalf("footer %x", b)
	}
	f, err := ParseFooter(b)
	if err != nil {
		t.Fatal(err)
	}
	if f != goodFooter() {
		t.Errorf("ParseFooter(MarshalBinary(f)) = %+v, want %+v", f, goodFooter())
	}
}

func TestParseFooterRefuses(t *testing.T) {
	mut := func(fn func(*Footer)) []byte {
		f := goodFooter()
		fn(&f)
		return encode(t, f)
	}
	raw := func(fn func([]byte)) []byte {
		b := encode(t, goodFooter())
		fn(b)
		return b
	}
	le := binary.LittleEndian
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"short", encode(t, goodFooter())[:79], "79 bytes"},
		{"long", append(encode(t, goodFooter()), 0), "81 bytes"},
		{"magic", raw(func(b []byte) { b[0] = 's' }), "magic"},
		{"checksum", raw(func(b []byte) { b[20] ^= 1 }), "checksum"},
		{"checksum field", raw(func(b []byte) { b[77] ^= 1 }), "checksum"},
		{"version", raw(func(b []byte) { le.PutUint32(b[8:], 2); reseal(b) }), "version"},
		{"flags", raw(func(b []byte) { le.PutUint32(b[12:], 1<<31); reseal(b) }), "flags"},
		{"reserved", raw(func(b []byte) { b[70] = 1; reseal(b) }), "reserved"},
		{"zero data", mut(func(f *Footer) { f.DataSize = 0 }), "data size"},
		{"unaligned data", mut(func(f *Footer) { f.DataSize = 8191 }), "data size"},
		{"hash offset", mut(func(f *Footer) { f.HashOffset = 4096 }), "hash area"},
		{"zero hash", mut(func(f *Footer) { f.HashSize = 0 }), "hash size"},
		{"unaligned hash", mut(func(f *Footer) { f.HashSize = 100 }), "hash size"},
		{"manifest offset", mut(func(f *Footer) { f.ManifestOffset = 1 << 30 }), "manifest at"},
		{"zero manifest", mut(func(f *Footer) { f.ManifestSize = 0 }), "manifest size"},
		{"huge manifest", mut(func(f *Footer) { f.ManifestSize = 1 << 20 }), "manifest size"},
		{"signature size", mut(func(f *Footer) { f.SignatureSize = 65 }), "signature size"},
		{"image size", mut(func(f *Footer) { f.ImageSize++ }), "parts end"},
		{"huge image", mut(func(f *Footer) { f.ImageSize = 1 << 62 }), "out of range"},
		{"overflow", mut(func(f *Footer) {
			f.DataSize, f.HashOffset, f.HashSize = 1<<63, 1<<63, 1<<63
			f.ManifestOffset = 0
		}), "data size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseFooter(tc.b)
			if !errors.Is(err, ErrFooter) {
				t.Fatalf("ParseFooter = %v, want ErrFooter", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

// FuzzParseFooter: whatever ParseFooter accepts encodes back to the very same bytes and
// decodes to the same footer.
func FuzzParseFooter(f *testing.F) {
	f.Add(encode(f, goodFooter()))
	f.Add(encode(f, Footer{DataSize: 4096, HashOffset: 4096, HashSize: 4096, ManifestOffset: 8192, ManifestSize: 1, SignatureSize: 64, ImageSize: 8192 + 1 + 64 + 80}))
	f.Add(reseal(bytes.Repeat([]byte{0xff}, FooterSize)))
	f.Fuzz(func(t *testing.T, b []byte) {
		ft, err := ParseFooter(b)
		if err != nil {
			return
		}
		enc, err := ft.MarshalBinary()
		if err != nil {
			t.Fatalf("MarshalBinary of a parsed footer: %v", err)
		}
		if !bytes.Equal(enc, b) {
			t.Fatalf("accepted footer does not re-encode to itself:\n in  %x\n out %x", b, enc)
		}
		again, err := ParseFooter(enc)
		if err != nil || again != ft {
			t.Fatalf("decode(encode(f)) = %+v, %v; want %+v", again, err, ft)
		}
		if ft.ManifestOffset+uint64(ft.ManifestSize)+uint64(ft.SignatureSize)+FooterSize != ft.ImageSize {
			t.Fatalf("accepted footer does not tile the image: %+v", ft)
		}
	})
}
