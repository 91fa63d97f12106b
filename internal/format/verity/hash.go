package verity

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
)

// readChunk is how much data one task reads with a single ReadAt. Large enough
// that syscalls cost nothing next to hashing, small enough that the chunk is
// still in the core's cache when it is hashed right after the copy.
const readChunk = 256 << 10

// hashChunkBlocks is how many hash blocks one task hashes in the upper levels.
const hashChunkBlocks = 64

// hasher computes salted block hashes. One per goroutine; it is not safe for
// concurrent use.
type hasher struct {
	h    hash.Hash
	salt []byte
}

func newHasher(salt []byte) *hasher {
	return &hasher{h: sha256.New(), salt: salt}
}

// sum writes sha256(salt || block) into dst[:DigestSize].
func (x *hasher) sum(dst, block []byte) {
	x.h.Reset()
	x.h.Write(x.salt)
	x.h.Write(block)
	x.h.Sum(dst[:0])
}

// sumBlocks hashes consecutive blocks of size bs from src into consecutive
// digests in dst. Precondition: len(src) is a multiple of bs and dst holds
// len(src)/bs digests.
func (x *hasher) sumBlocks(dst, src []byte, bs int) {
	for off := 0; off < len(src); off += bs {
		x.sum(dst, src[off:off+bs])
		dst = dst[DigestSize:]
	}
}

// workerCount turns the caller's workers argument into a goroutine count.
func workerCount(workers int) int {
	if workers <= 0 {
		return runtime.NumCPU()
	}
	return workers
}

// parallel runs fn(worker, task) for tasks 0..tasks-1 on up to workers
// goroutines. Tasks are handed out in increasing order and no new task starts
// once one has failed, so every task below a failed one has run to completion:
// the error returned is that of the lowest failed task, the same whatever the
// number of workers.
func parallel(workers, tasks int, fn func(worker, task int) error) error {
	workers = min(workers, tasks)
	if workers <= 1 {
		for t := range tasks {
			if err := fn(0, t); err != nil {
				return err
			}
		}
		return nil
	}
	var (
		next    atomic.Int64
		failed  atomic.Bool
		mu      sync.Mutex
		errTask = tasks
		errOut  error
		wg      sync.WaitGroup
	)
	for w := range workers {
		wg.Go(func() {
			for !failed.Load() {
				t := int(next.Add(1) - 1)
				if t >= tasks {
					return
				}
				if err := fn(w, t); err != nil {
					mu.Lock()
					if t < errTask {
						errTask, errOut = t, err
					}
					mu.Unlock()
					failed.Store(true)
				}
			}
		})
	}
	wg.Wait()
	return errOut
}

// readFull reads exactly len(buf) bytes at off.
func readFull(r io.ReaderAt, buf []byte, off int64) error {
	n, err := r.ReadAt(buf, off)
	if n == len(buf) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read %d bytes at offset %d: %w", len(buf), off, err)
}

// dataTasks splits the data into tasks of whole blocks, about readChunk bytes each.
func dataTasks(p Params) (blocksPerTask uint64, tasks int) {
	blocksPerTask = max(1, uint64(readChunk/p.DataBlockSize))
	return blocksPerTask, int((p.DataBlocks + blocksPerTask - 1) / blocksPerTask)
}
