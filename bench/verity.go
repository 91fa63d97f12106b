package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"alpinespine.org/spine/internal/format/verity"
)

const (
	verityDataSize  = 512 << 20
	verityQuickSize = 16 << 20
	verityRuns      = 3
	veritySalt      = "5370696e652062656e6368206461746120666f722076657269747920747265650a"
	verityUUID      = "5370696e-6562-4e63-8876-657269747931"
)

// benchVerity times verity.Build against `veritysetup format` on the same data (512 MiB, warm in
// the page cache) with the same salt, both writing and syncing the hash area to a file, once
// with as many workers as CPUs and once with one (veritysetup hashes on one thread). It also
// times plain SHA-256 of every data block on all CPUs, the limit a tree build cannot beat.
// Runs alternate so that every side sees the same machine load.
func benchVerity(ctx context.Context, cfg config, dir string) error {
	tool, err := exec.LookPath("veritysetup")
	if err != nil {
		return fmt.Errorf("veritysetup (Debian package cryptsetup-bin): %w", err)
	}
	size := verityDataSize
	if cfg.quick {
		size = verityQuickSize
	}
	dataPath := filepath.Join(dir, "data")
	if err := writeRandomFile(dataPath, size); err != nil {
		return err
	}
	salt, err := hex.DecodeString(veritySalt)
	if err != nil {
		return err
	}
	var uuid [16]byte
	if _, err := hex.Decode(uuid[:], []byte(strings.ReplaceAll(verityUUID, "-", ""))); err != nil {
		return err
	}
	p := verity.Params{
		Algorithm:     verity.AlgorithmSHA256,
		DataBlockSize: 4096,
		HashBlockSize: 4096,
		DataBlocks:    uint64(size) / 4096,
		Salt:          salt,
		UUID:          uuid,
	}
	oursPath, refPath := filepath.Join(dir, "hash.ours"), filepath.Join(dir, "hash.ref")
	cpus := runtime.NumCPU()

	var ours, single, ref, limit []time.Duration
	var ourRoot, refRoot []byte
	for range cfg.runs(verityRuns) {
		if err := ctx.Err(); err != nil {
			return err
		}
		d, root, err := timeBuild(dataPath, oursPath, p, cpus)
		if err != nil {
			return err
		}
		ours, ourRoot = append(ours, d), root
		if d, _, err = timeBuild(dataPath, oursPath, p, 1); err != nil {
			return err
		}
		single = append(single, d)
		if d, err = timeSHA256(dataPath, cpus); err != nil {
			return err
		}
		limit = append(limit, d)
		d, root, err = timeVeritysetup(ctx, tool, dataPath, refPath)
		if err != nil {
			return err
		}
		ref, refRoot = append(ref, d), root
	}
	if !bytes.Equal(ourRoot, refRoot) {
		return fmt.Errorf("root hash %x, veritysetup says %x", ourRoot, refRoot)
	}
	a, err := os.ReadFile(oursPath)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(refPath)
	if err != nil {
		return err
	}
	if !bytes.Equal(a, b) {
		return fmt.Errorf("hash area (%d bytes) differs from veritysetup's (%d bytes)", len(a), len(b))
	}

	mib := size >> 20
	cond := fmt.Sprintf("host, %d MiB in the page cache, sha256, 4 KiB blocks, hash area written and synced; median of %d", mib, len(ours))
	mo, ms1, mr, ml := median(ours), median(single), median(ref), median(limit)
	r := timed("verity-tree", mo, "veritysetup format", mr, fmt.Sprintf("ours on %d threads, veritysetup on 1; %s", cpus, cond))
	r.Floor = 1
	cfg.emit(r)
	cfg.emit(timed("verity-tree-1thread", ms1, "veritysetup format", mr, "both on 1 thread; "+cond))
	cfg.emit(timed("verity-tree-sha256-limit", mo, "sha256 of every block", ml,
		fmt.Sprintf("ratio = limit / ours, 1.0 would be free: the limit is SHA-256 of the data blocks alone on %d threads, no tree, no write; %s", cpus, cond)))
	return nil
}

// timeSHA256 hashes every 4 KiB block of dataPath on workers goroutines, reading as a tree build
// does, and returns the wall time: the most a tree build could go at on this machine.
func timeSHA256(dataPath string, workers int) (time.Duration, error) {
	f, err := os.Open(dataPath)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	const chunk = 1 << 20
	n := (st.Size() + chunk - 1) / chunk
	start := time.Now()
	var next atomic.Int64
	errs := make(chan error, workers)
	for range workers {
		go func() {
			buf := make([]byte, chunk)
			h := sha256.New()
			var sum [sha256.Size]byte
			for {
				i := next.Add(1) - 1
				if i >= n {
					errs <- nil
					return
				}
				k, err := f.ReadAt(buf, i*chunk)
				if err != nil && !errors.Is(err, io.EOF) {
					errs <- err
					return
				}
				for b := 0; b+4096 <= k; b += 4096 {
					h.Reset()
					h.Write(buf[b : b+4096])
					h.Sum(sum[:0])
				}
			}
		}()
	}
	var first error
	for range workers {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return time.Since(start), first
}

// timeBuild builds the tree of dataPath on workers goroutines and writes and syncs it to hashPath.
func timeBuild(dataPath, hashPath string, p verity.Params, workers int) (time.Duration, []byte, error) {
	if err := os.Remove(hashPath); err != nil && !os.IsNotExist(err) {
		return 0, nil, err
	}
	start := time.Now()
	f, err := os.Open(dataPath)
	if err != nil {
		return 0, nil, err
	}
	defer f.Close()
	area, root, err := verity.Build(f, p, workers)
	if err != nil {
		return 0, nil, fmt.Errorf("build verity tree: %w", err)
	}
	out, err := os.Create(hashPath)
	if err != nil {
		return 0, nil, err
	}
	if _, err := out.Write(area); err != nil {
		out.Close()
		return 0, nil, err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return 0, nil, err
	}
	if err := out.Close(); err != nil {
		return 0, nil, err
	}
	return time.Since(start), root, nil
}

// timeVeritysetup runs `veritysetup format` and returns its wall time and root hash.
func timeVeritysetup(ctx context.Context, tool, dataPath, hashPath string) (time.Duration, []byte, error) {
	if err := os.Remove(hashPath); err != nil && !os.IsNotExist(err) {
		return 0, nil, err
	}
	cmd := exec.CommandContext(ctx, tool, "format",
		"--data-block-size", "4096", "--hash-block-size", "4096",
		"--salt", veritySalt, "--uuid", verityUUID, dataPath, hashPath)
	start := time.Now()
	out, err := cmd.Output()
	d := time.Since(start)
	if err != nil {
		return 0, nil, fmt.Errorf("%s: %w", cmd, err)
	}
	for line := range strings.Lines(string(out)) {
		if v, ok := strings.CutPrefix(line, "Root hash:"); ok {
			root, err := hex.DecodeString(strings.TrimSpace(v))
			return d, root, err
		}
	}
	return 0, nil, fmt.Errorf("no root hash in veritysetup output:\n%s", out)
}

// writeRandomFile writes size bytes of deterministic pseudo-random data.
func writeRandomFile(path string, size int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	rng := rand.NewChaCha8([32]byte{'s', 'p', 'i', 'n', 'e', '-', 'b', 'e', 'n', 'c', 'h'})
	if _, err := w.ReadFrom(io.LimitReader(rng, int64(size))); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}
