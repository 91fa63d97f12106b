package persona

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// fakeNet makes a /sys/class/net lookalike: name -> type, ifindex and whether it has a device.
func fakeNet(t *testing.T, devs map[string][3]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, d := range devs {
		p := filepath.Join(dir, name)
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(p, "type"), []byte(d[0]+"\n"), 0o644)
		os.WriteFile(filepath.Join(p, "ifindex"), []byte(d[1]+"\n"), 0o644)
		if d[2] != "" {
			os.Mkdir(filepath.Join(p, "device"), 0o755)
		}
	}
	return dir
}

func TestMachineNIC(t *testing.T) {
	dir := fakeNet(t, map[string][3]string{
		"lo":     {"772", "1", ""},
		"dummy0": {"1", "2", ""},
		"sit0":   {"776", "3", "y"},
		"eth1":   {"1", "5", "y"},
		"eth0":   {"1", "4", "y"},
	})
	name, index, err := machineNIC(dir)
	if err != nil || name != "eth0" || index != 4 {
		t.Errorf("machineNIC = %q %d %v, want eth0 4", name, index, err)
	}
	dir = fakeNet(t, map[string][3]string{"lo": {"772", "1", ""}, "dummy0": {"1", "2", ""}})
	if _, _, err := machineNIC(dir); !errors.Is(err, ErrNoNIC) {
		t.Errorf("no card: %v, want ErrNoNIC", err)
	}
	dir = fakeNet(t, map[string][3]string{"eth0": {"1", "x", "y"}})
	if _, _, err := machineNIC(dir); err == nil {
		t.Error("a bad ifindex was accepted")
	}
}
