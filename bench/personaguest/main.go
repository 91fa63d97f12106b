// Command personaguest times persona starts against `crun run` and the `unshare` floor, on the
// build host or as /init of the benchmark's guest (see bench/persona.go). In the guest it times
// persona.Start (every namespace, the cgroup leaf with limits, the seccomp filter) against
// `crun run` of the same tree with the same namespaces, limits and an allowlist profile, and
// against the floor, `unshare -U -p -m -n -i -u -C --fork` of the same workload, alternating,
// in the same kernel, and prints one result line. Run on the build host as
// `personaguest host TREE BUNDLE CRUN CRUN-ROOT UNSHARE PERSONA-INIT RUNS`, it does the same
// without cgroups on any side (the host's controllers are cgroup v1). Ours launches through
// persona-init, the Spine's own (cmd/persona-init). Copied to /bin/true in the tree, this
// program is also the workload, which exits at once.
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
	"alpinespine.org/spine/internal/bay0/seccomp"
)

// Paths of the guest's initramfs, laid out by bench/persona.go.
const (
	guestTree   = "/personas/bench"
	guestBundle = "/bundle"
	guestCrun   = "/usr/bin/crun"
	guestShare  = "/usr/bin/unshare"
	guestInit   = "/bin/persona-init"
)

// setup is where the tree and the tools are, and how many launches to time.
type setup struct {
	tree, bundle, crun, crunRoot, unshare string
	// personaInit is the persona-init program ours launches through.
	personaInit string
	runs        int
	// cgroupParent is where our leaves go; "" starts without a cgroup (persona.StartUnbounded)
	// and runs crun with its cgroup manager disabled.
	cgroupParent string
}

func main() {
	if filepath.Base(os.Args[0]) == "true" {
		return
	}
	if a := os.Args; len(a) == 9 && a[1] == "host" {
		n, err := strconv.Atoi(a[8])
		if err == nil {
			err = hostMounts()
		}
		if err == nil {
			err = measure(setup{tree: a[2], bundle: a[3], crun: a[4], crunRoot: a[5], unshare: a[6], personaInit: a[7], runs: n})
		}
		if err != nil {
			fmt.Printf("BENCH-ERROR %v\n", err)
			os.Exit(1)
		}
		return
	}
	if err := guest(); err != nil {
		fmt.Printf("BENCH-ERROR %v\n", err)
	}
	// PID 1 must not return; the host reads the line and ends the machine.
	for {
		time.Sleep(time.Hour)
	}
}

// hostMounts keeps this process's mounts (in a mount namespace of its own) from the host's and
// mounts a cgroup2 hierarchy, without controllers, over the host's cgroup v1 ones: crun refuses
// to start beside v1 hierarchies even with its cgroup manager disabled.
func hostMounts() error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := unix.Mount("cgroup2", "/sys/fs/cgroup", "cgroup2", 0, ""); err != nil {
		return fmt.Errorf("mount cgroup2: %w", err)
	}
	return nil
}

// guest prepares the guest's file systems and cgroups, then measures.
func guest() error {
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
	return measure(setup{tree: guestTree, bundle: guestBundle, crun: guestCrun, crunRoot: "/run/crun", unshare: guestShare,
		personaInit: guestInit, runs: n, cgroupParent: parent})
}

// measure times s.runs launches of each side, alternating, after a few warm-up rounds, and
// prints the result line bench/persona.go parses.
func measure(s setup) error {
	spec := persona.Spec{Name: "bench", Tree: s.tree, Exec: []string{"/bin/true"}, UID: persona.IDRange(0), GID: persona.IDRange(0),
		Limits: persona.Limits{CPUMax: "100000 100000", MemoryMax: 64 << 20, PidsMax: 32}, TmpSize: 16 << 20, RunSize: 1 << 20,
		Self: s.personaInit, CgroupParent: s.cgroupParent}
	start := persona.Start
	crunArgs := []string{"--cgroup-manager=cgroupfs"}
	if s.cgroupParent == "" {
		start, crunArgs = persona.StartUnbounded, []string{"--cgroup-manager=disabled"}
	}
	// Ours is timed from compiling the filter (bay0 compiles it at run time; crun compiles its
	// profile on every run) to the instance destroyed, as crun run ends with the container
	// deleted.
	ours := func(int) (time.Duration, time.Duration, error) {
		t0 := time.Now()
		filter, err := seccomp.Compile(seccomp.Options{})
		if err != nil {
			return 0, 0, err
		}
		sp := spec
		if sp.Seccomp, err = filter.MarshalBinary(); err != nil {
			return 0, 0, err
		}
		in, err := start(sp, persona.SelfWaiting{}, io.Discard)
		if err != nil {
			return 0, 0, err
		}
		if ws := <-in.Exited(); !ws.Exited() || ws.ExitStatus() != 0 {
			return 0, 0, fmt.Errorf("persona workload: %v", ws)
		}
		if err := in.Destroy(); err != nil {
			return 0, 0, err
		}
		return time.Since(t0), in.Startup(), nil
	}
	command := func(name string, args ...string) (time.Duration, time.Duration, error) {
		t0 := time.Now()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %w: %s", name, err, out)
		}
		return time.Since(t0), 0, nil
	}
	crun := func(i int) (time.Duration, time.Duration, error) {
		args := append(slices.Clone(crunArgs), "--root="+s.crunRoot, "run", "--bundle", s.bundle, fmt.Sprintf("c%d", i))
		return command(s.crun, args...)
	}
	floor := func(int) (time.Duration, time.Duration, error) {
		return command(s.unshare, "-U", "-p", "-m", "-n", "-i", "-u", "-C", "--fork", filepath.Join(s.tree, "bin/true"))
	}
	sides := []func(int) (time.Duration, time.Duration, error){ours, crun, floor}
	times := make([][]time.Duration, len(sides))
	var execs []time.Duration
	warm := min(5, s.runs)
	for i := -warm; i < s.runs; i++ {
		for k, side := range sides {
			d, up, err := side(i + warm)
			if err != nil {
				return err
			}
			if i < 0 {
				continue
			}
			times[k] = append(times[k], d)
			if k == 0 {
				execs = append(execs, up)
			}
		}
	}
	fmt.Printf("BENCH-RESULT runs %d ours %d %d exec %d %d crun %d %d floor %d %d\n", s.runs,
		pct(times[0], 50), pct(times[0], 95), pct(execs, 50), pct(execs, 95),
		pct(times[1], 50), pct(times[1], 95), pct(times[2], 50), pct(times[2], 95))
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
