// Package image reads and writes Spine images, one file per slot. Its layout is
//
//	[ SquashFS | dm-verity hash area | manifest | signature | footer ]
//
// The footer, at the very end, locates the other parts. Nothing in it is trusted: every offset
// is checked against the file size and, once the signature over the manifest holds, against the
// signed manifest too.
package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sync"
)

// Footer layout (little endian, FooterSize bytes):
//
//	0  magic "SPINEIMG"     8
//	8  format version       u32
//	12 incompatible flags   u32 (none defined: any set bit is refused)
//	16 data size            u64 (SquashFS, padded to whole data blocks)
//	24 hash offset          u64
//	32 hash size            u64
//	40 manifest offset      u64
//	48 manifest size        u32
//	52 signature size       u32
//	56 image size           u64 (the whole image, footer included)
//	64 reserved, zero       12
//	76 CRC32C of bytes 0..75 u32
const (
	FooterSize    = 80
	footerVersion = 1
	signatureSize = 64
	blockSize     = 4096
)

var footerMagic = [8]byte{'S', 'P', 'I', 'N', 'E', 'I', 'M', 'G'}

// castagnoli is made on first use, not at every start of bay0.
var castagnoli = sync.OnceValue(func() *crc32.Table { return crc32.MakeTable(crc32.Castagnoli) })

// Footer locates the parts of an image.
type Footer struct {
	DataSize       uint64
	HashOffset     uint64
	HashSize       uint64
	ManifestOffset uint64
	ManifestSize   uint32
	SignatureSize  uint32
	ImageSize      uint64
}

// ErrFooter marks every footer problem: a damaged or foreign footer is not a Spine image.
var ErrFooter = errors.New("bad image footer")

// MarshalBinary encodes the footer.
func (f Footer) MarshalBinary() ([]byte, error) {
	b := make([]byte, FooterSize)
	copy(b, footerMagic[:])
	le := binary.LittleEndian
	le.PutUint32(b[8:], footerVersion)
	le.PutUint64(b[16:], f.DataSize)
	le.PutUint64(b[24:], f.HashOffset)
	le.PutUint64(b[32:], f.HashSize)
	le.PutUint64(b[40:], f.ManifestOffset)
	le.PutUint32(b[48:], f.ManifestSize)
	le.PutUint32(b[52:], f.SignatureSize)
	le.PutUint64(b[56:], f.ImageSize)
	le.PutUint32(b[76:], crc32.Checksum(b[:76], castagnoli()))
	return b, nil
}

// ParseFooter decodes and checks a footer: magic, version, flags, checksum and that the parts
// tile the image exactly, in order, with nothing before, between or after them.
func ParseFooter(b []byte) (Footer, error) {
	if len(b) != FooterSize {
		return Footer{}, fmt.Errorf("%w: %d bytes, want %d", ErrFooter, len(b), FooterSize)
	}
	if !bytes.Equal(b[:8], footerMagic[:]) {
		return Footer{}, fmt.Errorf("%w: no SPINEIMG magic (not a Spine image, or truncated)", ErrFooter)
	}
	le := binary.LittleEndian
	if got, want := le.Uint32(b[76:]), crc32.Checksum(b[:76], castagnoli()); got != want {
		return Footer{}, fmt.Errorf("%w: checksum %08x, want %08x", ErrFooter, got, want)
	}
	if v := le.Uint32(b[8:]); v != footerVersion {
		return Footer{}, fmt.Errorf("%w: format version %d is not supported", ErrFooter, v)
	}
	if fl := le.Uint32(b[12:]); fl != 0 {
		return Footer{}, fmt.Errorf("%w: unknown incompatible flags %#x", ErrFooter, fl)
	}
	for _, x := range b[64:76] {
		if x != 0 {
			return Footer{}, fmt.Errorf("%w: reserved bytes are not zero", ErrFooter)
		}
	}
	f := Footer{
		DataSize:       le.Uint64(b[16:]),
		HashOffset:     le.Uint64(b[24:]),
		HashSize:       le.Uint64(b[32:]),
		ManifestOffset: le.Uint64(b[40:]),
		ManifestSize:   le.Uint32(b[48:]),
		SignatureSize:  le.Uint32(b[52:]),
		ImageSize:      le.Uint64(b[56:]),
	}
	return f, f.check()
}

func (f Footer) check() error {
	const maxImage = 1 << 40
	switch {
	case f.ImageSize > maxImage:
		return fmt.Errorf("%w: image size %d is out of range", ErrFooter, f.ImageSize)
	case f.DataSize == 0 || f.DataSize%blockSize != 0 || f.DataSize > maxImage:
		return fmt.Errorf("%w: data size %d is not a positive multiple of %d", ErrFooter, f.DataSize, blockSize)
	case f.HashOffset != f.DataSize:
		return fmt.Errorf("%w: hash area at %d does not follow the data (%d bytes)", ErrFooter, f.HashOffset, f.DataSize)
	case f.HashSize == 0 || f.HashSize%blockSize != 0 || f.HashSize > maxImage:
		return fmt.Errorf("%w: hash size %d is not a positive multiple of %d", ErrFooter, f.HashSize, blockSize)
	case f.ManifestOffset != f.HashOffset+f.HashSize:
		return fmt.Errorf("%w: manifest at %d does not follow the hash area", ErrFooter, f.ManifestOffset)
	case f.ManifestSize == 0 || f.ManifestSize > 64<<10:
		return fmt.Errorf("%w: manifest size %d is out of range", ErrFooter, f.ManifestSize)
	case f.SignatureSize != signatureSize:
		return fmt.Errorf("%w: signature size %d, want %d", ErrFooter, f.SignatureSize, signatureSize)
	case f.ManifestOffset+uint64(f.ManifestSize)+uint64(f.SignatureSize)+FooterSize != f.ImageSize:
		return fmt.Errorf("%w: parts end at %d but the image is %d bytes", ErrFooter,
			f.ManifestOffset+uint64(f.ManifestSize)+uint64(f.SignatureSize)+FooterSize, f.ImageSize)
	}
	return nil
}
