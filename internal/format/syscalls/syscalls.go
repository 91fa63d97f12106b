// Package syscalls names the x86-64 system calls a persona's policy may speak of: the table of
// names and numbers, the floor of calls that no policy may allow, and the checks spine build makes
// on a policy's `syscalls` entries. Host and machine share it, so that a name the builder accepts
// is a name bay0 can compile.
package syscalls

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// ErrUnknown is a name x86-64 does not have.
var ErrUnknown = errors.New("unknown system call")

// ErrFloor is a call below the floor: allowing it would let a persona leave or weaken its box.
var ErrFloor = errors.New("system call below the floor")

// Number returns the x86-64 number of a system call.
func Number(name string) (uint32, bool) {
	nr, ok := table[name]
	return nr, ok
}

// Name returns the name of an x86-64 system call number, or "" if it has none.
func Name(nr uint32) string { return names[nr] }

// names is table inverted; like table, it is read-only.
var names = func() map[uint32]string {
	m := make(map[uint32]string, len(table))
	for name, nr := range table {
		m[nr] = name
	}
	return m
}()

// Names returns every known name, sorted.
func Names() []string {
	names := make([]string, 0, len(table))
	for n := range table {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// floor maps each call that no policy may allow to the reason, in words the README repeats.
// Each would let a persona leave its namespaces, change what the kernel enforces, reach into
// another process, or change the machine for everyone.
var floor = map[string]string{}

func init() {
	for reason, names := range map[string][]string{
		"enters or makes namespaces":                      {"unshare", "setns"},
		"mounts or changes the filesystem tree":           {"mount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "open_tree_attr", "mount_setattr"},
		"loads kernel code":                               {"init_module", "finit_module", "delete_module", "create_module", "kexec_load", "kexec_file_load", "bpf", "uselib"},
		"reaches into other processes":                    {"ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd"},
		"observes the kernel":                             {"perf_event_open", "lookup_dcookie", "syslog"},
		"reaches the kernel keyrings":                     {"keyctl", "add_key", "request_key"},
		"gives a persona control over kernel page faults": {"userfaultfd"},
		"bypasses the system call filter (io_uring)":      {"io_uring_setup", "io_uring_enter", "io_uring_register"},
		"stops or reconfigures the machine":               {"reboot", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd", "vhangup", "nfsservctl", "_sysctl"},
		"sets the machine's clock":                        {"settimeofday", "clock_settime", "adjtimex", "clock_adjtime"},
		"opens files by handle, around the mount tree":    {"open_by_handle_at"},
		"touches hardware ports or the LDT":               {"iopl", "ioperm", "modify_ldt"},
	} {
		for _, n := range names {
			floor[n] = reason
		}
	}
}

// Floor returns the calls no policy may allow, sorted, each with its reason.
func Floor() [][2]string {
	out := make([][2]string, 0, len(floor))
	for n, r := range floor {
		out = append(out, [2]string{n, r})
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	return out
}

// BelowFloor reports whether name is on the floor, and why.
func BelowFloor(name string) (string, bool) {
	r, ok := floor[name]
	return r, ok
}

// Check refuses a name a policy may not allow: one x86-64 does not have (naming the nearest
// known names) or one below the floor (naming why).
func Check(name string) error {
	if _, ok := table[name]; !ok {
		if near := Nearest(name, 3); len(near) > 0 {
			return fmt.Errorf("%q: %w (did you mean %s?)", name, ErrUnknown, strings.Join(near, ", "))
		}
		return fmt.Errorf("%q: %w", name, ErrUnknown)
	}
	if r, ok := floor[name]; ok {
		return fmt.Errorf("%q %s: %w", name, r, ErrFloor)
	}
	return nil
}

// Nearest returns up to n known names closest to name by edit distance, closest first (ties by
// name), leaving out names too far to be a slip of the keyboard.
func Nearest(name string, n int) []string {
	type cand struct {
		name string
		d    int
	}
	limit := max(2, len(name)/3)
	var cs []cand
	for known := range table {
		if d := distance(name, known); d <= limit {
			cs = append(cs, cand{known, d})
		}
	}
	sort.Slice(cs, func(i, j int) bool {
		if cs[i].d != cs[j].d {
			return cs[i].d < cs[j].d
		}
		return cs[i].name < cs[j].name
	})
	var out []string
	for i := 0; i < len(cs) && i < n; i++ {
		out = append(out, cs[i].name)
	}
	return out
}

// distance is the Levenshtein distance between a and b, in bytes (system call names are ASCII).
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
