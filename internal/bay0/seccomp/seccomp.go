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
	"fmt"
	"slices"
	"strings"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/bay0/seccomp/prog"
	"alpinespine.org/spine/internal/format/syscalls"
)

// Filter results.
const (
	retAllow = unix.SECCOMP_RET_ALLOW
	retKill  = unix.SECCOMP_RET_KILL_PROCESS
	retEPERM = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	// clone3 passes its flags in memory, out of a filter's reach. ENOSYS (not EPERM) makes
	// runtimes fall back to clone, whose flags the filter can check. SECCOMP_RET_TRACE with no
	// tracer fails the call with ENOSYS; see Compile.
	retENOSYS = unix.SECCOMP_RET_TRACE
	// retLog allows the call and has the kernel log it (complain mode only).
	retLog = unix.SECCOMP_RET_LOG
)

// Offsets into struct seccomp_data (linux/seccomp.h). Arguments are 64-bit little-endian, so
// the low half of args[i] is at 16+8i: every argument checked here is an int or the low flags
// word, which is all the kernel reads of them.
const (
	offNr   = 0
	offArch = 4
	offArg0 = 16
	offArg1 = 24
	offArg2 = 32
	// x32SyscallBit marks the x32 ABI in the system call number (asm/unistd.h).
	x32SyscallBit = 0x40000000
	// MaxInstructions is BPF_MAXINSNS: the kernel refuses longer programs.
	MaxInstructions = prog.MaxInstructions
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
var ErrUnknownSyscall = syscalls.ErrUnknown

// Protocols a policy may add to socket(2)'s default protocols (0, TCP, UDP) for AF_INET and
// AF_INET6. Each is a separate kernel stack that ordinary programs never need, and each has had
// its share of kernel bugs, so none is on by default.
var Protocols = map[string][]uint32{
	"mptcp":   {unix.IPPROTO_MPTCP},
	"sctp":    {unix.IPPROTO_SCTP},
	"udplite": {unix.IPPROTO_UDPLITE},
	"icmp":    {unix.IPPROTO_ICMP, unix.IPPROTO_ICMPV6},
}

// personalities are the values of personality(2) allowed: querying (0xffffffff) and the
// harmless flags moby's profile allows (PER_LINUX, UNAME26, ADDR_NO_RANDOMIZE). The others
// change how the kernel treats the process (READ_IMPLIES_EXEC, MMAP_PAGE_ZERO...).
var personalities = []uint32{0, 0x0008, 0x20000, 0x20008, 0xffffffff}

// Allowlist is the default allowlist: Docker's (moby/profiles seccomp/default.json) for
// x86-64, less the calls below the floor (package syscalls), which moby allows in some cases
// (ptrace, process_vm_*, adjtimex, clock_adjtime, modify_ldt, chroot). clone, clone3, socket,
// socketpair and personality are allowed only with the arguments Compile checks. The README
// shows the list and these differences.
func Allowlist() []string {
	var names []string
	add := func(n ...string) { names = append(names, n...) }
	// Processes, threads and signals. clone3 always fails with ENOSYS (its flags are out of a
	// filter's reach), so runtimes fall back to clone, whose flags are checked.
	add("clone", "clone3", "fork", "vfork", "execve", "execveat", "exit", "exit_group", "wait4", "waitid",
		"kill", "tgkill", "tkill", "getpid", "getppid", "gettid", "getpgid", "getpgrp", "getsid", "setsid",
		"setpgid", "pidfd_open", "pidfd_send_signal", "process_mrelease", "set_tid_address", "set_robust_list",
		"get_robust_list", "arch_prctl", "set_thread_area", "get_thread_area", "prctl", "personality", "seccomp",
		"rseq", "membarrier", "restart_syscall", "pause",
		"rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigqueueinfo", "rt_sigsuspend",
		"rt_sigtimedwait", "rt_tgsigqueueinfo", "sigaltstack", "signalfd", "signalfd4")
	// Scheduling; raising a priority still needs CAP_SYS_NICE, which no persona has.
	add("sched_yield", "sched_getaffinity", "sched_setaffinity", "sched_getattr", "sched_setattr",
		"sched_getparam", "sched_setparam", "sched_getscheduler", "sched_setscheduler", "sched_get_priority_max",
		"sched_get_priority_min", "sched_rr_get_interval", "getpriority", "setpriority", "ioprio_get", "ioprio_set",
		"getcpu")
	// Memory, bounded by the persona's memory.max.
	add("mmap", "munmap", "mprotect", "madvise", "mremap", "brk", "msync", "mincore", "mlock", "mlock2",
		"mlockall", "munlock", "munlockall", "remap_file_pages", "memfd_create", "memfd_secret", "pkey_alloc",
		"pkey_free", "pkey_mprotect", "map_shadow_stack", "mseal", "uretprobe")
	// Time, timers and futexes (reading the clock only: setting it is below the floor).
	add("futex", "futex_waitv", "futex_wake", "futex_wait", "futex_requeue", "nanosleep", "clock_nanosleep",
		"clock_gettime", "clock_getres", "gettimeofday", "time", "times", "alarm", "getitimer", "setitimer",
		"timer_create", "timer_delete", "timer_getoverrun", "timer_gettime", "timer_settime", "timerfd_create",
		"timerfd_gettime", "timerfd_settime")
	// Files, inside the persona's own mount namespace, the legacy x86-64 calls included.
	add("read", "write", "pread64", "pwrite64", "readv", "writev", "preadv", "preadv2", "pwritev", "pwritev2",
		"open", "openat", "openat2", "creat", "close", "close_range", "stat", "fstat", "lstat", "newfstatat",
		"statx", "statfs", "fstatfs", "lseek", "getdents", "getdents64", "readlink", "readlinkat", "fcntl",
		"flock", "dup", "dup2", "dup3", "pipe", "pipe2", "fsync", "fdatasync", "sync", "syncfs", "sync_file_range",
		"truncate", "ftruncate", "fallocate", "fadvise64", "readahead", "rename", "renameat", "renameat2",
		"unlink", "unlinkat", "mkdir", "mkdirat", "rmdir", "link", "linkat", "symlink", "symlinkat", "mknod",
		"mknodat", "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "fchownat", "lchown", "umask",
		"access", "faccessat", "faccessat2", "getcwd", "chdir", "fchdir", "utime", "utimes", "utimensat",
		"futimesat", "sendfile", "copy_file_range", "splice", "tee", "vmsplice", "ioctl", "cachestat",
		"name_to_handle_at", "statmount", "listmount",
		"getxattr", "lgetxattr", "fgetxattr", "getxattrat", "setxattr", "lsetxattr", "fsetxattr", "setxattrat",
		"listxattr", "llistxattr", "flistxattr", "listxattrat", "removexattr", "lremovexattr", "fremovexattr",
		"removexattrat", "inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch", "fanotify_mark",
		"landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self")
	// Asynchronous I/O (the old AIO interface; io_uring is below the floor) and polling.
	add("io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents", "io_pgetevents",
		"epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_wait", "epoll_wait_old",
		"epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2", "poll", "ppoll", "select", "pselect6")
	// Sockets, in the persona's own network namespace; socket and socketpair only with the
	// families, types and protocols Compile checks (no raw or packet sockets, no netlink).
	add("socket", "socketpair", "bind", "listen", "accept", "accept4", "connect", "getsockname", "getpeername",
		"setsockopt", "getsockopt", "sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "shutdown")
	// System V IPC and POSIX message queues, in the persona's own IPC namespace.
	add("shmget", "shmat", "shmdt", "shmctl", "semget", "semop", "semtimedop", "semctl", "msgget", "msgsnd",
		"msgrcv", "msgctl", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify", "mq_getsetattr")
	// Identity and limits. Changing ids or capabilities works only within what the process
	// already holds: a persona has no capabilities.
	add("uname", "getuid", "geteuid", "getgid", "getegid", "getgroups", "getresuid", "getresgid", "setuid",
		"setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid", "setfsgid", "setgroups", "capget",
		"capset", "getrlimit", "setrlimit", "prlimit64", "getrusage", "getrandom", "sysinfo")
	return names
}

// Options shape one persona's filter.
type Options struct {
	// Syscalls extends the default allowlist; each must be a known name above the floor.
	Syscalls []string
	// Protocols extends socket(2)'s protocols with keys of Protocols.
	Protocols []string
	// Complain makes every call the filter would refuse succeed and be logged by the kernel
	// (SECCOMP_RET_LOG), except the calls below the floor, which are still refused. It is for
	// finding what a workload needs (spine run --complain), never for a machine.
	Complain bool
}

// Compile assembles the filter for the default allowlist plus o's additions. The result depends
// only on the sets of names, not their order.
func Compile(o Options) (Program, error) {
	allowed := map[uint32]bool{}
	for _, name := range Allowlist() {
		nr, ok := syscalls.Number(name)
		if !ok {
			return nil, fmt.Errorf("allow %q: %w", name, ErrUnknownSyscall)
		}
		allowed[nr] = true
	}
	for _, name := range o.Syscalls {
		if err := syscalls.Check(name); err != nil {
			return nil, fmt.Errorf("allow %w", err)
		}
		nr, _ := syscalls.Number(name)
		allowed[nr] = true
	}
	protos := []uint32{0, unix.IPPROTO_TCP, unix.IPPROTO_UDP}
	for _, name := range o.Protocols {
		p, ok := Protocols[name]
		if !ok {
			return nil, fmt.Errorf("protocol %q is not one of %s", name, strings.Join(ProtocolNames(), ", "))
		}
		protos = append(protos, p...)
	}
	slices.Sort(protos)
	protos = slices.Compact(protos)
	deny := uint32(retEPERM)
	if o.Complain {
		deny = retLog
	}

	var plain []uint32
	for nr := range allowed {
		if _, checked := checkedCalls[nr]; !checked {
			plain = append(plain, nr)
		}
	}
	slices.Sort(plain)

	var a assembler
	// Any ABI but x86-64 is killed: the numbers mean other calls there.
	a.ld(offArch)
	a.jump(bpf.JumpEqual, unix.AUDIT_ARCH_X86_64, "nr", "")
	a.ret(retKill)
	a.label("nr")
	a.ld(offNr)
	// So is x32, which shares the x86-64 audit arch and sets a bit in the number.
	a.jump(bpf.JumpGreaterOrEqual, x32SyscallBit, "kill", "")
	// Plain calls, as runs of consecutive numbers.
	for i := 0; i < len(plain); {
		j := i
		for j+1 < len(plain) && plain[j+1] == plain[j]+1 {
			j++
		}
		next := fmt.Sprintf("run%d", i)
		if i == j {
			a.jump(bpf.JumpEqual, plain[i], "allow", next)
		} else {
			a.jump(bpf.JumpGreaterOrEqual, plain[i], "", next)
			a.jump(bpf.JumpGreaterThan, plain[j], next, "allow")
		}
		a.label(next)
		i = j + 1
	}
	// Each checked block starts with A = nr and either returns or skips itself whole, so A
	// still holds nr for the next block.
	if allowed[unix.SYS_CLONE] {
		a.jump(bpf.JumpEqual, unix.SYS_CLONE, "", "clone.end")
		a.ld(offArg0)
		a.jump(bpf.JumpBitsSet, nsFlags, "deny", "allow")
		a.label("clone.end")
	}
	if allowed[unix.SYS_CLONE3] {
		// ENOSYS through SECCOMP_RET_TRACE, which fails the call with ENOSYS when no tracer
		// is attached (and none can be: ptrace is below the floor). An ERRNO action would
		// be logged at every thread glibc starts, drowning the denials that matter.
		a.jump(bpf.JumpEqual, unix.SYS_CLONE3, "", "clone3.end")
		a.ret(retENOSYS)
		a.label("clone3.end")
	}
	if allowed[unix.SYS_SOCKET] {
		a.jump(bpf.JumpEqual, unix.SYS_SOCKET, "", "socket.end")
		a.ld(offArg0)
		a.jump(bpf.JumpEqual, unix.AF_UNIX, "socket.unix", "")
		a.jump(bpf.JumpEqual, unix.AF_INET, "socket.inet", "")
		a.jump(bpf.JumpEqual, unix.AF_INET6, "socket.inet", "deny")
		a.label("socket.unix")
		a.ld(offArg2)
		a.jump(bpf.JumpEqual, 0, "socket.type", "")
		a.jump(bpf.JumpEqual, unix.PF_UNIX, "socket.type", "deny")
		a.label("socket.inet")
		a.ld(offArg2)
		for i, p := range protos {
			no := ""
			if i == len(protos)-1 {
				no = "deny"
			}
			a.jump(bpf.JumpEqual, p, "socket.type", no)
		}
		a.label("socket.type")
		a.ld(offArg1)
		a.and(sockTypeMask)
		a.jump(bpf.JumpEqual, unix.SOCK_STREAM, "allow", "")
		a.jump(bpf.JumpEqual, unix.SOCK_DGRAM, "allow", "")
		a.jump(bpf.JumpEqual, unix.SOCK_SEQPACKET, "allow", "deny")
		a.label("socket.end")
	}
	if allowed[unix.SYS_SOCKETPAIR] {
		// socketpair makes only AF_UNIX pairs in practice; any other family is a door to a
		// protocol's code that socket() itself refuses.
		a.jump(bpf.JumpEqual, unix.SYS_SOCKETPAIR, "", "socketpair.end")
		a.ld(offArg0)
		a.jump(bpf.JumpEqual, unix.AF_UNIX, "allow", "deny")
		a.label("socketpair.end")
	}
	if allowed[unix.SYS_PERSONALITY] {
		a.jump(bpf.JumpEqual, unix.SYS_PERSONALITY, "", "personality.end")
		a.ld(offArg0)
		for i, v := range personalities {
			no := ""
			if i == len(personalities)-1 {
				no = "deny"
			}
			a.jump(bpf.JumpEqual, v, "allow", no)
		}
		a.label("personality.end")
	}
	if o.Complain {
		// Below the floor stays refused, complaining or not.
		for _, f := range syscalls.Floor() {
			nr, _ := syscalls.Number(f[0])
			a.jump(bpf.JumpEqual, nr, "floor", "")
		}
	}
	a.label("deny")
	a.ret(deny)
	a.label("floor")
	a.ret(retEPERM)
	a.label("allow")
	a.ret(retAllow)
	a.label("kill")
	a.ret(retKill)

	prog, err := a.assemble()
	if err != nil {
		return nil, err
	}
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

// checkedCalls are allowed only with the arguments Compile checks.
var checkedCalls = map[uint32]bool{unix.SYS_CLONE: true, unix.SYS_CLONE3: true, unix.SYS_SOCKET: true,
	unix.SYS_SOCKETPAIR: true, unix.SYS_PERSONALITY: true}

// ProtocolNames returns the keys of Protocols, sorted.
func ProtocolNames() []string {
	var n []string
	for k := range Protocols {
		n = append(n, k)
	}
	slices.Sort(n)
	return n
}

// Program is a compiled filter. Package prog, which persona-init links instead of this
// compiler, encodes, decodes and installs it.
type Program = prog.Program

// Number returns the x86-64 number of a system call.
func Number(name string) (uint32, bool) { return syscalls.Number(name) }
