package vm

import (
	"context"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// hasSeq reports whether args contains want as a contiguous run.
func hasSeq(args, want []string) bool {
	for i := 0; i+len(want) <= len(args); i++ {
		if slices.Equal(args[i:i+len(want)], want) {
			return true
		}
	}
	return false
}

func TestBuildArgs(t *testing.T) {
	t.Parallel()
	base := withDefaults(Config{Kernel: "/k/vmlinux"})
	common := [][]string{
		{"-M", "pc"},
		{"-nodefaults", "-no-user-config", "-display", "none"},
		{"-chardev", "stdio,id=con,signal=off", "-serial", "chardev:con"},
		{"-device", "i6300esb", "-action", "watchdog=reset"},
		{"-device", "pvpanic", "-action", "panic=exit-failure"},
		{"-kernel", "/k/vmlinux"},
		{"-m", "512", "-smp", "1"},
	}
	tests := []struct {
		name    string
		cfg     func(Config) Config
		accel   string
		want    [][]string
		notWant []string
	}{
		{
			name:  "minimal",
			cfg:   func(c Config) Config { return c },
			accel: AccelTCG,
			want: [][]string{
				{"-accel", "tcg", "-cpu", "qemu64,+rdrand"},
				{"-append", "console=ttyS0"},
			},
			notWant: []string{"-initrd", "-drive", "-netdev", "virtio-serial-pci", "virtio-net-pci", "virtio-blk-pci"},
		},
		{
			name: "net without forwards",
			cfg: func(c Config) Config {
				c.Net = true
				return c
			},
			accel: AccelTCG,
			want: [][]string{
				{"-netdev", "user,id=net0,restrict=on", "-device", "virtio-net-pci,netdev=net0"},
			},
		},
		{
			name: "outbound",
			cfg: func(c Config) Config {
				c.Outbound = true
				c.Forwards = []Forward{{HostPort: 8080, GuestPort: 80}}
				return c
			},
			accel: AccelTCG,
			want: [][]string{
				{"-netdev", "user,id=net0,restrict=off,hostfwd=tcp:127.0.0.1:8080-:80", "-device", "virtio-net-pci,netdev=net0"},
			},
		},
		{
			name: "everything",
			cfg: func(c Config) Config {
				c.Initrd = "/k/initrd.cpio"
				c.Disk = "/d/disk.img"
				c.Cmdline = "quiet bay0.x=1"
				c.MemoryMiB = 1024
				c.CPUs = 2
				c.CtlSocket = "/run/ctl.sock"
				c.Forwards = []Forward{{HostPort: 8080, GuestPort: 80}, {HostPort: 2222, GuestPort: 22, GuestAddr: "10.0.2.16"}}
				return c
			},
			accel: AccelKVM,
			want: [][]string{
				{"-accel", "kvm", "-cpu", "host"},
				{"-m", "1024", "-smp", "2"},
				{"-initrd", "/k/initrd.cpio"},
				{"-append", "console=ttyS0 quiet bay0.x=1"},
				{"-drive", "file=/d/disk.img,format=raw,if=none,id=disk0,cache=writeback", "-device", "virtio-blk-pci,drive=disk0"},
				{"-device", "virtio-serial-pci",
					"-chardev", "socket,id=ctl,path=/run/ctl.sock,server=on,wait=off",
					"-device", "virtserialport,chardev=ctl,name=bay0.ctl"},
				{"-netdev", "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=tcp:127.0.0.1:2222-10.0.2.16:22",
					"-device", "virtio-net-pci,netdev=net0"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := buildArgs("/usr/bin/qemu-system-x86_64", tt.cfg(base), tt.accel)
			if args[0] != "/usr/bin/qemu-system-x86_64" {
				t.Errorf("args[0] = %q", args[0])
			}
			for _, w := range append(slices.Clone(tt.want), common...) {
				if tt.name == "everything" && w[0] == "-m" && w[1] == "512" {
					continue
				}
				if !hasSeq(args, w) {
					t.Errorf("args lack %q:\n%q", w, args)
				}
			}
			for _, nw := range tt.notWant {
				if slices.Contains(args, nw) {
					t.Errorf("args contain %q:\n%q", nw, args)
				}
			}
			if again := buildArgs("/usr/bin/qemu-system-x86_64", tt.cfg(base), tt.accel); !slices.Equal(args, again) {
				t.Errorf("buildArgs is not deterministic")
			}
		})
	}
}

// TestStartPassesArgs checks that QEMU receives exactly what Args reports.
func TestStartPassesArgs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out := filepath.Join(dir, "args")
	disk := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(disk, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fakeConfig(t, `for a in "$@"; do printf '%s\n' "$a"; done > `+out+"\nexit 0")
	cfg.Disk = disk
	cfg.CtlSocket = filepath.Join(dir, "ctl.sock")
	cfg.Forwards = []Forward{{HostPort: 10022, GuestPort: 22}}
	cfg.Cmdline = "quiet"
	m := start(t, cfg)
	if res, err := m.Wait(); res.Outcome != PoweredOff || err != nil {
		t.Fatalf("Wait = %+v, %v", res, err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if want := m.Args()[1:]; !slices.Equal(got, want) {
		t.Fatalf("QEMU got\n%q\nArgs() says\n%q", got, want)
	}
	if m.Args()[0] != cfg.QEMU {
		t.Errorf("Args()[0] = %q, want %q", m.Args()[0], cfg.QEMU)
	}
	m.Args()[1] = "clobbered"
	if m.Args()[1] == "clobbered" {
		t.Error("Args returns the machine's own slice")
	}
}

func TestStartValidates(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := fakeConfig(t, "exit 0")
	missing := filepath.Join(dir, "missing")
	tests := []struct {
		name   string
		mod    func(*Config)
		want   string // substring of the error
		target error
	}{
		{"no-kernel", func(c *Config) { c.Kernel = "" }, "no kernel", nil},
		{"missing-kernel", func(c *Config) { c.Kernel = missing }, "kernel: stat " + missing, os.ErrNotExist},
		{"missing-initrd", func(c *Config) { c.Initrd = missing }, "initrd: stat " + missing, os.ErrNotExist},
		{"missing-disk", func(c *Config) { c.Disk = missing }, "disk: stat " + missing, os.ErrNotExist},
		{"missing-qemu", func(c *Config) { c.QEMU = "qemu-system-nonesuch" }, "qemu-system-x86", ErrQEMUNotFound},
		{"missing-socket-dir", func(c *Config) { c.CtlSocket = filepath.Join(missing, "ctl.sock") }, "control socket directory", os.ErrNotExist},
		{"long-socket", func(c *Config) { c.CtlSocket = "/tmp/" + strings.Repeat("s", 103) }, "longer than 107 bytes", nil},
		{"comma", func(c *Config) { c.Disk = "/tmp/a,format=qcow2" }, "contains a comma", nil},
		{"accel", func(c *Config) { c.Accel = "hvf" }, `unknown accelerator "hvf"`, nil},
		{"port", func(c *Config) { c.Forwards = []Forward{{HostPort: 0, GuestPort: 22}} }, "out of range", nil},
		{"guest addr", func(c *Config) { c.Forwards = []Forward{{HostPort: 80, GuestPort: 80, GuestAddr: "10.0.2.15,x=y"}} }, "not IPv4", nil},
		{"negative", func(c *Config) { c.Timeout = -time.Second }, "negative", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.mod(&cfg)
			m, err := Start(context.Background(), cfg)
			if err == nil {
				m.Kill()
				m.Wait()
				t.Fatal("Start succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
			if tt.target != nil && !errors.Is(err, tt.target) {
				t.Errorf("error %v is not %v", err, tt.target)
			}
		})
	}
}

func TestDetectAccel(t *testing.T) {
	t.Parallel()
	kvm := filepath.Join(t.TempDir(), "kvm")
	if err := os.WriteFile(kvm, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tests := []struct {
		name string
		dev  string
		qemu string
		want string
	}{
		{"probe-passes", kvm, "probe-pass", AccelKVM},
		{"probe-fails", kvm, "probe-fail", AccelTCG},
		{"probe-hangs", kvm, "probe-hang", AccelTCG},
		{"no-device", filepath.Join(t.TempDir(), "absent"), "probe-pass", AccelTCG},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			begin := time.Now()
			if got := detectAccel(ctx, fakeQEMU(t, tt.qemu), tt.dev, 300*time.Millisecond); got != tt.want {
				t.Errorf("detectAccel = %q, want %q", got, tt.want)
			}
			if d := time.Since(begin); d > 3*time.Second {
				t.Errorf("detectAccel took %v", d)
			}
		})
	}
}

// TestProbeImage pins the probe guest's bytes: a Multiboot header whose checksum makes the
// first three words sum to zero, entered right after the 32-byte header.
func TestProbeImage(t *testing.T) {
	t.Parallel()
	img := probeImage()
	want := "02b0ad1b00000100fe4f51e40000100000001000000000000000000020001000" +
		"b02ae6f4faf4ebfd"
	if got := hex.EncodeToString(img); got != want {
		t.Fatalf("probeImage = %s\nwant          %s", got, want)
	}
}
