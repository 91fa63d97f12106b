// Package seccomp builds the system call filter that every persona runs under: an allowlist
// for the x86-64 ABI, where any other ABI (i386 through int 0x80, x32) kills the process and
// any system call not on the list fails with EPERM.
//
// The filter is compiled once per persona when the governor starts and handed to persona-init
// as bytes (Program.MarshalBinary); nothing is compiled on the launch path. A denylist would
// leak through the 32-bit ABI and through every system call added to the kernel after it was
// written, so there is none.
package seccomp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Filter results.
const (
	retAllow = unix.SECCOMP_RET_ALLOW
	retKill  = unix.SECCOMP_RET_KILL_PROCESS
	retEPERM = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	// clone3 passes its flags in memory, out of a filter's reach. ENOSYS (not EPERM) makes
	// runtimes fall back to clone, whose flags the filter can check.
	retENOSYS = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
)

// Offsets into struct seccomp_data (linux/seccomp.h). Arguments are 64-bit little-endian, so
// the low half of args[i] is at 16+8i: every argument checked here is an int or the low flags
// word, which is all the kernel reads of them.
const (
	offNr   = 0
	offArch = 4
	offArg0 = 16
	offArg1 = 24
	// x32SyscallBit marks the x32 ABI in the system call number (asm/unistd.h).
	x32SyscallBit = 0x40000000
	// MaxInstructions is BPF_MAXINSNS: the kernel refuses longer programs.
	MaxInstructions = 4096
	// instructionSize is the size of one struct sock_filter.
	instructionSize = 8
)

// nsFlags are the clone flags that create namespaces. A persona is already in all of its
// namespaces; a new user namespace would hand it a fresh set of capabilities over fresh
// namespaces, which is an attack surface and never a need. CLONE_NEWTIME (0x80) is not among
// them: for clone(2) that bit is part of the exit signal, and clone(2) cannot make a time
// namespace.
const nsFlags = unix.CLONE_NEWNS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC |
	unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET

// sockTypeMask is SOCK_TYPE_MASK: socket(2)'s type argument also carries SOCK_NONBLOCK and
// SOCK_CLOEXEC.
const sockTypeMask = 0xf

// ErrUnknownSyscall is returned for a system call name that x86-64 does not have.
var ErrUnknownSyscall = errors.New("unknown system call")

// Allowlist is the default allowlist: what a static Go program (the runtime, os, net/http) and
// the demo personas need, and nothing else. clone and socket are allowed only with the
// arguments checked in Compile; clone3 always fails with ENOSYS.
//
// Left out on purpose, among others: mount, umount2, pivot_root, chroot, unshare, setns,
// ptrace, process_vm_*, kexec_*, *_module, bpf, perf_event_open, keyctl/add_key/request_key,
// reboot, swapon/swapoff, settimeofday/clock_settime/adjtimex, open_by_handle_at,
// name_to_handle_at, mknod*, ioctl, prctl, personality, userfaultfd, io_uring_*, the new mount
// API (fsopen, open_tree, move_mount...), set*uid/set*gid, capset, syslog, iopl/ioperm.
func Allowlist() []string {
	var names []string
	add := func(n ...string) { names = append(names, n...) }
	// Processes and threads: the Go runtime makes threads with clone; os/exec forks with clone
	// and waits with pidfds (Go >= 1.23). persona-init itself execs the workload under the
	// filter.
	add("clone", "clone3", "execve", "exit", "exit_group", "wait4", "waitid", "kill", "tgkill",
		"tkill", "getpid", "getppid", "gettid", "pidfd_open", "pidfd_send_signal", "set_tid_address",
		"set_robust_list", "arch_prctl", "sched_yield", "sched_getaffinity")
	// Memory.
	add("mmap", "munmap", "mprotect", "madvise", "mremap", "brk")
	// Signals: the runtime's preemption and crash handling.
	add("rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "restart_syscall")
	// Time and sleeping; futexes are the runtime's locks.
	add("futex", "nanosleep", "clock_nanosleep", "clock_gettime", "clock_getres", "gettimeofday")
	// Files, inside the persona's own mount namespace.
	add("read", "write", "pread64", "pwrite64", "readv", "writev", "openat", "close", "close_range",
		"fstat", "newfstatat", "statx", "lseek", "getdents64", "readlinkat", "fcntl", "dup", "dup3",
		"pipe2", "fsync", "fdatasync", "ftruncate", "renameat", "renameat2", "unlinkat", "mkdirat",
		"fchmod", "fchmodat", "faccessat", "faccessat2", "getcwd", "chdir", "fchdir", "statfs", "fstatfs")
	// Polling: the runtime's network poller.
	add("epoll_create1", "epoll_ctl", "epoll_pwait", "epoll_wait", "eventfd2", "ppoll")
	// Sockets, in the persona's own network namespace; socket itself only for unix and IP
	// stream/datagram sockets (no raw or packet sockets, no netlink).
	add("socket", "socketpair", "bind", "listen", "accept4", "connect", "getsockname", "getpeername",
		"setsockopt", "getsockopt", "sendto", "recvfrom", "sendmsg", "recvmsg", "shutdown")
	// Identity and limits, read-only (prlimit64 also raises the soft fd limit to the hard one,
	// as the Go runtime does at start).
	add("uname", "getuid", "geteuid", "getgid", "getegid", "getgroups", "getrlimit", "prlimit64",
		"getrandom", "sysinfo")
	return names
}

// Compile assembles the filter for the default allowlist plus extra (a persona's policy may
// add system calls). The result depends only on the set of names, not their order.
func Compile(extra []string) (Program, error) {
	allowed := map[uint32]bool{}
	for _, name := range append(Allowlist(), extra...) {
		nr, ok := amd64Syscalls[name]
		if !ok {
			return nil, fmt.Errorf("allow %q: %w", name, ErrUnknownSyscall)
		}
		allowed[nr] = true
	}
	var plain []uint32
	for nr := range allowed {
		switch nr {
		case unix.SYS_CLONE, unix.SYS_CLONE3, unix.SYS_SOCKET:
		default:
			plain = append(plain, nr)
		}
	}
	sort.Slice(plain, func(i, j int) bool { return plain[i] < plain[j] })

	prog := []bpf.Instruction{
		// Any ABI but x86-64 is killed: the numbers mean other calls there.
		bpf.LoadAbsolute{Off: offArch, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.AUDIT_ARCH_X86_64, SkipTrue: 1},
		bpf.RetConstant{Val: retKill},
		bpf.LoadAbsolute{Off: offNr, Size: 4},
		// So is x32, which shares the x86-64 audit arch and sets a bit in the number.
		bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: x32SyscallBit, SkipFalse: 1},
		bpf.RetConstant{Val: retKill},
	}
	for _, nr := range plain {
		prog = append(prog,
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: nr, SkipFalse: 1},
			bpf.RetConstant{Val: retAllow})
	}
	// Each checked block starts with A = nr and either returns or skips itself whole, so A
	// still holds nr for the next block.
	if allowed[unix.SYS_CLONE] {
		prog = append(prog,
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.SYS_CLONE, SkipFalse: 4},
			bpf.LoadAbsolute{Off: offArg0, Size: 4},
			bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: nsFlags, SkipFalse: 1},
			bpf.RetConstant{Val: retEPERM},
			bpf.RetConstant{Val: retAllow})
	}
	if allowed[unix.SYS_CLONE3] {
		prog = append(prog,
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.SYS_CLONE3, SkipFalse: 1},
			bpf.RetConstant{Val: retENOSYS})
	}
	if allowed[unix.SYS_SOCKET] {
		prog = append(prog,
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.SYS_SOCKET, SkipFalse: 11},
			bpf.LoadAbsolute{Off: offArg0, Size: 4},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.AF_UNIX, SkipTrue: 2},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.AF_INET, SkipTrue: 1},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.AF_INET6, SkipFalse: 5},
			bpf.LoadAbsolute{Off: offArg1, Size: 4},
			bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: sockTypeMask},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.SOCK_STREAM, SkipTrue: 3},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.SOCK_DGRAM, SkipTrue: 2},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.SOCK_SEQPACKET, SkipTrue: 1},
			bpf.RetConstant{Val: retEPERM},
			bpf.RetConstant{Val: retAllow})
	}
	prog = append(prog, bpf.RetConstant{Val: retEPERM})

	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, fmt.Errorf("assemble seccomp filter: %w", err)
	}
	if len(raw) > MaxInstructions {
		return nil, fmt.Errorf("seccomp filter has %d instructions, the kernel takes %d", len(raw), MaxInstructions)
	}
	out := make(Program, len(raw))
	for i, r := range raw {
		out[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return out, nil
}

// Program is a classic BPF seccomp filter, in the kernel's struct sock_filter layout.
type Program []unix.SockFilter

// MarshalBinary encodes the program as the kernel lays it out on x86-64: 8 bytes per
// instruction, little-endian.
func (p Program) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, len(p)*instructionSize)
	for _, f := range p {
		b = binary.LittleEndian.AppendUint16(b, f.Code)
		b = append(b, f.Jt, f.Jf)
		b = binary.LittleEndian.AppendUint32(b, f.K)
	}
	return b, nil
}

// Decode is the inverse of MarshalBinary. It checks only the shape (the kernel verifies the
// program itself when it is installed).
func Decode(b []byte) (Program, error) {
	if len(b) == 0 || len(b)%instructionSize != 0 || len(b)/instructionSize > MaxInstructions {
		return nil, fmt.Errorf("seccomp program of %d bytes is not 1..%d instructions of %d bytes", len(b), MaxInstructions, instructionSize)
	}
	p := make(Program, len(b)/instructionSize)
	for i := range p {
		c := b[i*instructionSize:]
		p[i] = unix.SockFilter{Code: binary.LittleEndian.Uint16(c), Jt: c[2], Jf: c[3], K: binary.LittleEndian.Uint32(c[4:])}
	}
	return p, nil
}

// Number returns the x86-64 number of a system call.
func Number(name string) (uint32, bool) {
	nr, ok := amd64Syscalls[name]
	return nr, ok
}
