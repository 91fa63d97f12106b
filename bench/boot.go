package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"alpinespine.org/spine/internal/format/keys"
	"alpinespine.org/spine/internal/host/build"
	"alpinespine.org/spine/internal/host/initramfs"
	"alpinespine.org/spine/internal/host/kernel"
	"alpinespine.org/spine/internal/host/persistfmt"
	"alpinespine.org/spine/internal/host/provision"
	"alpinespine.org/spine/internal/host/vm"
)

const bootRuns = 3

var (
	allUpRE   = regexp.MustCompile(`bay0: all personas running: uptime ([0-9.]+)s, rss (\d+) KiB`)
	kdfRE     = regexp.MustCompile(`key derived in ([0-9.]+)(ms|s)`)
	trivialRE = regexp.MustCompile(`trivialinit: uptime ([0-9.]+)`)
)

// benchBoot boots the demo Spine (real verity, LUKS, cgroups, personas) and a trivial init on
// the same kernel with the same QEMU flags, and compares the kernel uptime at which each is
// done; it also reports bay0's RSS with the demo personas running. The KDF time of the
// /persist unlock is reported apart and taken out of our figure.
func benchBoot(ctx context.Context, dir string) ([]result, error) {
	m, err := prepareMachine(ctx, dir)
	if err != nil {
		return nil, err
	}
	var ours, kdfs, trivial []float64
	var rss int
	for range bootRuns {
		disk := filepath.Join(dir, "run.img")
		if err := copyFile(m.disk, disk); err != nil {
			return nil, err
		}
		a := vm.NewAnswerer([]byte(benchPassphrase))
		mach, err := vm.Start(ctx, vm.Config{Kernel: m.kernel.Vmlinux, Initrd: m.initrd, Disk: disk, Console: a, Stdin: a, Net: true, Timeout: 3 * time.Minute})
		if err != nil {
			return nil, err
		}
		line, err := mach.WaitFor("bay0: all personas running", 3*time.Minute)
		_ = mach.Kill()
		_, _ = mach.Wait()
		if err != nil {
			return nil, fmt.Errorf("demo boot: %w", err)
		}
		up := allUpRE.FindStringSubmatch(line)
		if up == nil {
			return nil, fmt.Errorf("unexpected line %q", line)
		}
		sec, _ := strconv.ParseFloat(up[1], 64)
		rss, _ = strconv.Atoi(up[2])
		kdf := 0.0
		for _, l := range mach.Lines() {
			if k := kdfRE.FindStringSubmatch(l); k != nil {
				kdf, _ = strconv.ParseFloat(k[1], 64)
				if k[2] == "ms" {
					kdf /= 1000
				}
			}
		}
		ours, kdfs = append(ours, sec-kdf), append(kdfs, kdf)

		tm, err := vm.Start(ctx, vm.Config{Kernel: m.kernel.Vmlinux, Initrd: m.trivial, Timeout: time.Minute})
		if err != nil {
			return nil, err
		}
		tl, err := tm.WaitFor("trivialinit: uptime", time.Minute)
		_, _ = tm.Wait()
		if err != nil {
			return nil, fmt.Errorf("trivial boot: %w", err)
		}
		tr := trivialRE.FindStringSubmatch(tl)
		if tr == nil {
			return nil, fmt.Errorf("unexpected line %q", tl)
		}
		s, _ := strconv.ParseFloat(tr[1], 64)
		trivial = append(trivial, s)
	}
	o, t, k := median(ours), median(trivial), median(kdfs)
	return []result{
		{Name: "boot: kernel start to all personas running", Ours: fmt.Sprintf("%.2f s (+ KDF %.2f s)", o, k),
			Reference: fmt.Sprintf("trivial init %.2f s", t), Ratio: t / o,
			Note: "TCG; ratio = trivial/ours, so 1.0 would be free"},
		{Name: "bay0 RSS, demo personas running", Ours: fmt.Sprintf("%d KiB", rss), Reference: "floor 16 MiB",
			Ratio: 16 * 1024 / float64(rss), Floor: 1, Note: "aim: under 10 MiB"},
	}, nil
}

const benchPassphrase = "bench passphrase"

// machine is a demo machine prepared once for the benchmarks that boot.
type machine struct {
	kernel          kernel.Kernel
	initrd, trivial string
	disk            string
	key             string
	bay0            string
	v1, v2          string
}

func prepareMachine(ctx context.Context, dir string) (machine, error) {
	var m machine
	cache, err := kernel.DefaultCacheDir()
	if err != nil {
		return m, err
	}
	if m.kernel, err = kernel.Prepare(ctx, cache); err != nil {
		return m, err
	}
	bay0 := filepath.Join(dir, "bay0")
	if err := build.GoStatic(ctx, ".", "./cmd/bay0", bay0); err != nil {
		return m, err
	}
	trivialBin := filepath.Join(dir, "trivialinit")
	if err := build.GoStatic(ctx, ".", "./bench/trivialinit", trivialBin); err != nil {
		return m, err
	}
	kd := filepath.Join(dir, "keys")
	if err := keys.Generate(kd); err != nil {
		return m, err
	}
	m.key = filepath.Join(kd, keys.PrivateFile)
	priv, err := keys.LoadPrivate(m.key)
	if err != nil {
		return m, err
	}
	pub, err := os.ReadFile(filepath.Join(kd, keys.PublicFile))
	if err != nil {
		return m, err
	}
	img := filepath.Join(dir, "demo-v1.spine")
	m.v1, m.v2, m.bay0 = img, filepath.Join(dir, "demo-v2.spine"), bay0
	for v, out := range map[uint64]string{1: img, 2: m.v2} {
		if _, err := build.Build(ctx, build.Options{Config: "demo/spine.toml", Key: priv, Bay0: bay0, Out: out, Epoch: 1767225600,
			Version: v, Kernel: m.kernel.Release}); err != nil {
			return m, err
		}
	}
	for _, in := range []struct {
		out  *string
		bin  string
		name string
	}{{&m.initrd, bay0, "initrd.gz"}, {&m.trivial, trivialBin, "trivial.gz"}} {
		b, err := os.ReadFile(in.bin)
		if err != nil {
			return m, err
		}
		*in.out = filepath.Join(dir, in.name)
		f, err := os.Create(*in.out)
		if err != nil {
			return m, err
		}
		err = initramfs.Build(f, initramfs.Spec{Bay0: b, ModulesDir: m.kernel.ModulesDir, Release: m.kernel.Release, TrustedKeys: [][]byte{pub}})
		f.Close()
		if err != nil {
			return m, err
		}
	}
	m.disk = filepath.Join(dir, "disk.img")
	err = provision.Create(provision.Options{Out: m.disk, A: img, PersistSize: 64 << 20, Seed: "bench",
		Passphrase: []byte(benchPassphrase), KDF: persistfmt.TestKDF()})
	return m, err
}

func copyFile(src, dst string) error {
	cmd := exec.Command("cp", "--sparse=always", src, dst)
	if o, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("copy %s: %w: %s", src, err, o)
	}
	return nil
}
