package control

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestFindPort(t *testing.T) {
	sysfs := t.TempDir()
	ports := filepath.Join(sysfs, "class", "virtio-ports")
	for dev, name := range map[string]string{"vport0p1": "org.qemu.guest_agent.0\n", "vport1p1": "bay0.ctl\n", "vport1p2": "bay0.ctl.old\n"} {
		if err := os.MkdirAll(filepath.Join(ports, dev), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(ports, dev, "name"), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(ports, "vport2p0"), 0o755); err != nil { // no name file
		t.Fatal(err)
	}
	dev, err := FindPort(sysfs, "bay0.ctl")
	if err != nil || dev != "/dev/vport1p1" {
		t.Errorf("FindPort = %q, %v; want /dev/vport1p1", dev, err)
	}
	if _, err := FindPort(sysfs, "bay0"); !errors.Is(err, ErrNoPort) {
		t.Errorf("FindPort of a missing name = %v, want ErrNoPort", err)
	}
	if _, err := FindPort(t.TempDir(), "bay0.ctl"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("FindPort without virtio-ports = %v, want ErrNotExist", err)
	}
}

func TestOpenPortMissing(t *testing.T) {
	if _, err := OpenPort(t.TempDir(), "bay0.ctl"); err == nil {
		t.Error("OpenPort without a port succeeded")
	}
}
