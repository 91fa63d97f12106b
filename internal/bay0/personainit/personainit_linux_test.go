package personainit

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/bay0/launch"
	"alpinespine.org/spine/internal/bay0/persona"
	"alpinespine.org/spine/internal/bay0/seccomp"
)

// The test binary is both persona-init and the workload, as runc's integration tests use
// theirs: with the persona-init argument it is the child side of a launch; with workloadEnv
// set it reports what it sees inside.
const workloadEnv = "PERSONAINIT_TEST_WORKLOAD"

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == launch.InitArg {
		Main(os.Args[2:])
	}
	if os.Getenv(workloadEnv) != "" {
		workload()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func workload() {
	host, _ := os.Hostname()
	fmt.Printf("hostname %s\n", host)
	fmt.Printf("pid %d\n", os.Getpid())
	fmt.Printf("ids %d:%d\n", os.Getuid(), os.Getgid())
	var run unix.Stat_t
	_ = unix.Stat("/run", &run)
	fmt.Printf("run owner %d:%d\n", run.Uid, run.Gid)
	var nofile unix.Rlimit
	_ = unix.Getrlimit(unix.RLIMIT_NOFILE, &nofile)
	fmt.Printf("nofile %d %d\n", nofile.Cur, nofile.Max)
	fmt.Printf("write shm: %v\n", os.WriteFile("/dev/shm/x", []byte("x"), 0o600))
	hosts, err := os.ReadFile("/etc/hosts")
	fmt.Printf("hosts %q %v\n", hosts, err)
	resolv, err := os.ReadFile("/etc/resolv.conf")
	fmt.Printf("resolv %q %v\n", resolv, err)
	fmt.Printf("write etc: %v\n", os.WriteFile("/etc/hosts", nil, 0o644) != nil)
	st, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(st), "\n") {
		if strings.HasPrefix(l, "CapEff") || strings.HasPrefix(l, "CapBnd") || strings.HasPrefix(l, "NoNewPrivs") || strings.HasPrefix(l, "Seccomp:") {
			fmt.Println(strings.Join(strings.Fields(l), " "))
		}
	}
	fmt.Printf("write root: %v\n", os.WriteFile("/x", nil, 0o644) != nil)
	fmt.Printf("write tree: %v\n", os.WriteFile("/bin/x", nil, 0o644) != nil)
	fmt.Printf("write tmp: %v\n", os.WriteFile("/tmp/x", nil, 0o644))
	fmt.Printf("mount: %v\n", unix.Mount("tmpfs", "/tmp", "tmpfs", 0, ""))
	kcore, _ := os.ReadFile("/proc/kcore")
	fmt.Printf("kcore bytes %d\n", len(kcore))
	fmt.Printf("env %s\n", strings.Join(os.Environ(), ","))
	ents, _ := os.ReadDir("/")
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	fmt.Printf("root %v\n", names)
	// Beyond 0, 1 and 2 only the Go runtime's own fds (netpoll, the ReadDir) may be open:
	// nothing inherited from persona-init or the parent.
	fds, _ := os.ReadDir("/proc/self/fd")
	var extra []string
	for _, fd := range fds {
		if fd.Name() > "2" || len(fd.Name()) > 1 {
			target, _ := os.Readlink("/proc/self/fd/" + fd.Name())
			extra = append(extra, target)
		}
	}
	fmt.Printf("extra fds %v\n", extra)
}

// runInit runs the test binary as persona-init in fresh namespaces, as persona.Start does but
// without a cgroup (the build host has cgroup v1 controllers), and returns the workload's
// output and persona-init's reports.
func runInit(t *testing.T, cfg launch.Config) (string, error) {
	t.Helper()
	return launchReleased(t, cfg, true)
}

// launchReleased is runInit with the parent's release given or, if not release, withheld:
// the release pipe is closed without its byte.
func launchReleased(t *testing.T, cfg launch.Config, release bool) (string, error) {
	t.Helper()
	cfgR, cfgW, _ := os.Pipe()
	syncR, syncW, _ := os.Pipe()
	relR, relW, _ := os.Pipe()
	outR, outW, _ := os.Pipe()
	devnull, _ := os.Open(os.DevNull)
	ids := []syscall.SysProcIDMap{{ContainerID: 0, HostID: 300000, Size: launch.IDBlock}}
	attr := &syscall.ProcAttr{
		Env:   []string{"GOMAXPROCS=1"},
		Files: []uintptr{devnull.Fd(), outW.Fd(), outW.Fd(), cfgR.Fd(), syncW.Fd(), relR.Fd()},
		Sys: &syscall.SysProcAttr{
			Cloneflags:  unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNS | unix.CLONE_NEWNET | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS,
			UidMappings: ids, GidMappings: ids, Setsid: true,
			Credential: &syscall.Credential{NoSetGroups: true},
		},
	}
	pid, err := syscall.ForkExec("/proc/self/exe", []string{"bay0", launch.InitArg, "--config-fd=3"}, attr)
	if err != nil {
		t.Fatal(err)
	}
	cfgR.Close()
	syncW.Close()
	relR.Close()
	outW.Close()
	devnull.Close()
	if err := cfg.Encode(cfgW); err != nil {
		t.Fatal(err)
	}
	cfgW.Close()
	syncR.SetReadDeadline(time.Now().Add(20 * time.Second))
	stage, rerr := persona.ReadReports(syncR, func() error {
		if !release {
			relW.Close()
			return nil
		}
		_, err := relW.Write([]byte{1})
		return err
	})
	relW.Close()
	if rerr != nil {
		rerr = fmt.Errorf("%s: %w", stage, rerr)
	}
	var out bytes.Buffer
	io.Copy(&out, outR)
	var ws syscall.WaitStatus
	syscall.Wait4(pid, &ws, 0, nil)
	return out.String(), rerr
}

func testConfig(t *testing.T) launch.Config {
	t.Helper()
	tree := t.TempDir()
	if err := os.MkdirAll(filepath.Join(tree, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "bin", "workload"), self, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "hello"), []byte("hi"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("bin", filepath.Join(tree, "sbin")); err != nil {
		t.Fatal(err)
	}
	// The tree is read from inside the namespace, whose root is uid 300000 on the host.
	for _, p := range []string{filepath.Dir(tree), tree} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	filter, err := seccomp.Compile(seccomp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fb, _ := filter.MarshalBinary()
	return launch.Config{Version: launch.ConfigVersion, Name: "hosttest", Tree: tree,
		Exec: []string{"/bin/workload", "-test.run=^$"}, Env: []string{workloadEnv + "=1"},
		TmpSize: 1 << 20, RunSize: 1 << 20, ShmSize: 1 << 20, Seccomp: fb,
		Rlimits: []launch.Rlimit{{Resource: unix.RLIMIT_NOFILE, Value: 4242}}}
}

func TestLaunchOnHost(t *testing.T) {
	out, err := runInit(t, testConfig(t))
	if err != nil {
		t.Fatalf("launch: %v\n%s", err, out)
	}
	for _, want := range []string{
		"hostname hosttest", "pid 1", "CapEff: 0000000000000000", "CapBnd: 0000000000000000",
		"NoNewPrivs: 1", "Seccomp: 2", "write root: true", "write tree: true", "write tmp: <nil>",
		"mount: operation not permitted", "kcore bytes 0",
		"env " + workloadEnv + "=1,PATH=/usr/local/bin:/usr/bin:/bin,HOME=/",
		"root [bin dev etc hello proc run sbin tmp]", "ids 0:0", "run owner 0:0", "nofile 4242 4242", "write shm: <nil>",
		`hosts "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\thosttest\n" <nil>`,
		"resolv \"\" open /etc/resolv.conf: no such file or directory", "write etc: true",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("workload output lacks %q:\n%s", want, out)
		}
	}
	i := strings.Index(out, "extra fds [")
	if i < 0 {
		t.Fatalf("no fd report:\n%s", out)
	}
	fds := out[i:]
	fds = fds[:strings.IndexByte(fds, '\n')]
	if strings.Contains(fds, "pipe:") || strings.Contains(fds, "/tmp") || strings.Contains(fds, "/sys") {
		t.Errorf("the workload inherited an fd: %s", fds)
	}
}

// TestLaunchAsUser: with a user, the workload runs as that uid and gid inside the namespace,
// still with no capabilities at all, and /run is its own.
func TestLaunchAsUser(t *testing.T) {
	cfg := testConfig(t)
	cfg.User = &launch.IDs{UID: 104, GID: 110}
	out, err := runInit(t, cfg)
	if err != nil {
		t.Fatalf("launch: %v\n%s", err, out)
	}
	for _, want := range []string{"ids 104:110", "run owner 104:110", "write shm: <nil>", "CapEff: 0000000000000000", "CapBnd: 0000000000000000",
		"NoNewPrivs: 1", "Seccomp: 2", "write tmp: <nil>", "mount: operation not permitted"} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("workload output lacks %q:\n%s", want, out)
		}
	}
}

// TestLaunchGeneratesOnlyMissingEtc: the tree's own /etc files win; a generated resolv.conf
// sits beside them, read-only like them.
func TestLaunchGeneratesOnlyMissingEtc(t *testing.T) {
	cfg := testConfig(t)
	cfg.DNS = []string{"10.0.2.3", "fd00::3"}
	if err := os.MkdirAll(filepath.Join(cfg.Tree, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.Tree, "etc", "hosts"), []byte("10.1.1.1 own\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := runInit(t, cfg)
	if err != nil {
		t.Fatalf("launch: %v\n%s", err, out)
	}
	for _, want := range []string{`hosts "10.1.1.1 own\n" <nil>`, `resolv "nameserver 10.0.2.3\nnameserver fd00::3\n" <nil>`, "write etc: true"} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("workload output lacks %q:\n%s", want, out)
		}
	}
}

func TestLaunchReportsFailure(t *testing.T) {
	cfg := testConfig(t)
	cfg.Exec = []string{"/bin/missing"}
	_, err := runInit(t, cfg)
	if err == nil || !strings.Contains(err.Error(), "exec: exec /bin/missing") {
		t.Fatalf("launch of a missing binary: %v", err)
	}
	cfg = testConfig(t)
	cfg.Tree = filepath.Join(t.TempDir(), "missing")
	_, err = runInit(t, cfg)
	if err == nil || !strings.HasPrefix(err.Error(), "mounts: read tree") {
		t.Fatalf("launch of a missing tree: %v", err)
	}
}

// TestLaunchWaitsForRelease: persona-init never execs the workload until the parent, having
// set the CPU quota, releases it; a parent that closes the release pipe without its byte
// leaves no workload running.
func TestLaunchWaitsForRelease(t *testing.T) {
	out, err := launchReleased(t, testConfig(t), false)
	if err == nil || !strings.HasPrefix(err.Error(), "release: not released by the parent") {
		t.Fatalf("launch without release: %v", err)
	}
	if strings.Contains(out, "ids ") {
		t.Errorf("the workload ran without a release: %q", out)
	}
}
