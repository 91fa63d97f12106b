package verity

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// SuperblockSize is the size of the on-disk veritysetup superblock.
const SuperblockSize = 512

// Superblock field offsets, from struct verity_sb in cryptsetup's lib/verity/verity.c.
// All integers are little-endian.
const (
	offMagic         = 0  // [8]byte "verity\0\0"
	offVersion       = 8  // uint32, 1
	offHashType      = 12 // uint32, 0 = Chrome OS, 1 = normal
	offUUID          = 16 // [16]byte
	offAlgorithm     = 32 // [32]byte, NUL-padded
	offDataBlockSize = 64 // uint32
	offHashBlockSize = 68 // uint32
	offDataBlocks    = 72 // uint64
	offSaltSize      = 80 // uint16
	offPad1          = 82 // [6]byte
	offSalt          = 88 // [256]byte, then 168 reserved bytes to 512
	algorithmLen     = 32
)

// superblockMagic starts every superblock.
var superblockMagic = [8]byte{'v', 'e', 'r', 'i', 't', 'y', 0, 0}

// Superblock versions and hash types this package reads and writes.
const (
	SuperblockVersion = 1
	HashTypeNormal    = 1 // hash = H(salt || block); type 0 (Chrome OS) is not supported
)

// Superblock is the veritysetup on-disk superblock at the start of a hash area.
type Superblock struct {
	Version       uint32
	HashType      uint32
	UUID          [16]byte
	Algorithm     string
	DataBlockSize uint32
	HashBlockSize uint32
	DataBlocks    uint64
	Salt          []byte
}

// Superblock returns the superblock veritysetup writes for p.
func (p Params) Superblock() Superblock {
	return Superblock{
		Version:       SuperblockVersion,
		HashType:      HashTypeNormal,
		UUID:          p.UUID,
		Algorithm:     p.Algorithm,
		DataBlockSize: p.DataBlockSize,
		HashBlockSize: p.HashBlockSize,
		DataBlocks:    p.DataBlocks,
		Salt:          bytes.Clone(p.Salt),
	}
}

// Params returns the tree parameters the superblock describes.
func (s Superblock) Params() Params {
	return Params{
		Algorithm:     s.Algorithm,
		DataBlockSize: s.DataBlockSize,
		HashBlockSize: s.HashBlockSize,
		DataBlocks:    s.DataBlocks,
		Salt:          bytes.Clone(s.Salt),
		UUID:          s.UUID,
	}
}

// check applies the rules shared by MarshalBinary and ParseSuperblock, so that
// anything one accepts the other does too.
func (s Superblock) check() error {
	if s.Version != SuperblockVersion {
		return fmt.Errorf("%w: version %d, want %d", ErrBadSuperblock, s.Version, SuperblockVersion)
	}
	if s.HashType != HashTypeNormal {
		return fmt.Errorf("%w: hash type %d, want %d", ErrBadSuperblock, s.HashType, HashTypeNormal)
	}
	if s.Algorithm != AlgorithmSHA256 {
		return fmt.Errorf("%w: %w: %q", ErrBadSuperblock, ErrUnsupportedAlgorithm, s.Algorithm)
	}
	if !blockSizeOK(s.DataBlockSize) {
		return fmt.Errorf("%w: data block size %d", ErrBadSuperblock, s.DataBlockSize)
	}
	if !blockSizeOK(s.HashBlockSize) {
		return fmt.Errorf("%w: hash block size %d", ErrBadSuperblock, s.HashBlockSize)
	}
	if len(s.Salt) > MaxSaltSize {
		return fmt.Errorf("%w: salt size %d", ErrBadSuperblock, len(s.Salt))
	}
	return nil
}

// MarshalBinary encodes the superblock in its 512-byte on-disk form.
func (s Superblock) MarshalBinary() ([]byte, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	b := make([]byte, SuperblockSize)
	copy(b[offMagic:], superblockMagic[:])
	binary.LittleEndian.PutUint32(b[offVersion:], s.Version)
	binary.LittleEndian.PutUint32(b[offHashType:], s.HashType)
	copy(b[offUUID:], s.UUID[:])
	copy(b[offAlgorithm:offAlgorithm+algorithmLen], s.Algorithm)
	binary.LittleEndian.PutUint32(b[offDataBlockSize:], s.DataBlockSize)
	binary.LittleEndian.PutUint32(b[offHashBlockSize:], s.HashBlockSize)
	binary.LittleEndian.PutUint64(b[offDataBlocks:], s.DataBlocks)
	binary.LittleEndian.PutUint16(b[offSaltSize:], uint16(len(s.Salt)))
	copy(b[offSalt:], s.Salt)
	return b, nil
}

// ParseSuperblock decodes the first SuperblockSize bytes of b. It is strict: the
// magic, version 1, hash type 1, block sizes (powers of two, 512 bytes to
// 512 KiB), the salt size and the algorithm (sha256) are checked, and every
// reserved or unused byte must be zero, so that MarshalBinary gives back the same bytes.
func ParseSuperblock(b []byte) (Superblock, error) {
	if len(b) < SuperblockSize {
		return Superblock{}, fmt.Errorf("%w: %d bytes, want %d", ErrBadSuperblock, len(b), SuperblockSize)
	}
	b = b[:SuperblockSize]
	if !bytes.Equal(b[offMagic:offMagic+len(superblockMagic)], superblockMagic[:]) {
		return Superblock{}, fmt.Errorf("%w: no verity magic", ErrBadSuperblock)
	}
	alg := b[offAlgorithm : offAlgorithm+algorithmLen]
	end := bytes.IndexByte(alg, 0)
	if end < 0 {
		return Superblock{}, fmt.Errorf("%w: algorithm name not terminated", ErrBadSuperblock)
	}
	if !allZero(alg[end:]) {
		return Superblock{}, fmt.Errorf("%w: bytes after the algorithm name", ErrBadSuperblock)
	}
	saltSize := int(binary.LittleEndian.Uint16(b[offSaltSize:]))
	if saltSize > MaxSaltSize {
		return Superblock{}, fmt.Errorf("%w: salt size %d, at most %d", ErrBadSuperblock, saltSize, MaxSaltSize)
	}
	if !allZero(b[offPad1:offSalt]) || !allZero(b[offSalt+saltSize:]) {
		return Superblock{}, fmt.Errorf("%w: reserved bytes are not zero", ErrBadSuperblock)
	}
	s := Superblock{
		Version:       binary.LittleEndian.Uint32(b[offVersion:]),
		HashType:      binary.LittleEndian.Uint32(b[offHashType:]),
		Algorithm:     string(alg[:end]),
		DataBlockSize: binary.LittleEndian.Uint32(b[offDataBlockSize:]),
		HashBlockSize: binary.LittleEndian.Uint32(b[offHashBlockSize:]),
		DataBlocks:    binary.LittleEndian.Uint64(b[offDataBlocks:]),
		Salt:          bytes.Clone(b[offSalt : offSalt+saltSize]),
	}
	copy(s.UUID[:], b[offUUID:])
	if err := s.check(); err != nil {
		return Superblock{}, err
	}
	return s, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
