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

	"alpinespine.org/spine/bench/debian"
	"alpinespine.org/spine/internal/format/keys"
	"alpinespine.org/spine/internal/host/build"
	"alpinespine.org/spine/internal/format/initramfs"
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
// Spine's own kernel and on Debian's generic kernel (with the modules bay0 needs, loaded by
// bench/modinit before bay0 starts), same QEMU flags, and compares the kernel uptime at which
// each is done; it also reports bay0's RSS with the demo personas running. The KDF time of the
// /persist unlock is reported apart and taken out of the figures.
func benchBoot(ctx context.Context, dir string) ([]result, error) {
	m, err := prepareMachine(ctx, dir)
	if err != nil {
		return nil, err
	}
	deb, err := prepareDebian(ctx, dir, m)
	if err != nil {
		return nil, err
	}
	var ours, debs, kdfs, trivial, debTrivial []float64
	var rss int
	for range bootRuns {
		up, kdf, r, err := bootDemo(ctx, dir, m, m.kernel.Vmlinux, m.initrd)
		if err != nil {
			return nil, fmt.Errorf("demo boot, Spine's kernel: %w", err)
		}
		ours, kdfs, rss = append(ours, up), append(kdfs, kdf), r
		if up, _, _, err = bootDemo(ctx, dir, m, deb.kernel, deb.initrd); err != nil {
			return nil, fmt.Errorf("demo boot, Debian's kernel: %w", err)
		}
		debs = append(debs, up)
		for _, k := range []struct {
			kernel string
			into   *[]float64
		}{{m.kernel.Vmlinux, &trivial}, {deb.kernel, &debTrivial}} {
			s, err := bootTrivial(ctx, k.kernel, m.trivial)
			if err != nil {
				return nil, err
			}
			*k.into = append(*k.into, s)
		}
	}
	o, d, t, dt, k := median(ours), median(debs), median(trivial), median(debTrivial), median(kdfs)
	return []result{
		{Name: "boot: kernel start to all personas running, Spine's kernel", Ours: fmt.Sprintf("%.2f s (+ KDF %.2f s)", o, k),
			Reference: fmt.Sprintf("Debian's kernel + modules %.2f s", d), Ratio: d / o, Floor: 1 / 0.6,
			Note: "TCG; ratio = Debian/ours; floor: ours at most 0.6x Debian's"},
		{Name: "boot: bay0 vs trivial init, Spine's kernel", Ours: fmt.Sprintf("%.2f s", o),
			Reference: fmt.Sprintf("trivial init %.2f s", t), Ratio: t / o,
			Note: "ratio = trivial/ours, 1.0 would be free; aim 0.77x (ours at most 1.3x trivial)"},
		{Name: "boot: bay0 vs trivial init, Debian's kernel", Ours: fmt.Sprintf("%.2f s", d),
			Reference: fmt.Sprintf("trivial init %.2f s", dt), Ratio: dt / d,
			Note: "for comparison: Debian's figure includes loading 28 modules"},
		{Name: "bay0 RSS, demo personas running", Ours: fmt.Sprintf("%d KiB", rss), Reference: "floor 16 MiB",
			Ratio: 16 * 1024 / float64(rss), Floor: 1, Note: "aim: under 10 MiB"},
	}, nil
}

// bootDemo boots the demo disk once and returns the uptime at which all personas ran, less the
// KDF time of the unlock, the KDF time, and bay0's RSS.
func bootDemo(ctx context.Context, dir string, m machine, kern, initrd string) (up, kdf float64, rss int, err error) {
	disk := filepath.Join(dir, "run.img")
	if err := copyFile(m.disk, disk); err != nil {
		return 0, 0, 0, err
	}
	a := vm.NewAnswerer([]byte(benchPassphrase))
	mach, err := vm.Start(ctx, vm.Config{Kernel: kern, Initrd: initrd, Disk: disk, Console: a, Stdin: a, Net: true, Timeout: 3 * time.Minute})
	if err != nil {
		return 0, 0, 0, err
	}
	line, err := mach.WaitFor("bay0: all personas running", 3*time.Minute)
	_ = mach.Kill()
	_, _ = mach.Wait()
	if err != nil {
		return 0, 0, 0, err
	}
	u := allUpRE.FindStringSubmatch(line)
	if u == nil {
		return 0, 0, 0, fmt.Errorf("unexpected line %q", line)
	}
	up, _ = strconv.ParseFloat(u[1], 64)
	rss, _ = strconv.Atoi(u[2])
	for _, l := range mach.Lines() {
		if k := kdfRE.FindStringSubmatch(l); k != nil {
			kdf, _ = strconv.ParseFloat(k[1], 64)
			if k[2] == "ms" {
				kdf /= 1000
			}
		}
	}
	return up - kdf, kdf, rss, nil
}

// bootTrivial boots the trivial init and returns the uptime at which it ran.
func bootTrivial(ctx context.Context, kern, initrd string) (float64, error) {
	tm, err := vm.Start(ctx, vm.Config{Kernel: kern, Initrd: initrd, Timeout: time.Minute})
	if err != nil {
		return 0, err
	}
	tl, err := tm.WaitFor("trivialinit: uptime", time.Minute)
	_, _ = tm.Wait()
	if err != nil {
		return 0, fmt.Errorf("trivial boot: %w", err)
	}
	tr := trivialRE.FindStringSubmatch(tl)
	if tr == nil {
		return 0, fmt.Errorf("unexpected line %q", tl)
	}
	return strconv.ParseFloat(tr[1], 64)
}

// debianMachine is Debian's generic kernel and the initramfs that loads its modules for bay0.
type debianMachine struct {
	kernel, initrd string
}

// prepareDebian fetches Debian's kernel (cached) and writes its initramfs: modinit as /init,
// then the same bay0 and keys as m's.
func prepareDebian(ctx context.Context, dir string, m machine) (debianMachine, error) {
	cache, err := kernel.DefaultCacheDir()
	if err != nil {
		return debianMachine{}, err
	}
	k, err := debian.Prepare(ctx, cache)
	if err != nil {
		return debianMachine{}, err
	}
	modinit := filepath.Join(dir, "modinit")
	if err := build.GoStatic(ctx, ".", "./bench/modinit", modinit); err != nil {
		return debianMachine{}, err
	}
	var bins [2][]byte
	for i, p := range []string{modinit, m.bay0} {
		if bins[i], err = os.ReadFile(p); err != nil {
			return debianMachine{}, err
		}
	}
	initrd := filepath.Join(dir, "debian-initrd.gz")
	f, err := os.Create(initrd)
	if err != nil {
		return debianMachine{}, err
	}
	defer f.Close()
	if err := debian.Initramfs(f, k, bins[0], bins[1], [][]byte{m.pub}); err != nil {
		return debianMachine{}, err
	}
	return debianMachine{kernel: k.Vmlinux, initrd: initrd}, f.Close()
}

const benchPassphrase = "bench passphrase"

// machine is a demo machine prepared once for the benchmarks that boot.
type machine struct {
	kernel          kernel.Kernel
	initrd, trivial string
	disk            string
	key             string
	pub             []byte // the trusted public key, PEM
	bay0            string
	v1, v2          string
}

func prepareMachine(ctx context.Context, dir string) (machine, error) {
	var m machine
	var err error
	m.kernel, err = kernel.Default(ctx, os.Stderr)
	if err != nil {
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
	m.pub = pub
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
		err = initramfs.Build(f, initramfs.Spec{Bay0: b, TrustedKeys: [][]byte{pub}})
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
