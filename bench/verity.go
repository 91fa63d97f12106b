package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"alpinespine.org/spine/internal/format/verity"
)

const (
	verityDataSize = 512 << 20
	verityRuns     = 3
	veritySalt     = "5370696e652062656e6368206461746120666f722076657269747920747265650a"
	verityUUID     = "5370696e-6562-4e63-8876-657269747931"
)

// benchVerity times verity.Build against `veritysetup format` on the same 512 MiB
// of data with the same salt, both writing (and syncing, as veritysetup does)
// the hash area to a file. Runs alternate so that both see the same machine load.
func benchVerity(ctx context.Context, dir string) ([]result, error) {
	tool, err := exec.LookPath("veritysetup")
	if err != nil {
		return nil, fmt.Errorf("veritysetup (Debian package cryptsetup-bin): %w", err)
	}
	dataPath := filepath.Join(dir, "data")
	if err := writeRandomFile(dataPath, verityDataSize); err != nil {
		return nil, err
	}
	salt, err := hex.DecodeString(veritySalt)
	if err != nil {
		return nil, err
	}
	var uuid [16]byte
	if _, err := hex.Decode(uuid[:], []byte(strings.ReplaceAll(verityUUID, "-", ""))); err != nil {
		return nil, err
	}
	p := verity.Params{
		Algorithm:     verity.AlgorithmSHA256,
		DataBlockSize: 4096,
		HashBlockSize: 4096,
		DataBlocks:    verityDataSize / 4096,
		Salt:          salt,
		UUID:          uuid,
	}
	oursPath, refPath := filepath.Join(dir, "hash.ours"), filepath.Join(dir, "hash.ref")

	var ours, ref []time.Duration
	var ourRoot, refRoot []byte
	for range verityRuns {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		d, root, err := timeBuild(dataPath, oursPath, p)
		if err != nil {
			return nil, err
		}
		ours, ourRoot = append(ours, d), root

		d, root, err = timeVeritysetup(ctx, tool, dataPath, refPath)
		if err != nil {
			return nil, err
		}
		ref, refRoot = append(ref, d), root
	}
	if !bytes.Equal(ourRoot, refRoot) {
		return nil, fmt.Errorf("root hash %x, veritysetup says %x", ourRoot, refRoot)
	}
	a, err := os.ReadFile(oursPath)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(refPath)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(a, b) {
		return nil, fmt.Errorf("hash area (%d bytes) differs from veritysetup's (%d bytes)", len(a), len(b))
	}

	mo, mr := median(ours), median(ref)
	return []result{{
		Name:      "verity hash tree, 512 MiB",
		Ours:      fmt.Sprintf("%d ms", mo.Milliseconds()),
		Reference: fmt.Sprintf("veritysetup format %d ms", mr.Milliseconds()),
		Ratio:     float64(mr) / float64(mo),
		Floor:     1.0,
		Note:      "sha256, 4 KiB blocks",
	}}, nil
}

// timeBuild builds the tree of dataPath and writes and syncs it to hashPath.
func timeBuild(dataPath, hashPath string, p verity.Params) (time.Duration, []byte, error) {
	if err := os.Remove(hashPath); err != nil && !os.IsNotExist(err) {
		return 0, nil, err
	}
	start := time.Now()
	f, err := os.Open(dataPath)
	if err != nil {
		return 0, nil, err
	}
	defer f.Close()
	area, root, err := verity.Build(f, p, 0)
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
