//go:build kernelrepro

package kernel

import (
	"bytes"
	"context"
	"os"
	"runtime"
	"testing"
	"time"
)

// TestReproducible builds the kernel twice from scratch, in two fresh cache directories (so
// two different build paths), at two different times and with different job counts (so a different build order), and
// requires the same bytes: the image, the uncompressed kernel and the configuration. Two cold
// builds take long, so this runs only under `make kernel-repro`.
func TestReproducible(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 110*time.Minute)
	defer cancel()
	var built [2]Kernel
	for i, jobs := range []int{runtime.NumCPU(), runtime.NumCPU() + 1} {
		start := time.Now()
		k, err := Build(ctx, t.TempDir(), Options{Jobs: jobs, Log: testLog{t}})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("build %d (-j%d): %s in %s, sha256 %s", i+1, jobs, k.Image, time.Since(start).Round(time.Second), k.SHA256)
		built[i] = k
	}
	if built[0].SHA256 != built[1].SHA256 {
		t.Errorf("the two images differ: %s, %s", built[0].SHA256, built[1].SHA256)
	}
	for _, f := range []func(Kernel) string{
		func(k Kernel) string { return k.Image },
		func(k Kernel) string { return k.Vmlinux },
		func(k Kernel) string { return k.Config },
	} {
		a, err := os.ReadFile(f(built[0]))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(f(built[1]))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s and %s differ", f(built[0]), f(built[1]))
		}
	}
}

// testLog passes the build's progress lines to the test log.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(string(bytes.TrimSpace(p)))
	return len(p), nil
}
