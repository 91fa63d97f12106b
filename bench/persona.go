package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/bay0/launch"
	"alpinespine.org/spine/internal/bay0/persona"
	"alpinespine.org/spine/internal/bay0/seccomp"
	"alpinespine.org/spine/internal/format/initramfs"
	"alpinespine.org/spine/internal/host/build"
	"alpinespine.org/spine/internal/host/kernel"
	"alpinespine.org/spine/internal/host/vm"
)

const (
	personaRuns      = 100
	personaQuickRuns = 1
)

// benchTree is the persona's tree in the benchmark guest (bench/personaguest).
const benchTree = "/personas/bench"

// benchPersona times persona starts against `crun run` and against the floor, `unshare -U -p
// -m -n -i -u -C --fork` of the same workload, alternating, in one run: on the build host
// (namespaces, mounts, seccomp; no cgroup on any side, the host's controllers being v1), then
// in a guest (bench/personaguest as /init) under the Spine's kernel with cgroup v2 limits
// (cpu.max, memory.max, swap 0, pids.max) on ours and crun. Ours and crun launch the same tree
// with the same namespaces (user, pid, mount, network, ipc, uts, cgroup), read-only root,
// masked paths and an allowlist seccomp profile; both are timed from start (ours: compiling the
// filter, as bay0 does at run time and crun does on every run) to the workload's exit and the
// instance torn down. The workload is a static Go program that exits at once, on every side.
func benchPersona(ctx context.Context, cfg config, dir string) error {
	crun, err := exec.LookPath("crun")
	if err != nil {
		return fmt.Errorf("crun (Debian package crun): %w", err)
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		return fmt.Errorf("unshare (Debian package util-linux): %w", err)
	}
	runs := personaRuns
	if cfg.quick {
		runs = personaQuickRuns
	}
	guest := filepath.Join(dir, "init")
	if err := build.GoStatic(ctx, ".", "./bench/personaguest", guest); err != nil {
		return fmt.Errorf("build persona guest: %w", err)
	}
	personaInit := filepath.Join(dir, "persona-init")
	if err := build.GoStatic(ctx, ".", "./cmd/persona-init", personaInit); err != nil {
		return fmt.Errorf("build persona-init: %w", err)
	}
	const shared = "user, pid, mount, net, ipc, uts and cgroup namespaces, read-only root, tmpfs /dev /tmp /run, allowlist seccomp compiled per start; " +
		"start to exit of a static Go /bin/true, teardown included"

	host, err := personaOnHost(ctx, dir, guest, personaInit, crun, unshare, runs)
	if err != nil {
		return err
	}
	initSize := "?"
	if fi, err := os.Stat(personaInit); err == nil {
		initSize = fmt.Sprintf("%.1f MiB", float64(fi.Size())/(1<<20))
	}
	cond := fmt.Sprintf("host kernel %s, no cgroup on any side (host is cgroup v1; a private cgroup2 /sys/fs/cgroup for crun); %s; ours through the Spine's persona-init (cmd/persona-init, %s); median of %d alternating, p95 ours %s crun %s; ours clone to exec %s",
		kernelRelease(), shared, initSize, host.runs, showNS(host.ours[1]), showNS(host.crun[1]), showNS(host.exec[0]))
	// Issue 17's floors: at least 2x faster than crun, at most 1.6x the unshare floor.
	vsCrun := nsRow("persona-start-host", host.ours[0], "crun run", host.crun[0], cond)
	vsCrun.Floor = 2
	cfg.emit(vsCrun)
	vsFloor := nsRow("persona-start-host-floor", host.ours[0], "unshare floor", host.floor[0], floorCond(host, runs))
	vsFloor.Floor = 1 / 1.6
	cfg.emit(vsFloor)

	k, err := guestKernel(ctx)
	if err != nil {
		return err
	}
	initrd := filepath.Join(dir, "initrd.cpio")
	if err := personaInitrd(initrd, guest, personaInit, crun, unshare); err != nil {
		return err
	}
	var console bytes.Buffer
	m, err := vm.Start(ctx, vm.Config{Kernel: k.Vmlinux, Initrd: initrd, MemoryMiB: 1024, Timeout: 30 * time.Minute,
		Cmdline: fmt.Sprintf("BENCH_RUNS=%d quiet", runs), Console: &console})
	if err != nil {
		return err
	}
	defer func() { _ = m.Kill(); _, _ = m.Wait() }()
	i, line, err := m.WaitForAny([]string{"BENCH-RESULT", "BENCH-ERROR"}, 30*time.Minute)
	if err != nil {
		return fmt.Errorf("persona benchmark guest: %w", err)
	}
	if i == 1 {
		return fmt.Errorf("persona benchmark guest: %s", line)
	}
	g, err := parsePersonaResult(line)
	if err != nil {
		return err
	}
	cond = fmt.Sprintf("TCG guest, kernel %s, cgroup v2 leaf with limits for ours and crun; %s; median of %d alternating, p95 ours %s crun %s; ours clone to exec %s",
		k.Release, shared, g.runs, showNS(g.ours[1]), showNS(g.crun[1]), showNS(g.exec[0]))
	r := nsRow("persona-start-guest", g.ours[0], "crun run", g.crun[0], cond)
	r.Floor = 1
	cfg.emit(r)
	cfg.emit(nsRow("persona-start-guest-floor", g.ours[0], "unshare floor", g.floor[0], "TCG guest; "+floorCond(g, runs)))
	return nil
}

// personaResult is what personaguest measured: medians and 95th percentiles in nanoseconds.
type personaResult struct {
	runs                    int
	ours, exec, crun, floor [2]int64
}

func parsePersonaResult(line string) (personaResult, error) {
	var r personaResult
	i := strings.Index(line, "BENCH-RESULT")
	if i < 0 {
		return r, fmt.Errorf("no result in %q", line)
	}
	if _, err := fmt.Sscanf(line[i:], "BENCH-RESULT runs %d ours %d %d exec %d %d crun %d %d floor %d %d", &r.runs,
		&r.ours[0], &r.ours[1], &r.exec[0], &r.exec[1], &r.crun[0], &r.crun[1], &r.floor[0], &r.floor[1]); err != nil {
		return r, fmt.Errorf("parse %q: %w", line, err)
	}
	return r, nil
}

// personaOnHost lays out the tree and crun's bundle in dir and runs personaguest on the host.
func personaOnHost(ctx context.Context, dir, guest, personaInit, crun, unshare string, runs int) (personaResult, error) {
	// The persona's mapped ids must reach the tree; MkdirTemp made dir private to root.
	if err := os.Chmod(dir, 0o755); err != nil {
		return personaResult{}, err
	}
	tree := filepath.Join(dir, "host-tree")
	for _, d := range []string{"bin", "proc", "dev", "tmp", "run"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			return personaResult{}, err
		}
	}
	b, err := os.ReadFile(guest)
	if err != nil {
		return personaResult{}, err
	}
	if err := os.WriteFile(filepath.Join(tree, "bin/true"), b, 0o755); err != nil {
		return personaResult{}, err
	}
	bundle := filepath.Join(dir, "host-bundle")
	if err := os.MkdirAll(bundle, 0o755); err != nil {
		return personaResult{}, err
	}
	cfg, err := crunConfig(tree, false)
	if err != nil {
		return personaResult{}, err
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), cfg, 0o644); err != nil {
		return personaResult{}, err
	}
	cmd := exec.CommandContext(ctx, guest, "host", tree, bundle, crun, filepath.Join(dir, "crun-root"), unshare, personaInit, strconv.Itoa(runs))
	// A mount namespace of its own, where personaguest mounts a cgroup2 /sys/fs/cgroup: crun
	// refuses to run beside the host's cgroup v1 hierarchies, even with its manager disabled.
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS}
	out, err := cmd.Output()
	if err != nil {
		return personaResult{}, fmt.Errorf("persona benchmark on the host: %w: %s", err, out)
	}
	return parsePersonaResult(string(out))
}

func floorCond(r personaResult, runs int) string {
	return fmt.Sprintf("ratio = floor / ours; the floor is unshare -U -p -m -n -i -u -C --fork of the same /bin/true: namespaces only, no mounts, no seccomp, no limits; median of %d, p95 floor %s ours %s",
		runs, showNS(r.floor[1]), showNS(r.ours[1]))
}

func nsRow(name string, ours int64, ref string, theirs int64, cond string) result {
	return timed(name, time.Duration(ours), ref, time.Duration(theirs), cond)
}

func showNS(ns int64) string { return showMS(float64(ns) / 1e6) }

// kernelRelease is the running kernel's release, as uname says.
func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// guestKernel is the kernel the benchmark guests boot: the one a Spine runs.
func guestKernel(ctx context.Context) (kernel.Kernel, error) {
	return kernel.Default(ctx, nil)
}

// personaInitrd writes the benchmark guest's initramfs: the guest as /init and as the tree's
// /bin/true, persona-init at its place in a Spine, crun and unshare with the shared libraries
// they link, and crun's bundle.
func personaInitrd(out, guest, personaInit, crun, unshare string) error {
	files := map[string]string{"/init": guest, benchTree + "/bin/true": guest, launch.InitPath: personaInit,
		"/usr/bin/crun": crun, "/usr/bin/unshare": unshare}
	for _, bin := range []string{crun, unshare} {
		libs, err := sharedLibraries(bin)
		if err != nil {
			return err
		}
		for _, l := range libs {
			files[l] = l
		}
	}
	cfg, err := crunConfig(benchTree, true)
	if err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	w := initramfs.NewWriter(f)
	dirs := map[string]bool{}
	var mkdir func(string) error
	mkdir = func(d string) error {
		if d == "/" || dirs[d] {
			return nil
		}
		if err := mkdir(path.Dir(d)); err != nil {
			return err
		}
		dirs[d] = true
		return w.AddDir(strings.TrimPrefix(d, "/"), 0o755)
	}
	for _, d := range []string{"/proc", "/sys", "/dev", "/tmp", "/run", "/bundle",
		benchTree + "/proc", benchTree + "/dev", benchTree + "/tmp", benchTree + "/run"} {
		if err := mkdir(d); err != nil {
			return err
		}
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		b, err := os.ReadFile(files[n])
		if err != nil {
			return err
		}
		if err := mkdir(path.Dir(n)); err != nil {
			return err
		}
		if err := w.AddFile(strings.TrimPrefix(n, "/"), 0o755, b); err != nil {
			return err
		}
	}
	if err := w.AddFile("bundle/config.json", 0o644, cfg); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return f.Close()
}

// sharedLibraries lists the resolved paths of bin's shared libraries and loader.
func sharedLibraries(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", bin, err)
	}
	var libs []string
	for _, m := range regexp.MustCompile(`(/[^ ]+) \(0x`).FindAllStringSubmatch(string(out), -1) {
		libs = append(libs, m[1])
	}
	return libs, nil
}

// crunConfig is the OCI bundle config matching persona.Start's launch of the benchmark spec
// with tree as root; without cgroups, it sets no resources (persona.StartUnbounded's match).
func crunConfig(tree string, cgroups bool) ([]byte, error) {
	var names []string
	for _, n := range seccomp.Allowlist() {
		if n != "clone3" {
			names = append(names, n)
		}
	}
	ids := []map[string]int{{"containerID": 0, "hostID": int(persona.IDRange(1)), "size": persona.IDBlock}}
	none := []string{}
	linux := map[string]any{
		"uidMappings": ids, "gidMappings": ids,
		"namespaces": []map[string]string{{"type": "user"}, {"type": "pid"}, {"type": "mount"}, {"type": "network"},
			{"type": "ipc"}, {"type": "uts"}, {"type": "cgroup"}},
		"resources": map[string]any{
			"memory": map[string]int64{"limit": 64 << 20, "swap": 64 << 20},
			"cpu":    map[string]int64{"quota": 100000, "period": 100000},
			"pids":   map[string]int64{"limit": 32},
		},
		"cgroupsPath":   "/crunbench",
		"maskedPaths":   []string{"/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/sched_debug", "/proc/scsi", "/proc/sysrq-trigger", "/proc/timer_list", "/proc/timer_stats"},
		"readonlyPaths": []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys"},
		"seccomp": map[string]any{
			"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1, "architectures": []string{"SCMP_ARCH_X86_64"},
			"syscalls": []map[string]any{
				{"names": names, "action": "SCMP_ACT_ALLOW"},
				{"names": []string{"clone3"}, "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
			},
		},
	}
	cfg := map[string]any{
		"ociVersion": "1.0.2",
		"process": map[string]any{
			"terminal": false, "user": map[string]int{"uid": 0, "gid": 0}, "args": []string{"/bin/true"},
			"env": []string{"PATH=/bin"}, "cwd": "/", "noNewPrivileges": true,
			"capabilities": map[string][]string{"bounding": none, "effective": none, "permitted": none, "inheritable": none, "ambient": none},
		},
		"root":     map[string]any{"path": tree, "readonly": true},
		"hostname": "bench",
		"mounts": []map[string]any{
			{"destination": "/proc", "type": "proc", "source": "proc", "options": []string{"nosuid", "noexec", "nodev"}},
			{"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": []string{"nosuid", "noexec", "mode=755", "size=64k"}},
			{"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": []string{"nosuid", "nodev", "noexec", "size=16m"}},
			{"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": []string{"nosuid", "nodev", "noexec", "size=1m"}},
		},
		"linux": linux,
	}
	if !cgroups {
		delete(linux, "resources")
		delete(linux, "cgroupsPath")
	}
	return json.MarshalIndent(cfg, "", "  ")
}
