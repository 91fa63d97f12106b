package disk

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeSysfs lays out <root>/class/block/<dev>/uevent like the kernel does,
// with class/block entries as symlinks into devices/ for the partitions.
func fakeSysfs(t *testing.T, uevents map[string]string) string {
	t.Helper()
	root := t.TempDir()
	class := filepath.Join(root, "class", "block")
	if err := os.MkdirAll(class, 0o755); err != nil {
		t.Fatal(err)
	}
	for dev, uevent := range uevents {
		real := filepath.Join(root, "devices", "pci0000:00", "virtio0", "block", dev)
		if err := os.MkdirAll(real, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(real, "uevent"), []byte(uevent), 0o444); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(real, filepath.Join(class, dev)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func part(dev, n, name string) string {
	return "MAJOR=254\nMINOR=" + n + "\nDEVNAME=" + dev + "\nDEVTYPE=partition\nDISKSEQ=1\nPARTN=" + n + "\nPARTNAME=" + name + "\n"
}

func baseUevents() map[string]string {
	return map[string]string{
		"vda":   "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\nDISKSEQ=1\n",
		"vda1":  part("vda1", "1", "bay0-state"),
		"vda2":  part("vda2", "2", "spine-a"),
		"vda3":  part("vda3", "3", "spine-b"),
		"vda4":  part("vda4", "4", "persist"),
		"dm-0":  "MAJOR=253\nMINOR=0\nDEVNAME=dm-0\nDEVTYPE=disk\nDISKSEQ=5\n",
		"loop0": "MAJOR=7\nMINOR=0\nDEVNAME=loop0\nDEVTYPE=disk\nDISKSEQ=2\n",
	}
}

func TestFindBlockDevice(t *testing.T) {
	root := fakeSysfs(t, baseUevents())
	for name, want := range map[string]string{
		"bay0-state": "/dev/vda1",
		"spine-a":    "/dev/vda2",
		"spine-b":    "/dev/vda3",
		"persist":    "/dev/vda4",
	} {
		got, err := FindBlockDevice(root, name)
		if err != nil || got != want {
			t.Errorf("FindBlockDevice(%q) = %q, %v, want %q", name, got, err, want)
		}
	}
	for _, name := range []string{"spine-c", "", "spine", "SPINE-A"} {
		_, err := FindBlockDevice(root, name)
		if !errors.Is(err, ErrNoPartition) || (name != "" && !strings.Contains(err.Error(), `"`+name+`"`)) {
			t.Errorf("FindBlockDevice(%q) = %v, want ErrNoPartition naming it", name, err)
		}
	}
}

func TestFindBlockDeviceRefusesDuplicates(t *testing.T) {
	u := baseUevents()
	u["vdb2"] = part("vdb2", "2", "spine-a") // a second disk with a slot of the same name
	root := fakeSysfs(t, u)
	_, err := FindBlockDevice(root, "spine-a")
	if !errors.Is(err, ErrAmbiguous) || !strings.Contains(err.Error(), "/dev/vda2") || !strings.Contains(err.Error(), "/dev/vdb2") {
		t.Errorf("FindBlockDevice with two spine-a = %v, want ErrAmbiguous naming both devices", err)
	}
	if got, err := FindBlockDevice(root, "spine-b"); err != nil || got != "/dev/vda3" {
		t.Errorf("FindBlockDevice(spine-b) = %q, %v", got, err)
	}
}

func TestFindBlockDeviceRejectsBadDevname(t *testing.T) {
	for _, dev := range []string{"", "../etc/shadow", "/dev/vda2"} {
		u := baseUevents()
		u["vda2"] = strings.Replace(part("vda2", "2", "spine-a"), "DEVNAME=vda2", "DEVNAME="+dev, 1)
		root := fakeSysfs(t, u)
		if got, err := FindBlockDevice(root, "spine-a"); err == nil {
			t.Errorf("DEVNAME=%q: FindBlockDevice = %q, want an error", dev, got)
		}
	}
}

func TestFindBlockDeviceNoSysfs(t *testing.T) {
	if _, err := FindBlockDevice(filepath.Join(t.TempDir(), "missing"), "spine-a"); err == nil {
		t.Error("FindBlockDevice without class/block succeeded")
	}
}

func TestFindBlockDeviceSkipsVanishedDevice(t *testing.T) {
	root := fakeSysfs(t, baseUevents())
	// A dangling class/block entry: the device went away between ReadDir and ReadFile.
	if err := os.Symlink(filepath.Join(root, "devices", "gone"), filepath.Join(root, "class", "block", "vdz")); err != nil {
		t.Fatal(err)
	}
	if got, err := FindBlockDevice(root, "persist"); err != nil || got != "/dev/vda4" {
		t.Errorf("FindBlockDevice(persist) = %q, %v", got, err)
	}
}
