package seccomp

import (
	"encoding/binary"
	"errors"
	"reflect"
	"testing"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/bay0/seccomp/prog"
	"alpinespine.org/spine/internal/format/syscalls"
)

// run evaluates p on one struct seccomp_data in the x/net/bpf VM. The VM loads words
// big-endian (network order) where the kernel loads them in host order, so each 32-bit word is
// written big-endian here: the program sees the values the kernel would show it.
func run(t *testing.T, p Program, arch, nr uint32, args ...uint64) uint32 {
	t.Helper()
	raw := make([]bpf.RawInstruction, len(p))
	for i, f := range p {
		raw[i] = bpf.RawInstruction{Op: f.Code, Jt: f.Jt, Jf: f.Jf, K: f.K}
	}
	insns, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatal("program does not disassemble")
	}
	vm, err := bpf.NewVM(insns)
	if err != nil {
		t.Fatalf("VM refuses the program: %v", err)
	}
	data := make([]byte, 64)
	binary.BigEndian.PutUint32(data[offNr:], nr)
	binary.BigEndian.PutUint32(data[offArch:], arch)
	for i, a := range args {
		binary.BigEndian.PutUint32(data[offArg0+8*i:], uint32(a))
		binary.BigEndian.PutUint32(data[offArg0+8*i+4:], uint32(a>>32))
	}
	v, err := vm.Run(data)
	if err != nil {
		t.Fatalf("VM: %v", err)
	}
	return uint32(v)
}

func compile(t *testing.T, extra ...string) Program {
	t.Helper()
	p, err := Compile(Options{Syscalls: extra})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFilterDecisions(t *testing.T) {
	p := compile(t)
	const x86 = unix.AUDIT_ARCH_X86_64
	cases := []struct {
		name string
		arch uint32
		nr   uint32
		args []uint64
		want uint32
	}{
		{"read", x86, unix.SYS_READ, nil, retAllow},
		{"futex", x86, unix.SYS_FUTEX, nil, retAllow},
		{"execve", x86, unix.SYS_EXECVE, nil, retAllow},
		{"mount", x86, unix.SYS_MOUNT, nil, retEPERM},
		{"umount2", x86, unix.SYS_UMOUNT2, nil, retEPERM},
		{"pivot_root", x86, unix.SYS_PIVOT_ROOT, nil, retEPERM},
		{"ptrace", x86, unix.SYS_PTRACE, nil, retEPERM},
		{"kexec_load", x86, unix.SYS_KEXEC_LOAD, nil, retEPERM},
		{"init_module", x86, unix.SYS_INIT_MODULE, nil, retEPERM},
		{"finit_module", x86, unix.SYS_FINIT_MODULE, nil, retEPERM},
		{"bpf", x86, unix.SYS_BPF, nil, retEPERM},
		{"perf_event_open", x86, unix.SYS_PERF_EVENT_OPEN, nil, retEPERM},
		{"keyctl", x86, unix.SYS_KEYCTL, nil, retEPERM},
		{"unshare", x86, unix.SYS_UNSHARE, []uint64{unix.CLONE_NEWUSER}, retEPERM},
		{"setns", x86, unix.SYS_SETNS, nil, retEPERM},
		{"reboot", x86, unix.SYS_REBOOT, nil, retEPERM},
		{"swapon", x86, unix.SYS_SWAPON, nil, retEPERM},
		{"settimeofday", x86, unix.SYS_SETTIMEOFDAY, nil, retEPERM},
		{"open_by_handle_at", x86, unix.SYS_OPEN_BY_HANDLE_AT, nil, retEPERM},
		{"ioctl", x86, unix.SYS_IOCTL, nil, retAllow},
		{"accept", x86, unix.SYS_ACCEPT, nil, retAllow},
		{"poll", x86, unix.SYS_POLL, nil, retAllow},
		{"dup2", x86, unix.SYS_DUP2, nil, retAllow},
		{"vfork", x86, unix.SYS_VFORK, nil, retAllow},
		{"io_uring_setup", x86, unix.SYS_IO_URING_SETUP, nil, retEPERM},
		{"userfaultfd", x86, unix.SYS_USERFAULTFD, nil, retEPERM},
		{"process_vm_readv", x86, unix.SYS_PROCESS_VM_READV, nil, retEPERM},
		{"adjtimex", x86, unix.SYS_ADJTIMEX, nil, retEPERM},
		{"modify_ldt", x86, unix.SYS_MODIFY_LDT, nil, retEPERM},
		{"personality query", x86, unix.SYS_PERSONALITY, []uint64{0xffffffff}, retAllow},
		{"personality linux", x86, unix.SYS_PERSONALITY, []uint64{0}, retAllow},
		{"personality read implies exec", x86, unix.SYS_PERSONALITY, []uint64{0x0400000}, retEPERM},
		{"socketpair unix", x86, unix.SYS_SOCKETPAIR, []uint64{unix.AF_UNIX, unix.SOCK_STREAM}, retAllow},
		{"socketpair inet", x86, unix.SYS_SOCKETPAIR, []uint64{unix.AF_INET, unix.SOCK_STREAM}, retEPERM},
		{"socketpair netlink", x86, unix.SYS_SOCKETPAIR, []uint64{unix.AF_NETLINK, unix.SOCK_RAW}, retEPERM},
		{"socketpair tipc", x86, unix.SYS_SOCKETPAIR, []uint64{unix.AF_TIPC, unix.SOCK_SEQPACKET}, retEPERM},
		{"tcp socket by protocol", x86, unix.SYS_SOCKET, []uint64{unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_TCP}, retAllow},
		{"udp6 socket by protocol", x86, unix.SYS_SOCKET, []uint64{unix.AF_INET6, unix.SOCK_DGRAM, unix.IPPROTO_UDP}, retAllow},
		{"mptcp socket", x86, unix.SYS_SOCKET, []uint64{unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_MPTCP}, retEPERM},
		{"mptcp6 socket", x86, unix.SYS_SOCKET, []uint64{unix.AF_INET6, unix.SOCK_STREAM, unix.IPPROTO_MPTCP}, retEPERM},
		{"udplite socket", x86, unix.SYS_SOCKET, []uint64{unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_UDPLITE}, retEPERM},
		{"sctp socket", x86, unix.SYS_SOCKET, []uint64{unix.AF_INET, unix.SOCK_SEQPACKET, unix.IPPROTO_SCTP}, retEPERM},
		{"ping socket", x86, unix.SYS_SOCKET, []uint64{unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_ICMP}, retEPERM},
		{"unix socket protocol 1", x86, unix.SYS_SOCKET, []uint64{unix.AF_UNIX, unix.SOCK_STREAM, 1}, retAllow},
		{"unix socket protocol 2", x86, unix.SYS_SOCKET, []uint64{unix.AF_UNIX, unix.SOCK_STREAM, 2}, retEPERM},
		{"unknown number", x86, 999, nil, retEPERM},
		{"thread clone", x86, unix.SYS_CLONE, []uint64{unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND | unix.CLONE_SYSVSEM | unix.CLONE_THREAD}, retAllow},
		{"fork", x86, unix.SYS_CLONE, []uint64{uint64(unix.SIGCHLD)}, retAllow},
		{"vfork with pidfd", x86, unix.SYS_CLONE, []uint64{unix.CLONE_VFORK | unix.CLONE_VM | unix.CLONE_PIDFD | uint64(unix.SIGCHLD)}, retAllow},
		{"clone newuser", x86, unix.SYS_CLONE, []uint64{unix.CLONE_NEWUSER | uint64(unix.SIGCHLD)}, retEPERM},
		{"clone newns", x86, unix.SYS_CLONE, []uint64{unix.CLONE_NEWNS}, retEPERM},
		{"clone newnet", x86, unix.SYS_CLONE, []uint64{unix.CLONE_NEWNET}, retEPERM},
		{"clone3", x86, unix.SYS_CLONE3, nil, retENOSYS},
		{"tcp socket", x86, unix.SYS_SOCKET, []uint64{unix.AF_INET, unix.SOCK_STREAM | unix.SOCK_CLOEXEC | unix.SOCK_NONBLOCK}, retAllow},
		{"udp6 socket", x86, unix.SYS_SOCKET, []uint64{unix.AF_INET6, unix.SOCK_DGRAM}, retAllow},
		{"unix socket", x86, unix.SYS_SOCKET, []uint64{unix.AF_UNIX, unix.SOCK_SEQPACKET}, retAllow},
		{"raw socket", x86, unix.SYS_SOCKET, []uint64{unix.AF_INET, unix.SOCK_RAW}, retEPERM},
		{"packet socket", x86, unix.SYS_SOCKET, []uint64{unix.AF_PACKET, unix.SOCK_DGRAM}, retEPERM},
		{"netlink socket", x86, unix.SYS_SOCKET, []uint64{unix.AF_NETLINK, unix.SOCK_DGRAM}, retEPERM},
		{"high bits ignored", x86, unix.SYS_SOCKET, []uint64{1<<40 | unix.AF_INET, unix.SOCK_STREAM}, retAllow},
		{"x32 read", x86, x32SyscallBit | unix.SYS_READ, nil, retKill},
		{"x32 anything", x86, x32SyscallBit + 1000, nil, retKill},
		{"i386 getpid", unix.AUDIT_ARCH_I386, 20, nil, retKill},
		{"i386 read", unix.AUDIT_ARCH_I386, 3, nil, retKill},
		{"aarch64", unix.AUDIT_ARCH_AARCH64, unix.SYS_READ, nil, retKill},
	}
	for _, c := range cases {
		if got := run(t, p, c.arch, c.nr, c.args...); got != c.want {
			t.Errorf("%s: filter returns %#x, want %#x", c.name, got, c.want)
		}
	}
}

// TestEveryAllowedCallPasses checks the whole allowlist, so a jump offset that is off by one
// somewhere in the middle cannot hide.
func TestEveryAllowedCallPasses(t *testing.T) {
	p := compile(t)
	for _, name := range Allowlist() {
		nr, _ := Number(name)
		want := uint32(retAllow)
		switch name {
		case "clone3":
			want = retENOSYS
		case "personality":
			continue
		}
		if got := run(t, p, unix.AUDIT_ARCH_X86_64, nr, unix.AF_UNIX, unix.SOCK_STREAM); got != want {
			t.Errorf("%s (%d): filter returns %#x, want %#x", name, nr, got, want)
		}
	}
	allowed := map[string]bool{}
	for _, n := range Allowlist() {
		allowed[n] = true
	}
	for _, name := range syscalls.Names() {
		nr, _ := syscalls.Number(name)
		if allowed[name] {
			continue
		}
		if got := run(t, p, unix.AUDIT_ARCH_X86_64, nr); got != retEPERM {
			t.Errorf("%s (%d) is not on the allowlist but the filter returns %#x", name, nr, got)
		}
	}
}

func TestExtraSyscalls(t *testing.T) {
	p := compile(t, "sethostname", "mbind")
	if got := run(t, p, unix.AUDIT_ARCH_X86_64, unix.SYS_SETHOSTNAME); got != retAllow {
		t.Errorf("sethostname with extra allow: %#x", got)
	}
	if got := run(t, p, unix.AUDIT_ARCH_X86_64, unix.SYS_MOUNT); got != retEPERM {
		t.Errorf("mount: %#x", got)
	}
	if _, err := Compile(Options{Syscalls: []string{"no_such_call"}}); !errors.Is(err, ErrUnknownSyscall) {
		t.Errorf("unknown name: err = %v, want ErrUnknownSyscall", err)
	}
	for _, below := range []string{"mount", "unshare", "bpf", "io_uring_setup", "ptrace", "kexec_load"} {
		if _, err := Compile(Options{Syscalls: []string{below}}); !errors.Is(err, syscalls.ErrFloor) {
			t.Errorf("%s: err = %v, want ErrFloor", below, err)
		}
	}
}

func TestExtraProtocols(t *testing.T) {
	p, err := Compile(Options{Protocols: []string{"sctp", "mptcp"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []uint64
		want uint32
	}{
		{[]uint64{unix.AF_INET, unix.SOCK_SEQPACKET, unix.IPPROTO_SCTP}, retAllow},
		{[]uint64{unix.AF_INET6, unix.SOCK_STREAM, unix.IPPROTO_MPTCP}, retAllow},
		{[]uint64{unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_UDPLITE}, retEPERM},
		{[]uint64{unix.AF_INET, unix.SOCK_STREAM, 0}, retAllow},
	} {
		if got := run(t, p, unix.AUDIT_ARCH_X86_64, unix.SYS_SOCKET, c.args...); got != c.want {
			t.Errorf("socket%v: %#x, want %#x", c.args, got, c.want)
		}
	}
	if _, err := Compile(Options{Protocols: []string{"dccp"}}); err == nil {
		t.Error("an unknown protocol compiled")
	}
}

// TestComplain: every refusal becomes a logged success, except below the floor.
func TestComplain(t *testing.T) {
	p, err := Compile(Options{Complain: true, Syscalls: []string{"sethostname"}})
	if err != nil {
		t.Fatal(err)
	}
	x86 := uint32(unix.AUDIT_ARCH_X86_64)
	for _, c := range []struct {
		name string
		nr   uint32
		args []uint64
		want uint32
	}{
		{"read", unix.SYS_READ, nil, retAllow},
		{"sethostname", unix.SYS_SETHOSTNAME, nil, retAllow},
		{"mbind", unix.SYS_MBIND, nil, retLog},
		{"raw socket", unix.SYS_SOCKET, []uint64{unix.AF_INET, unix.SOCK_RAW}, retLog},
		{"mount", unix.SYS_MOUNT, nil, retEPERM},
		{"bpf", unix.SYS_BPF, nil, retEPERM},
		{"clone newuser", unix.SYS_CLONE, []uint64{unix.CLONE_NEWUSER}, retLog},
	} {
		if got := run(t, p, x86, c.nr, c.args...); got != c.want {
			t.Errorf("%s: %#x, want %#x", c.name, got, c.want)
		}
	}
	if got := run(t, p, unix.AUDIT_ARCH_I386, 20); got != retKill {
		t.Errorf("i386 in complain mode: %#x", got)
	}
}

// TestAllowlistAboveFloor: the default list never holds a call below the floor, and every name
// in it is known.
func TestAllowlistAboveFloor(t *testing.T) {
	for _, n := range Allowlist() {
		if _, ok := syscalls.Number(n); !ok {
			t.Errorf("%s is on the allowlist but unknown", n)
		}
		if r, below := syscalls.BelowFloor(n); below {
			t.Errorf("%s is on the allowlist but below the floor: %s", n, r)
		}
	}
}

func TestCompileIsDeterministic(t *testing.T) {
	a := compile(t, "sethostname", "mbind")
	b := compile(t, "mbind", "sethostname", "mbind")
	if !reflect.DeepEqual(a, b) {
		t.Error("the same set of names compiled to different programs")
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	p := compile(t)
	b, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	q, err := prog.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(p, q) {
		t.Error("decode(encode(p)) != p")
	}
	for _, bad := range [][]byte{nil, make([]byte, 7), make([]byte, 8*(MaxInstructions+1))} {
		if _, err := prog.Decode(bad); err == nil {
			t.Errorf("Decode accepted %d bytes", len(bad))
		}
	}
}

func FuzzDecode(f *testing.F) {
	p, _ := Compile(Options{})
	b, _ := p.MarshalBinary()
	f.Add(b)
	f.Add(make([]byte, 8))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := prog.Decode(b)
		if err != nil {
			return
		}
		again, _ := p.MarshalBinary()
		q, err := prog.Decode(again)
		if err != nil || !reflect.DeepEqual(p, q) {
			t.Fatalf("round trip changed the program: %v", err)
		}
	})
}
