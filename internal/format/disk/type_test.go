package disk

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"testing"
)

// A spec may name its partition type; sfdisk reads it back, and an unnamed type stays Linux.
func TestPartitionType(t *testing.T) {
	sfdisk := lookTool(t, "sfdisk", "fdisk")
	path := filepath.Join(t.TempDir(), "disk.img")
	specs := []PartitionSpec{{Name: "esp", Size: 2 * mib, Type: EFISystem}, {Name: "data", Size: mib}}
	parts, err := Create(path, specs, "seed")
	if err != nil {
		t.Fatal(err)
	}
	esp, _ := ParseGUID(EFISystem)
	linux, _ := ParseGUID(LinuxFilesystem)
	if got := readFile(t, path); got[0].Type != esp || got[1].Type != linux || got[0] != parts[0] {
		t.Errorf("types read back: %s, %s", FormatGUID(got[0].Type), FormatGUID(got[1].Type))
	}
	out, err := exec.Command(sfdisk, "--json", path).Output()
	if err != nil {
		t.Fatalf("sfdisk --json: %v", err)
	}
	var js sfdiskJSON
	if err := json.Unmarshal(out, &js); err != nil {
		t.Fatal(err)
	}
	if ps := js.PartitionTable.Partitions; len(ps) != 2 || ps[0].Type != EFISystem || ps[1].Type != LinuxFilesystem {
		t.Errorf("sfdisk types:\n%s", out)
	}
	if _, err := Create(path, []PartitionSpec{{Name: "x", Size: mib, Type: "not-a-guid"}}, "seed"); err == nil {
		t.Error("a malformed type GUID was accepted")
	}
}
