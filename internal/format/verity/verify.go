package verity

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Verify checks data and its hash area against p and the root hash, top down:
// the superblock must describe p (and its padding be zero), the top block must
// hash to root, every hash block must match its entry in the level above, and
// every data block must match its entry in level 0. The first mismatch found
// (lowest level area first, then lowest block) is returned as a
// *CorruptionError; read errors are returned wrapped. workers <= 0 means
// runtime.NumCPU().
func Verify(data io.ReaderAt, hashArea io.ReaderAt, p Params, root []byte, workers int) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if len(root) != DigestSize {
		return fmt.Errorf("%w: root hash is %d bytes, want %d", ErrInvalidParams, len(root), DigestSize)
	}
	workers = workerCount(workers)
	l := newLayout(p)
	hbs := int(p.HashBlockSize)
	// Check the hash area is as long as p says before allocating room for it.
	size := int(l.totalBlocks) * hbs
	if err := readFull(hashArea, make([]byte, 1), int64(size-1)); err != nil {
		return fmt.Errorf("read hash area: %w", err)
	}
	area := make([]byte, size)
	if err := readFull(hashArea, area, 0); err != nil {
		return fmt.Errorf("read hash area: %w", err)
	}
	if err := checkSuperblock(area[:int(l.sbBlocks)*hbs], p); err != nil {
		return err
	}

	x := newHasher(p.Salt)
	got := make([]byte, DigestSize)
	if l.levels == 0 {
		block := make([]byte, p.DataBlockSize)
		if err := readFull(data, block, 0); err != nil {
			return fmt.Errorf("read data block 0: %w", err)
		}
		x.sum(got, block)
	} else {
		x.sum(got, levelBytes(area, l, l.levels-1, hbs))
	}
	if !bytes.Equal(got, root) {
		return &CorruptionError{Area: "root"}
	}

	for i := l.levels - 1; i >= 1; i-- {
		if err := verifyLevel(levelBytes(area, l, i, hbs), levelBytes(area, l, i-1, hbs), i-1, p.Salt, hbs, workers); err != nil {
			return err
		}
	}
	if l.levels > 0 {
		return verifyData(data, p, levelBytes(area, l, 0, hbs), workers)
	}
	return nil
}

// checkSuperblock compares the superblock block(s) with what Build writes for p.
func checkSuperblock(b []byte, p Params) error {
	sb, err := ParseSuperblock(b)
	if err != nil {
		return &CorruptionError{Area: "superblock", Err: err}
	}
	var why string
	switch {
	case sb.DataBlockSize != p.DataBlockSize:
		why = fmt.Sprintf("data block size %d, want %d", sb.DataBlockSize, p.DataBlockSize)
	case sb.HashBlockSize != p.HashBlockSize:
		why = fmt.Sprintf("hash block size %d, want %d", sb.HashBlockSize, p.HashBlockSize)
	case sb.DataBlocks != p.DataBlocks:
		why = fmt.Sprintf("%d data blocks, want %d", sb.DataBlocks, p.DataBlocks)
	case !bytes.Equal(sb.Salt, p.Salt):
		why = "salt differs"
	case sb.UUID != p.UUID:
		why = "uuid differs"
	case !allZero(b[SuperblockSize:]):
		why = "padding after the superblock is not zero"
	default:
		return nil
	}
	return &CorruptionError{Area: "superblock", Err: errors.New(why)}
}

// verifyLevel checks every hash block of child (tree level `level`) against its
// digest in parent, the level above.
func verifyLevel(parent, child []byte, level int, salt []byte, hbs, workers int) error {
	blocks := len(child) / hbs
	tasks := (blocks + hashChunkBlocks - 1) / hashChunkBlocks
	hashers := make([]*hasher, min(workers, tasks))
	sums := make([][]byte, len(hashers))
	return parallel(workers, tasks, func(w, t int) error {
		if hashers[w] == nil {
			hashers[w] = newHasher(salt)
			sums[w] = make([]byte, DigestSize)
		}
		first := t * hashChunkBlocks
		last := min(first+hashChunkBlocks, blocks)
		for b := first; b < last; b++ {
			hashers[w].sum(sums[w], child[b*hbs:(b+1)*hbs])
			if !bytes.Equal(sums[w], parent[b*DigestSize:(b+1)*DigestSize]) {
				return &CorruptionError{Area: "hash", Level: level, Block: uint64(b)}
			}
		}
		return nil
	})
}

// verifyData checks every data block against its digest in leaves (level 0).
func verifyData(data io.ReaderAt, p Params, leaves []byte, workers int) error {
	perTask, tasks := dataTasks(p)
	dbs := int(p.DataBlockSize)
	bufs := make([][]byte, min(workers, tasks))
	hashers := make([]*hasher, len(bufs))
	sums := make([][]byte, len(bufs))
	return parallel(workers, tasks, func(w, t int) error {
		if bufs[w] == nil {
			bufs[w] = make([]byte, int(perTask)*dbs)
			hashers[w] = newHasher(p.Salt)
			sums[w] = make([]byte, DigestSize)
		}
		first := uint64(t) * perTask
		n := min(perTask, p.DataBlocks-first)
		buf := bufs[w][:int(n)*dbs]
		if err := readFull(data, buf, int64(first)*int64(dbs)); err != nil {
			return fmt.Errorf("read data blocks %d..%d: %w", first, first+n-1, err)
		}
		for i := range n {
			hashers[w].sum(sums[w], buf[int(i)*dbs:int(i+1)*dbs])
			b := first + i
			if !bytes.Equal(sums[w], leaves[b*DigestSize:(b+1)*DigestSize]) {
				return &CorruptionError{Area: "data", Block: b}
			}
		}
		return nil
	})
}
