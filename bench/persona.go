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
	"strings"
	"time"

	"alpinespine.org/spine/internal/bay0/persona"
	"alpinespine.org/spine/internal/bay0/seccomp"
	"alpinespine.org/spine/internal/format/initramfs"
	"alpinespine.org/spine/internal/host/kernel"
	"alpinespine.org/spine/internal/host/vm"
)

const personaRuns = 100

// benchTree is the persona's tree in the benchmark guest (bench/personaguest).
const benchTree = "/personas/bench"

// benchPersona boots a guest whose /init (bench/personaguest) starts a persona running /bin/true
// personaRuns times with persona.Start, alternating with `crun run` of the same tree with the
// same namespaces (user, pid, mount, network, ipc, uts, cgroup), limits (cpu.max, memory.max,
// swap 0, pids.max), read-only root, masked paths and an allowlist seccomp profile. Both are
// timed from the start call to the workload's exit. The guest runs under the same kernel as a
// Spine (cgroup v2; the build host's controllers are v1) and under TCG, so absolute numbers are
// slow; the ratio is the figure of merit.
func benchPersona(ctx context.Context, dir string) ([]result, error) {
	crun, err := exec.LookPath("crun")
	if err != nil {
		return nil, fmt.Errorf("crun (Debian package crun): %w", err)
	}
	k, err := kernel.Default(ctx, os.Stderr)
	if err != nil {
		return nil, err
	}
	guest := filepath.Join(dir, "init")
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", guest, "alpinespine.org/spine/bench/personaguest")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build guest: %w: %s", err, out)
	}
	initrd := filepath.Join(dir, "initrd.cpio")
	if err := personaInitrd(initrd, guest, crun); err != nil {
		return nil, err
	}
	var console bytes.Buffer
	m, err := vm.Start(ctx, vm.Config{Kernel: k.Vmlinux, Initrd: initrd, MemoryMiB: 1024, Timeout: 30 * time.Minute,
		Cmdline: fmt.Sprintf("BENCH_RUNS=%d quiet", personaRuns), Console: &console})
	if err != nil {
		return nil, err
	}
	defer m.Kill()
	i, line, err := m.WaitForAny([]string{"BENCH-RESULT", "BENCH-ERROR"}, 30*time.Minute)
	if err != nil {
		return nil, fmt.Errorf("persona benchmark guest: %w", err)
	}
	if i == 1 {
		return nil, fmt.Errorf("persona benchmark guest: %s", line)
	}
	var runs int
	var o50, o95, s50, s95, c50, c95 int64
	if _, err := fmt.Sscanf(line[strings.Index(line, "BENCH-RESULT"):], "BENCH-RESULT runs %d ours %d %d exec %d %d crun %d %d",
		&runs, &o50, &o95, &s50, &s95, &c50, &c95); err != nil {
		return nil, fmt.Errorf("parse %q: %w", line, err)
	}
	ms := func(ns int64) string { return fmt.Sprintf("%.1fms", float64(ns)/1e6) }
	note := fmt.Sprintf("%d starts each in a TCG guest, start to exit of /bin/true; ours clone to exec %s median, %s p95",
		runs, ms(s50), ms(s95))
	return []result{
		{Name: "persona start median", Ours: ms(o50), Reference: "crun " + ms(c50), Ratio: float64(c50) / float64(o50), Floor: 2, Note: note},
		{Name: "persona start p95", Ours: ms(o95), Reference: "crun " + ms(c95), Ratio: float64(c95) / float64(o95)},
	}, nil
}

// personaInitrd writes the benchmark guest's initramfs: the guest as /init and as the tree's
// /bin/true, crun with the shared libraries it links, and crun's bundle.
func personaInitrd(out, guest, crun string) error {
	files := map[string]string{"/init": guest, benchTree + "/bin/true": guest, "/usr/bin/crun": crun}
	libs, err := sharedLibraries(crun)
	if err != nil {
		return err
	}
	for _, l := range libs {
		files[l] = l
	}
	cfg, err := crunConfig()
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

// crunConfig is the OCI bundle config matching persona.Start's launch of the benchmark spec.
func crunConfig() ([]byte, error) {
	var names []string
	for _, n := range seccomp.Allowlist() {
		if n != "clone3" {
			names = append(names, n)
		}
	}
	ids := []map[string]int{{"containerID": 0, "hostID": int(persona.IDRange(1)), "size": persona.IDBlock}}
	none := []string{}
	cfg := map[string]any{
		"ociVersion": "1.0.2",
		"process": map[string]any{
			"terminal": false, "user": map[string]int{"uid": 0, "gid": 0}, "args": []string{"/bin/true"},
			"env": []string{"PATH=/bin"}, "cwd": "/", "noNewPrivileges": true,
			"capabilities": map[string][]string{"bounding": none, "effective": none, "permitted": none, "inheritable": none, "ambient": none},
		},
		"root":     map[string]any{"path": benchTree, "readonly": true},
		"hostname": "bench",
		"mounts": []map[string]any{
			{"destination": "/proc", "type": "proc", "source": "proc", "options": []string{"nosuid", "noexec", "nodev"}},
			{"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": []string{"nosuid", "noexec", "mode=755", "size=64k"}},
			{"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": []string{"nosuid", "nodev", "noexec", "size=16m"}},
			{"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": []string{"nosuid", "nodev", "noexec", "size=1m"}},
		},
		"linux": map[string]any{
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
		},
	}
	return json.MarshalIndent(cfg, "", "  ")
}
