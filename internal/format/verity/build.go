package verity

import (
	"fmt"
	"io"
)

// Build hashes the first p.DataBlocks blocks of data and returns the hash area
// (superblock padded to a hash block, then the tree) and the root hash. The hash
// area is byte for byte what
//
//	veritysetup format --data-block-size D --hash-block-size H --salt HEX --uuid U data hash
//
// writes to the hash file. workers goroutines hash in parallel; workers <= 0
// means runtime.NumCPU(). The result does not depend on workers.
func Build(data io.ReaderAt, p Params, workers int) (hashArea []byte, root []byte, err error) {
	if err := p.Validate(); err != nil {
		return nil, nil, err
	}
	// Read the last data block first: a DataBlocks larger than the data fails
	// here, before a hash area sized for it is allocated.
	last := make([]byte, p.DataBlockSize)
	if err := readFull(data, last, int64(p.DataBlocks-1)*int64(p.DataBlockSize)); err != nil {
		return nil, nil, fmt.Errorf("read data block %d: %w", p.DataBlocks-1, err)
	}
	workers = workerCount(workers)
	l := newLayout(p)
	hbs := int(p.HashBlockSize)
	hashArea = make([]byte, int(l.totalBlocks)*hbs)
	sb, err := p.Superblock().MarshalBinary()
	if err != nil {
		return nil, nil, err
	}
	copy(hashArea, sb)
	root = make([]byte, DigestSize)

	if l.levels == 0 {
		// One data block: it is its own tree and hashes straight to the root.
		newHasher(p.Salt).sum(root, last)
		return hashArea, root, nil
	}

	if err := buildLeaves(data, p, hashArea[int(l.start[0])*hbs:], workers); err != nil {
		return nil, nil, err
	}
	for i := 1; i < l.levels; i++ {
		src := levelBytes(hashArea, l, i-1, hbs)
		dst := levelBytes(hashArea, l, i, hbs)
		hashLevel(dst, src, p.Salt, hbs, workers)
	}
	newHasher(p.Salt).sum(root, levelBytes(hashArea, l, l.levels-1, hbs))
	return hashArea, root, nil
}

// levelBytes returns the hash blocks of one level of the tree.
func levelBytes(hashArea []byte, l layout, level, hbs int) []byte {
	start := int(l.start[level]) * hbs
	return hashArea[start : start+int(l.blocks[level])*hbs]
}

// buildLeaves hashes every data block into dst, the start of level 0. Each task
// reads a contiguous run of blocks into its worker's buffer and writes the
// digests to a disjoint part of dst.
func buildLeaves(data io.ReaderAt, p Params, dst []byte, workers int) error {
	perTask, tasks := dataTasks(p)
	dbs := int(p.DataBlockSize)
	bufs := make([][]byte, min(workers, tasks))
	hashers := make([]*hasher, len(bufs))
	return parallel(workers, tasks, func(w, t int) error {
		if bufs[w] == nil {
			bufs[w] = make([]byte, int(perTask)*dbs)
			hashers[w] = newHasher(p.Salt)
		}
		first := uint64(t) * perTask
		n := min(perTask, p.DataBlocks-first)
		buf := bufs[w][:int(n)*dbs]
		if err := readFull(data, buf, int64(first)*int64(dbs)); err != nil {
			return fmt.Errorf("read data blocks %d..%d: %w", first, first+n-1, err)
		}
		hashers[w].sumBlocks(dst[first*DigestSize:], buf, dbs)
		return nil
	})
}

// hashLevel hashes every hash block of src (one level) into dst (the level above).
func hashLevel(dst, src, salt []byte, hbs, workers int) {
	blocks := len(src) / hbs
	tasks := (blocks + hashChunkBlocks - 1) / hashChunkBlocks
	hashers := make([]*hasher, min(workers, tasks))
	// The task function never fails, so parallel cannot return an error.
	_ = parallel(workers, tasks, func(w, t int) error {
		if hashers[w] == nil {
			hashers[w] = newHasher(salt)
		}
		first := t * hashChunkBlocks
		last := min(first+hashChunkBlocks, blocks)
		hashers[w].sumBlocks(dst[first*DigestSize:], src[first*hbs:last*hbs], hbs)
		return nil
	})
}
