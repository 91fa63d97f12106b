package seccomp

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/bay0/seccomp/prog"
)

// The test binary doubles as the filtered program: with helperEnv set it installs the filter
// and runs one scenario under it, on the real kernel.
const helperEnv = "SECCOMP_TEST_HELPER"

func TestMain(m *testing.M) {
	if s := os.Getenv(helperEnv); s != "" {
		os.Exit(helper(s))
	}
	os.Exit(m.Run())
}

func helper(scenario string) int {
	if scenario == "workload" {
		// Already filtered: this process was exec'd by a filtered one.
		return workload()
	}
	runtime.LockOSThread()
	p, err := Compile(Options{})
	if err != nil {
		fmt.Println(err)
		return 3
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		fmt.Println(err)
		return 3
	}
	if err := prog.Install(p); err != nil {
		fmt.Println(err)
		return 3
	}
	switch scenario {
	case "denied":
		var bad []string
		check := func(name string, err error) {
			if !errors.Is(err, unix.EPERM) {
				bad = append(bad, fmt.Sprintf("%s: %v", name, err))
			}
		}
		check("mount", unix.Mount("none", "/tmp", "tmpfs", 0, ""))
		check("unshare", unix.Unshare(unix.CLONE_NEWUSER))
		check("ptrace", unix.PtraceAttach(1))
		_, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		check("packet socket", err)
		_, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP)
		check("raw socket", err)
		check("bpf", errnoOf(unix.Syscall(unix.SYS_BPF, 0, 0, 0)))
		check("keyctl", errnoOf(unix.Syscall(unix.SYS_KEYCTL, 0, 0, 0)))
		_, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_MPTCP)
		check("mptcp socket", err)
		_, err = unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM, unix.IPPROTO_UDPLITE)
		check("udplite socket", err)
		_, err = unix.Socketpair(unix.AF_INET, unix.SOCK_STREAM, 0)
		check("inet socketpair", err)
		check("io_uring_setup", errnoOf(unix.Syscall(unix.SYS_IO_URING_SETUP, 1, 0, 0)))
		// clone3 fails with ENOSYS, so that runtimes fall back to clone.
		if err := errnoOf(unix.Syscall(unix.SYS_CLONE3, 0, 0, 0)); !errors.Is(err, unix.ENOSYS) {
			bad = append(bad, fmt.Sprintf("clone3: %v, want ENOSYS", err))
		}
		if _, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0); err != nil {
			bad = append(bad, fmt.Sprintf("unix socketpair: %v", err))
		}
		if len(bad) > 0 {
			fmt.Println(strings.Join(bad, "\n"))
			return 1
		}
		return 0
	case "x32":
		unix.RawSyscall(x32SyscallBit|unix.SYS_GETPID, 0, 0, 0)
		return 0
	case "exec":
		// The workload runs a Go runtime, os/exec, sockets and net/http under the inherited
		// filter: the allowlist is what such a program needs.
		env := []string{helperEnv + "=workload"}
		if err := syscall.Exec("/proc/self/exe", []string{os.Args[0]}, env); err != nil {
			fmt.Println("exec:", err)
		}
		return 3
	}
	return 3
}

func errnoOf(_, _ uintptr, e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

func workload() int {
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := make([]byte, 8<<20)
			for i := range b {
				b[i] = byte(i)
			}
			time.Sleep(10 * time.Millisecond)
		}()
	}
	wg.Wait()
	runtime.GC()
	child := exec.Command("/proc/self/exe", "-test.run=^$")
	child.Env = []string{}
	out, err := child.CombinedOutput()
	if err != nil {
		fmt.Printf("os/exec under the filter: %v: %s\n", err, out)
		return 1
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println("listen:", err)
		return 1
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })}
	go srv.Serve(ln)
	resp, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		fmt.Println("http:", err)
		return 1
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "ok" {
		fmt.Printf("http body %q\n", body)
		return 1
	}
	f, err := os.CreateTemp("", "seccomp-")
	if err != nil {
		fmt.Println("create:", err)
		return 1
	}
	f.WriteString("x")
	f.Sync()
	f.Close()
	os.Rename(f.Name(), f.Name()+".2")
	if err := os.Remove(f.Name() + ".2"); err != nil {
		fmt.Println("files:", err)
		return 1
	}
	return 0
}

func runHelper(t *testing.T, scenario string) (*os.ProcessState, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+scenario)
	out, _ := cmd.CombinedOutput()
	return cmd.ProcessState, string(out)
}

func TestKernelDeniesUnderFilter(t *testing.T) {
	st, out := runHelper(t, "denied")
	if st.ExitCode() != 0 {
		t.Fatalf("helper exit %v: %s", st, out)
	}
}

func TestKernelKillsX32(t *testing.T) {
	st, out := runHelper(t, "x32")
	ws := st.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGSYS {
		t.Fatalf("an x32 system call under the filter ended the process with %v, want SIGSYS: %s", st, out)
	}
}

func TestGoProgramRunsUnderFilter(t *testing.T) {
	st, out := runHelper(t, "exec")
	if st.ExitCode() != 0 {
		t.Fatalf("a Go program under the filter: %v: %s", st, out)
	}
}
