// Command personaguest is /init of the persona benchmark's guest (see bench/persona.go): it
// times persona starts (persona.Start: every namespace, the cgroup leaf with limits, the
// seccomp filter) against `crun run` of the same tree with the same namespaces, limits and an
// allowlist profile, alternating, in the same kernel, and prints one result line. Copied to
// /bin/true in the tree, it is also the workload, which exits at once.
package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/bay0/persona"
	"alpinespine.org/spine/internal/bay0/personainit"
	"alpinespine.org/spine/internal/bay0/seccomp"
)

// Paths of the guest's initramfs, laid out by bench/persona.go.
const (
	tree   = "/personas/bench"
	bundle = "/bundle"
	crun   = "/usr/bin/crun"
)

func main() {
	if filepath.Base(os.Args[0]) == "true" {
		return
	}
	if personainit.Inside() && len(os.Args) > 1 && os.Args[1] == persona.InitArg {
		personainit.Main(os.Args[2:])
	}
	if err := run(); err != nil {
		fmt.Printf("BENCH-ERROR %v\n", err)
	}
	// PID 1 must not return; the host reads the line and ends the machine.
	for {
		time.Sleep(time.Hour)
	}
}

func run() error {
	if err := leaveRootfs(); err != nil {
		return err
	}
	for _, m := range []struct{ src, dst, fs string }{
		{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"},
		{"cgroup2", "/sys/fs/cgroup", "cgroup2"}, {"tmpfs", "/tmp", "tmpfs"}, {"tmpfs", "/run", "tmpfs"},
	} {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.src, m.dst, m.fs, 0, ""); err != nil {
			return fmt.Errorf("mount %s: %w", m.dst, err)
		}
	}
	n, _ := strconv.Atoi(os.Getenv("BENCH_RUNS"))
	if n <= 0 {
		n = 100
	}
	parent := "/sys/fs/cgroup/personas"
	if err := persona.PrepareCgroups(parent); err != nil {
		return err
	}
	filter, err := seccomp.Compile(seccomp.Options{})
	if err != nil {
		return err
	}
	fb, _ := filter.MarshalBinary()
	spec := persona.Spec{Name: "bench", Tree: tree, Exec: []string{"/bin/true"}, UID: persona.IDRange(0), GID: persona.IDRange(0),
		Limits: persona.Limits{CPUMax: "100000 100000", MemoryMax: 64 << 20, PidsMax: 32}, TmpSize: 16 << 20, RunSize: 1 << 20,
		Seccomp: fb, Self: "/proc/self/exe", CgroupParent: parent}
	ours := func() (time.Duration, time.Duration, error) {
		start := time.Now()
		in, err := persona.Start(spec, persona.SelfWaiting{}, io.Discard)
		if err != nil {
			return 0, 0, err
		}
		if ws := <-in.Exited(); !ws.Exited() || ws.ExitStatus() != 0 {
			return 0, 0, fmt.Errorf("persona workload: %v", ws)
		}
		d := time.Since(start)
		return d, in.Startup(), in.Destroy()
	}
	theirs := func(i int) (time.Duration, error) {
		start := time.Now()
		cmd := exec.Command(crun, "--cgroup-manager=cgroupfs", "--root=/run/crun", "run", "--bundle", bundle, fmt.Sprintf("c%d", i))
		out, err := cmd.CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("crun: %w: %s", err, out)
		}
		return time.Since(start), nil
	}
	var o, s, c []time.Duration
	for i := -5; i < n; i++ { // five warm-up rounds
		d, up, err := ours()
		if err != nil {
			return err
		}
		e, err := theirs(i + 5)
		if err != nil {
			return err
		}
		if i >= 0 {
			o, s, c = append(o, d), append(s, up), append(c, e)
		}
	}
	fmt.Printf("BENCH-RESULT runs %d ours %d %d exec %d %d crun %d %d\n", n,
		pct(o, 50), pct(o, 95), pct(s, 50), pct(s, 95), pct(c, 50), pct(c, 95))
	return nil
}

// pct is the p-th percentile in nanoseconds (nearest rank).
func pct(d []time.Duration, p int) int64 {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p+99)/100 - 1
	return int64(s[max(i, 0)])
}

// leaveRootfs copies the initramfs into a tmpfs and makes that the root, as stage 1 does with
// the Spine: pivot_root (which persona-init and crun use) refuses to move the initial rootfs.
func leaveRootfs() error {
	const nr = "/newroot"
	if err := os.Mkdir(nr, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", nr, "tmpfs", 0, "mode=755"); err != nil {
		return fmt.Errorf("mount new root: %w", err)
	}
	err := filepath.Walk("/", func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if p == nr {
			return filepath.SkipDir
		}
		dst := filepath.Join(nr, p)
		switch {
		case fi.IsDir():
			return os.MkdirAll(dst, fi.Mode().Perm())
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(dst, b, fi.Mode().Perm())
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("copy initramfs: %w", err)
	}
	if err := unix.Chdir(nr); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move new root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return err
	}
	return unix.Chdir("/")
}
