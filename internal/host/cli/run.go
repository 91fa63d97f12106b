package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/bay0/denial"
	"alpinespine.org/spine/internal/bay0/persona"
	"alpinespine.org/spine/internal/bay0/seccomp"
	"alpinespine.org/spine/internal/format/syscalls"
	"alpinespine.org/spine/internal/host/build"
)

// complainBurst is kernel.printk_ratelimit_burst while spine run --complain runs: the kernel's
// default (10 records per 5 s) would drop most of a workload's first calls. The old value is
// put back at the end.
const complainBurst = "10000"

func runCmd() command {
	return command{name: "run", synopsis: "run one persona of a configuration on this host, in its namespaces and under its filter",
		usage: "PERSONA [-- ARGS]",
		flags: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			cfgPath := fs.String("config", "", "build configuration (TOML)")
			complain := fs.Bool("complain", false, "allow and log every call the filter would refuse, then print the syscalls line that lets the workload run")
			data := fs.String("data", "", "directory to mount at /data (default: a new empty one)")
			return func(ctx context.Context, env *Env, args []string) error {
				if *cfgPath == "" || len(args) == 0 || len(args) > 1 && args[1] != "--" {
					return errUsage
				}
				return runPersona(ctx, env, *cfgPath, args[0], args[min(2, len(args)):], *data, *complain)
			}
		}}
}

func runPersona(ctx context.Context, env *Env, cfgPath, name string, extra []string, data string, complain bool) error {
	cfg, err := build.LoadConfig(cfgPath)
	if err != nil {
		return err
	}
	root, err := os.MkdirTemp("", "spine-run-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	// The tree is unpacked under a directory the persona's uids can traverse.
	if err := os.Chmod(root, 0o755); err != nil {
		return err
	}
	q, err := build.StagePersona(ctx, cfg, name, root, "")
	if err != nil {
		return err
	}
	if len(extra) > 0 {
		q.Exec = append(q.Exec[:1:1], extra...)
	}
	persist := ""
	if q.Data {
		persist = filepath.Join(root, "persist")
		if data != "" {
			persist = filepath.Dir(data)
			q.Name = filepath.Base(data)
		}
		if err := os.MkdirAll(persist, 0o755); err != nil {
			return err
		}
	}
	filter, err := seccomp.Compile(seccomp.Options{Syscalls: q.Syscalls, Protocols: q.Protocols, Complain: complain})
	if err != nil {
		return err
	}
	fb, err := filter.MarshalBinary()
	if err != nil {
		return err
	}
	spec, err := persona.NewSpec(q, 0, root, persist, fb)
	if err != nil {
		return err
	}
	spec.Name, spec.Tree = name, filepath.Join(root, "personas", name)
	// The build host runs this binary's own persona-init mode (cmd/spine), not the image's.
	spec.Self = "/proc/self/exe"
	fitRlimits(&spec, env.Stderr)
	if q.Network == "uplink" {
		fmt.Fprintf(env.Stderr, "spine run: %s has an uplink on a machine; here it has loopback only\n", name)
	}
	var kmsg *os.File
	if complain {
		restore, err := setSysctl("/proc/sys/kernel/printk_ratelimit_burst", complainBurst)
		if err != nil {
			return err
		}
		defer restore()
		if kmsg, err = denial.OpenKernelLog(); err != nil {
			return err
		}
		defer kmsg.Close()
	}
	in, err := persona.StartUnbounded(spec, persona.SelfWaiting{}, env.Stdout)
	if err != nil {
		return err
	}
	var ws unix.WaitStatus
	select {
	case ws = <-in.Exited():
	case <-ctx.Done():
		_ = in.Destroy()
		ws = <-in.Exited()
	}
	fmt.Fprintf(env.Stderr, "spine run: %s ended: %s\n", name, persona.Describe(ws))
	if !complain {
		return nil
	}
	calls, below := complaints(kmsg, spec.UID)
	if len(below) > 0 {
		fmt.Fprintf(env.Stderr, "spine run: %s also made calls below the floor, which no policy can allow: %s\n", name, strings.Join(below, ", "))
	}
	quoted := make([]string, len(calls))
	for i, c := range calls {
		quoted[i] = strconv.Quote(c)
	}
	fmt.Fprintf(env.Stdout, "syscalls = [%s]\n", strings.Join(quoted, ", "))
	return nil
}

// complaints reads what the kernel logged of the persona's uid range since kmsg was opened and
// returns the calls to allow and those below the floor, sorted.
func complaints(kmsg *os.File, uid uint32) (allow, below []string) {
	// The kernel's audit thread prints records a moment after the calls.
	time.Sleep(time.Second)
	fd := int(kmsg.Fd()) // blocking again, off Go's poller: read it raw, without blocking
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, nil
	}
	seen := map[string]bool{}
	_ = denial.Follow(rawReader(fd), func(r denial.Record) {
		if r.UID < uid || r.UID-uid >= persona.IDBlock || r.Killed {
			return
		}
		if n := syscalls.Name(r.Syscall); n != "" && !seen[n] {
			seen[n] = true
			if _, floor := syscalls.BelowFloor(n); floor {
				below = append(below, n)
			} else if r.Logged {
				allow = append(allow, n)
			}
		}
	})
	slices.Sort(allow)
	slices.Sort(below)
	return allow, below
}

// rawReader reads an fd with read(2), so that a non-blocking fd reports EAGAIN.
type rawReader int

func (r rawReader) Read(p []byte) (int, error) { return unix.Read(int(r), p) }

// setSysctl writes value to the file and returns a function that writes the old value back.
func setSysctl(path, value string) (func(), error) {
	old, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, []byte(value), 0); err != nil {
		return nil, fmt.Errorf("set %s: %w", path, err)
	}
	return func() { _ = os.WriteFile(path, old, 0) }, nil
}

// fitRlimits lowers the persona's limits that this host will not let spine run raise: above
// its own hard limit, raising one takes CAP_SYS_RESOURCE, which bay0 has on a machine and a
// container or a sandbox may not give. Each lowered limit is said on w.
func fitRlimits(spec *persona.Spec, w io.Writer) {
	for i, r := range spec.Rlimits {
		var own unix.Rlimit
		if unix.Getrlimit(r.Resource, &own) != nil || r.Value <= own.Max {
			continue
		}
		raised := unix.Rlimit{Cur: own.Cur, Max: r.Value}
		if err := unix.Setrlimit(r.Resource, &raised); err == nil {
			_ = unix.Setrlimit(r.Resource, &own)
			continue
		}
		fmt.Fprintf(w, "spine run: this host refuses to raise limit %d to %d; the persona gets %d here (on a machine bay0 sets the policy's value)\n", r.Resource, r.Value, own.Max)
		spec.Rlimits[i].Value = own.Max
	}
}
