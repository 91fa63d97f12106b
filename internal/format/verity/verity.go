// Package verity computes and checks dm-verity hash trees, byte for byte as
// `veritysetup format` writes them (format version 1, hash type 1).
//
// The hash area starts with the 512-byte veritysetup superblock, zero-padded to
// one hash block, followed by the tree with its top level first and the level
// hashing the data blocks last. Each hash is sha256(salt || block); hashes are
// packed into hash blocks and the rest of each block is zero. The root hash is
// the hash of the single block of the top level (or of the only data block, when
// the data fits in one block and the tree has no levels at all).
//
// See https://docs.kernel.org/admin-guide/device-mapper/verity.html.
package verity

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
)

// Sizes and limits of the format.
const (
	// DigestSize is the size of one sha256 hash in the tree.
	DigestSize = 32
	// MaxSaltSize is the largest salt the superblock can hold.
	MaxSaltSize = 256
	// MinBlockSize and MaxBlockSize bound data and hash block sizes; veritysetup
	// (VERITY_BLOCK_SIZE_OK) refuses anything outside them.
	MinBlockSize = 512
	MaxBlockSize = 512 * 1024
	// maxLevels is the kernel's and veritysetup's limit on tree depth.
	maxLevels = 63
)

// AlgorithmSHA256 is the only hash algorithm this package implements.
const AlgorithmSHA256 = "sha256"

// Errors returned (wrapped) by this package.
var (
	// ErrUnsupportedAlgorithm means a hash algorithm other than sha256 was asked for.
	ErrUnsupportedAlgorithm = errors.New("verity: unsupported hash algorithm (only sha256)")
	// ErrInvalidParams means Params cannot describe a verity tree.
	ErrInvalidParams = errors.New("verity: invalid parameters")
	// ErrBadSuperblock means bytes are not a superblock this package accepts.
	ErrBadSuperblock = errors.New("verity: bad superblock")
)

// Params describes one hash tree: how the data is cut into blocks and how it is hashed.
type Params struct {
	Algorithm     string // only "sha256"
	DataBlockSize uint32 // bytes per data block, usually 4096
	HashBlockSize uint32 // bytes per hash block, usually 4096
	DataBlocks    uint64 // number of data blocks covered by the tree
	Salt          []byte // at most MaxSaltSize bytes; may be empty
	UUID          [16]byte
}

// Validate reports whether p describes a tree this package can build. The
// errors wrap ErrInvalidParams or ErrUnsupportedAlgorithm.
func (p Params) Validate() error {
	if p.Algorithm != AlgorithmSHA256 {
		return fmt.Errorf("%w: %q", ErrUnsupportedAlgorithm, p.Algorithm)
	}
	if !blockSizeOK(p.DataBlockSize) {
		return fmt.Errorf("%w: data block size %d is not a power of two in %d..%d", ErrInvalidParams, p.DataBlockSize, MinBlockSize, MaxBlockSize)
	}
	if !blockSizeOK(p.HashBlockSize) {
		return fmt.Errorf("%w: hash block size %d is not a power of two in %d..%d", ErrInvalidParams, p.HashBlockSize, MinBlockSize, MaxBlockSize)
	}
	if p.DataBlocks == 0 {
		return fmt.Errorf("%w: no data blocks", ErrInvalidParams)
	}
	if len(p.Salt) > MaxSaltSize {
		return fmt.Errorf("%w: salt is %d bytes, at most %d", ErrInvalidParams, len(p.Salt), MaxSaltSize)
	}
	if hi, _ := bits.Mul64(p.DataBlocks, uint64(p.DataBlockSize)); hi != 0 || p.DataBlocks*uint64(p.DataBlockSize) > math.MaxInt64 {
		return fmt.Errorf("%w: %d data blocks of %d bytes overflow", ErrInvalidParams, p.DataBlocks, p.DataBlockSize)
	}
	l := newLayout(p)
	if l.levels > maxLevels {
		return fmt.Errorf("%w: tree of %d levels, at most %d", ErrInvalidParams, l.levels, maxLevels)
	}
	// The whole hash area is held in memory, so it must fit an int.
	if hi, size := bits.Mul64(l.totalBlocks, uint64(p.HashBlockSize)); hi != 0 || size > math.MaxInt {
		return fmt.Errorf("%w: hash area of %d blocks is too large", ErrInvalidParams, l.totalBlocks)
	}
	return nil
}

func blockSizeOK(n uint32) bool {
	return n >= MinBlockSize && n <= MaxBlockSize && n&(n-1) == 0
}

// HashAreaSize returns the size in bytes of the hash area Build produces for p:
// one hash block holding the superblock, then every level of the tree. It
// returns 0 when p is not valid.
func HashAreaSize(p Params) int64 {
	if p.Validate() != nil {
		return 0
	}
	return int64(newLayout(p).totalBlocks) * int64(p.HashBlockSize)
}

// layout is where each level of the tree lives in the hash area. Level 0 holds
// the hashes of the data blocks; level levels-1 is the top, a single block.
type layout struct {
	levels      int
	start       []uint64 // first hash block of each level, counted from the start of the hash area
	blocks      []uint64 // number of hash blocks in each level
	perBlock    uint64   // hashes per hash block
	sbBlocks    uint64   // hash blocks taken by the superblock
	totalBlocks uint64   // superblock block plus all levels
}

// newLayout computes the tree shape the way veritysetup does (lib/verity/verity_hash.c):
// the fan-out is the largest power of two of digests that fits a hash block, and
// levels are added until one block covers all the data.
// Precondition: block sizes are powers of two >= 512 and DataBlocks > 0.
func newLayout(p Params) layout {
	perBlockBits := uint(bits.Len32(p.HashBlockSize/DigestSize) - 1)
	l := layout{perBlock: 1 << perBlockBits}
	for perBlockBits*uint(l.levels) < 64 && (p.DataBlocks-1)>>(perBlockBits*uint(l.levels)) != 0 {
		l.levels++
	}
	l.blocks = make([]uint64, l.levels)
	l.start = make([]uint64, l.levels)
	n := p.DataBlocks
	for i := range l.levels {
		n = (n + l.perBlock - 1) / l.perBlock
		l.blocks[i] = n
	}
	// The superblock takes whole hash blocks; the top level comes right after it.
	l.sbBlocks = (SuperblockSize + uint64(p.HashBlockSize) - 1) / uint64(p.HashBlockSize)
	pos := l.sbBlocks
	for i := l.levels - 1; i >= 0; i-- {
		l.start[i] = pos
		pos += l.blocks[i]
	}
	l.totalBlocks = pos
	return l
}

// CorruptionError reports the first place where a hash area or data does not
// match. Area is "superblock", "hash", "data" or "root". For "hash", Level is the
// tree level (0 = the level hashing the data) and Block the index of the hash
// block within it; for "data", Block is the data block number. "root" means the
// top of the tree does not hash to the given root: either the root is wrong or
// the top block is damaged, and nothing can tell these apart.
type CorruptionError struct {
	Area  string
	Level int
	Block uint64
	Err   error // optional detail, e.g. why the superblock was rejected
}

// Error says where the mismatch is, e.g. "verity: data block 1234 does not match its hash".
func (e *CorruptionError) Error() string {
	switch e.Area {
	case "data":
		return fmt.Sprintf("verity: data block %d does not match its hash", e.Block)
	case "hash":
		return fmt.Sprintf("verity: hash block %d of level %d does not match its hash", e.Block, e.Level)
	case "root":
		return "verity: top of the hash tree does not match the root hash"
	case "superblock":
		if e.Err != nil {
			return "verity: superblock does not match: " + e.Err.Error()
		}
		return "verity: superblock does not match"
	}
	return fmt.Sprintf("verity: corruption in %s block %d", e.Area, e.Block)
}

// Unwrap returns the detail error, if any.
func (e *CorruptionError) Unwrap() error { return e.Err }
