package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The modes of issue 19's exec health check and log flood tests:
//
//	idle NAME        the workload: leaves a marker in its /tmp, says so once, and waits
//	check NAME       the exec health check, run by bay0 inside persona NAME: one line saying
//	                 what it is and what it could do; it passes only if it ran confined
//	check-hang       a check that starts a child and never ends: only its timeout ends it
//	flood DURATION   writes lines as fast as it can for DURATION, then ends
//
// A check's line is read back through bay0's status (health_output), never from the console.

// idleMarker is where the idle workload leaves its mark, in the persona's own /tmp.
const idleMarker = "/tmp/idle-marker"

// checkCount counts the checks made in this instance, in the persona's own /tmp.
const checkCount = "/tmp/check-count"

func idle(name string) {
	if err := os.WriteFile(idleMarker, []byte("workload of "+name), 0o644); err != nil {
		fmt.Printf("probe: idle: %s: %v\n", name, err)
	}
	fmt.Printf("probe: idle: %s up\n", name)
	for {
		time.Sleep(time.Hour)
	}
}

func flood(d time.Duration) {
	w := bufio.NewWriterSize(os.Stdout, 4<<10)
	end := time.Now().Add(d)
	for i := 0; time.Now().Before(end); i++ {
		fmt.Fprintf(w, "probe: flood line %d\n", i)
	}
	w.Flush()
}

// leftover starts a child that outlives the check (and holds its output open): bay0 must
// kill it with the check.
func leftover() error {
	_, err := os.StartProcess("/bin/probe", []string{"/bin/probe", "leftover"}, &os.ProcAttr{
		Files: []*os.File{nil, os.Stdout, os.Stderr}, Sys: &unix.SysProcAttr{Setsid: true}})
	return err
}

func checkHang() {
	fmt.Println("probe-check: hanging")
	_ = leftover()
	for {
		time.Sleep(time.Hour)
	}
}

// healthCheck reports, on one line, who the check runs as and what it could do, and whether
// it ran confined: every attempt to reach past the persona must fail.
func healthCheck(name string) bool {
	var facts, bad []string
	fact := func(k string, v any) { facts = append(facts, fmt.Sprintf("%s=%v", k, v)) }
	must := func(what string, ok bool) {
		if !ok {
			bad = append(bad, what)
		}
	}
	n := 1
	if b, err := os.ReadFile(checkCount); err == nil {
		n, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		n++
	}
	must("count", os.WriteFile(checkCount, []byte(strconv.Itoa(n)), 0o644) == nil)
	fact("n", n)
	fact("uid", os.Getuid())
	fact("gid", os.Getgid())
	must("uid", os.Getuid() >= 100000 && os.Getgid() >= 100000)
	st := procStatus()
	for _, k := range []string{"CapEff", "CapPrm", "CapBnd", "CapAmb"} {
		must(k, st[k] == "0000000000000000")
	}
	fact("capbnd", st["CapBnd"])
	fact("nnp", st["NoNewPrivs"])
	fact("seccomp", st["Seccomp"])
	must("nnp", st["NoNewPrivs"] == "1")
	must("seccomp", st["Seccomp"] == "2")
	cg, _ := os.ReadFile("/proc/self/cgroup")
	fact("cgroup", strings.TrimSpace(string(cg)))
	must("cgroup", strings.TrimSpace(string(cg)) == "0::/health/check")
	host, _ := os.Hostname()
	must("hostname", host == name)
	cmd, _ := os.ReadFile("/proc/1/cmdline")
	pid1 := strings.SplitN(string(cmd), "\x00", 2)[0]
	fact("pid1", pid1)
	must("pid1", pid1 == "/bin/probe")
	mark, _ := os.ReadFile(idleMarker)
	must("tmp", string(mark) == "workload of "+name)
	fact("tmp", len(mark) > 0)
	// persona-check, the check's parent, is in the persona's PID namespace too.
	self := strconv.Itoa(os.Getpid())
	parent := st["PPid"]
	// Every process but the workload, this check and its parent is a leftover of an earlier
	// check.
	others := 0
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err == nil && e.Name() != "1" && e.Name() != self && e.Name() != parent {
			others++
		}
	}
	fact("others", others)
	must("others", others == 0)
	// Files only: the Go runtime's own epoll and eventfd, and the directory read, are not
	// the check's inheritance.
	ents, _ = os.ReadDir("/proc/self/fd")
	files := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && !strings.HasPrefix(l, "anon_inode:") && l != "/proc/"+self+"/fd" {
			files++
		}
	}
	fact("fds", files)
	must("fds", files == 3)
	// Attempts that must all fail.
	escapes := 0
	try := func(what string, err error) {
		if err == nil {
			escapes++
			bad = append(bad, "ESCAPE:"+what)
		}
	}
	try("unshare", unix.Unshare(unix.CLONE_NEWUSER|unix.CLONE_NEWNS))
	try("chroot", unix.Chroot("/tmp"))
	try("setuid", unix.Setuid(0))
	try("mount", unix.Mount("none", "/tmp", "tmpfs", 0, ""))
	try("write-tree", os.WriteFile("/bin/x", nil, 0o644))
	_, _, e := unix.RawSyscall(unix.SYS_PTRACE, unix.PTRACE_ATTACH, 1, 0)
	try("ptrace", errnoErr(e))
	if fd, err := unix.Open("/proc/self/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
		try("setns", unix.Setns(fd, 0))
		unix.Close(fd)
	}
	for _, p := range []string{"/bin/bay0", "/persist", "/sys/fs/cgroup", "/proc/1/root/bin/bay0"} {
		_, err := os.Stat(p)
		try("see "+p, err)
	}
	fact("escapes", escapes)
	// The next check must not find this child, which holds the output open and never ends.
	err := leftover()
	fact("leftover", err == nil)
	must("leftover", err == nil)
	fmt.Printf("probe-check: %s bad=%v\n", strings.Join(facts, " "), bad)
	return len(bad) == 0
}

func errnoErr(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// procStatus reads this process's /proc/self/status as key: value.
func procStatus() map[string]string {
	m := map[string]string{}
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}
