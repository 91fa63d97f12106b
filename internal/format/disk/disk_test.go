package disk

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

const mib = 1 << 20

func testSpecs() []PartitionSpec {
	return []PartitionSpec{
		{Name: "bay0-state", Size: 1 * mib},
		{Name: "spine-a", Size: 4 * mib},
		{Name: "spine-b", Size: 4 * mib},
		{Name: "persist", Size: 2 * mib},
	}
}

// create makes a disk from testSpecs in a temporary directory.
func create(t *testing.T, seed string) (string, []Partition) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	parts, err := Create(path, testSpecs(), seed)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return path, parts
}

func readFile(t *testing.T, path string) []Partition {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	parts, err := ReadPartitions(f, fi.Size())
	if err != nil {
		t.Fatalf("ReadPartitions: %v", err)
	}
	return parts
}

func TestCreateRoundTrip(t *testing.T) {
	path, parts := create(t, "seed")
	got := readFile(t, path)
	if !slices.Equal(got, parts) {
		t.Fatalf("ReadPartitions = %+v\nCreate returned %+v", got, parts)
	}
	specs := testSpecs()
	if len(got) != len(specs) {
		t.Fatalf("%d partitions, want %d", len(got), len(specs))
	}
	typ, err := ParseGUID(LinuxFilesystem)
	if err != nil {
		t.Fatal(err)
	}
	next := int64(mib)
	guids := map[[16]byte]bool{}
	for i, p := range got {
		if p.Index != i+1 || p.Name != specs[i].Name || p.Start != next || p.Size != specs[i].Size || p.Type != typ {
			t.Errorf("partition %d = %+v, want index %d name %q start %d size %d", i, p, i+1, specs[i].Name, next, specs[i].Size)
		}
		next += p.Size
		s := FormatGUID(p.GUID)
		if s[14] != '5' || !strings.ContainsRune("89AB", rune(s[19])) {
			t.Errorf("partition %q GUID %s is not an RFC 4122 version 5 UUID", p.Name, s)
		}
		guids[p.GUID] = true
	}
	if len(guids) != len(got) {
		t.Errorf("partition GUIDs are not unique: %v", guids)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := next + mib; fi.Size() != want {
		t.Errorf("image is %d bytes, want %d (1 MiB + partitions + 1 MiB)", fi.Size(), want)
	}
	if _, err := os.Stat(path + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s.tmp left behind: %v", path, err)
	}
}

// sfdiskJSON is the part of `sfdisk --json` output we compare.
type sfdiskJSON struct {
	PartitionTable struct {
		Label      string `json:"label"`
		ID         string `json:"id"`
		FirstLBA   int64  `json:"firstlba"`
		LastLBA    int64  `json:"lastlba"`
		SectorSize int64  `json:"sectorsize"`
		Partitions []struct {
			Start int64  `json:"start"`
			Size  int64  `json:"size"`
			Type  string `json:"type"`
			UUID  string `json:"uuid"`
			Name  string `json:"name"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

func lookTool(t *testing.T, tool, pkg string) string {
	t.Helper()
	for _, dir := range []string{"", "/usr/sbin/", "/sbin/"} {
		if p, err := exec.LookPath(dir + tool); err == nil {
			return p
		}
	}
	t.Fatalf("%s not found: install the Debian package %s", tool, pkg)
	return ""
}

func TestCreateMatchesSfdisk(t *testing.T) {
	sfdisk := lookTool(t, "sfdisk", "fdisk")
	path, parts := create(t, "seed")
	out, err := exec.Command(sfdisk, "--json", path).Output()
	if err != nil {
		t.Fatalf("sfdisk --json: %v", err)
	}
	var js sfdiskJSON
	if err := json.Unmarshal(out, &js); err != nil {
		t.Fatalf("parse sfdisk output: %v\n%s", err, out)
	}
	pt := js.PartitionTable
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	sectors := fi.Size() / SectorSize
	if pt.Label != "gpt" || pt.SectorSize != SectorSize || pt.FirstLBA != headSectors || pt.LastLBA != sectors-1-tailSectors {
		t.Errorf("sfdisk table = label %q sector size %d usable [%d, %d], want gpt %d [%d, %d]",
			pt.Label, pt.SectorSize, pt.FirstLBA, pt.LastLBA, SectorSize, headSectors, sectors-1-tailSectors)
	}
	if want := FormatGUID(derivedGUID("disk", "seed", "")); pt.ID != want {
		t.Errorf("sfdisk disk id %s, want %s", pt.ID, want)
	}
	if len(pt.Partitions) != len(parts) {
		t.Fatalf("sfdisk sees %d partitions, want %d:\n%s", len(pt.Partitions), len(parts), out)
	}
	for i, sp := range pt.Partitions {
		p := parts[i]
		if sp.Name != p.Name || sp.Start*SectorSize != p.Start || sp.Size*SectorSize != p.Size ||
			sp.Type != LinuxFilesystem || sp.UUID != FormatGUID(p.GUID) {
			t.Errorf("sfdisk partition %d = %+v, want %+v (uuid %s)", i+1, sp, p, FormatGUID(p.GUID))
		}
	}
}

func TestCreatePassesSgdiskVerify(t *testing.T) {
	sgdisk := lookTool(t, "sgdisk", "gdisk")
	path, _ := create(t, "seed")
	out, err := exec.Command(sgdisk, "-v", path).CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("No problems found")) {
		t.Fatalf("sgdisk -v: %v\n%s", err, out)
	}
}

func TestCreateReproducible(t *testing.T) {
	p1, parts1 := create(t, "seed")
	p2, parts2 := create(t, "seed")
	b1, err := os.ReadFile(p1)
	if err != nil {
		t.Fatal(err)
	}
	b2, err := os.ReadFile(p2)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b1, b2) || !slices.Equal(parts1, parts2) {
		t.Fatal("two disks from the same inputs differ")
	}
	p3, parts3 := create(t, "other seed")
	b3, err := os.ReadFile(p3)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(b1, b3) {
		t.Error("a different seed gives the same bytes")
	}
	for i := range parts1 {
		if parts1[i].GUID == parts3[i].GUID {
			t.Errorf("partition %q has the same GUID under two seeds", parts1[i].Name)
		}
	}
	// The fields are length-prefixed: moving a byte from seed to name changes the GUID.
	if derivedGUID("partition", "ab", "c") == derivedGUID("partition", "a", "bc") {
		t.Error("derivedGUID does not separate seed and name")
	}
}

// TestCreateGolden pins the bytes Create writes for fixed inputs.
func TestCreateGolden(t *testing.T) {
	path, parts := create(t, "golden")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var dump strings.Builder
	fmt.Fprintf(&dump, "disk %s size %d sha256 %x\n", FormatGUID(derivedGUID("disk", "golden", "")), len(b), sha256.Sum256(b))
	for _, p := range parts {
		fmt.Fprintf(&dump, "%d %s start %d size %d type %s guid %s\n", p.Index, p.Name, p.Start, p.Size, FormatGUID(p.Type), FormatGUID(p.GUID))
	}
	golden := filepath.Join("testdata", "create.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(dump.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if dump.String() != string(want) {
		t.Errorf("Create output changed:\n got %s\nwant %s", dump.String(), want)
	}
}

func TestCreateRejectsBadSpecs(t *testing.T) {
	many := make([]PartitionSpec, NumEntries+1)
	for i := range many {
		many[i] = PartitionSpec{Name: fmt.Sprintf("p%d", i), Size: mib}
	}
	for _, tc := range []struct {
		name  string
		specs []PartitionSpec
	}{
		{"zero size", []PartitionSpec{{Name: "a", Size: 0}}},
		{"negative size", []PartitionSpec{{Name: "a", Size: -mib}}},
		{"unaligned size", []PartitionSpec{{Name: "a", Size: mib + 512}}},
		{"huge size", []PartitionSpec{{Name: "a", Size: 1 << 62}}},
		{"empty name", []PartitionSpec{{Name: "", Size: mib}}},
		{"long name", []PartitionSpec{{Name: strings.Repeat("x", MaxNameLen+1), Size: mib}}},
		{"space in name", []PartitionSpec{{Name: "spine a", Size: mib}}},
		{"non-ASCII name", []PartitionSpec{{Name: "spine-ä", Size: mib}}},
		{"duplicate name", []PartitionSpec{{Name: "a", Size: mib}, {Name: "a", Size: mib}}},
		{"too many", many},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "disk.img")
			_, err := Create(path, tc.specs, "seed")
			if !errors.Is(err, ErrBadSpec) {
				t.Fatalf("Create = %v, want ErrBadSpec", err)
			}
			for _, p := range []string{path, path + ".tmp"} {
				if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s exists after a failed Create", p)
				}
			}
		})
	}
	// The longest name is fine.
	if _, err := Create(filepath.Join(t.TempDir(), "d"), []PartitionSpec{{Name: strings.Repeat("x", MaxNameLen), Size: mib}}, ""); err != nil {
		t.Errorf("Create with a %d-character name: %v", MaxNameLen, err)
	}
}

// TestCreateFailureLeavesNothing fails Create after the image was written
// (the rename cannot replace a directory) and checks that it cleans up.
func TestCreateFailureLeavesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.MkdirAll(filepath.Join(path, "keep"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Create(path, testSpecs(), "seed"); err == nil {
		t.Fatal("Create over a directory succeeded")
	}
	if _, err := os.Stat(path + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s.tmp left behind: %v", path, err)
	}
	if _, err := os.Stat(filepath.Join(path, "keep")); err != nil {
		t.Errorf("the directory at path was touched: %v", err)
	}

	// A missing directory fails before anything is written.
	missing := filepath.Join(t.TempDir(), "no", "disk.img")
	if _, err := Create(missing, testSpecs(), "seed"); err == nil {
		t.Fatal("Create in a missing directory succeeded")
	}
}

func TestCreateReplacesExisting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Create(path, testSpecs(), "seed"); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, path); len(got) != len(testSpecs()) {
		t.Errorf("replaced disk has %d partitions", len(got))
	}
}

func TestFind(t *testing.T) {
	_, parts := create(t, "seed")
	p, err := Find(parts, "spine-b")
	if err != nil || p.Index != 3 {
		t.Errorf("Find(spine-b) = %+v, %v", p, err)
	}
	_, err = Find(parts, "spine-c")
	if !errors.Is(err, ErrNoPartition) || !strings.Contains(err.Error(), `"spine-c"`) {
		t.Errorf("Find(spine-c) error = %v, want ErrNoPartition naming spine-c", err)
	}
	dup := append(slices.Clone(parts), Partition{Index: 9, Name: "spine-b"})
	if _, err := Find(dup, "spine-b"); !errors.Is(err, ErrAmbiguous) {
		t.Errorf("Find with a duplicate name = %v, want ErrAmbiguous", err)
	}
}

func TestGUIDText(t *testing.T) {
	g, err := ParseGUID(LinuxFilesystem)
	if err != nil {
		t.Fatal(err)
	}
	// GPT stores the first three fields little-endian.
	want := [16]byte{0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4}
	if g != want {
		t.Errorf("ParseGUID(%s) = % x, want % x", LinuxFilesystem, g, want)
	}
	if s := FormatGUID(g); s != LinuxFilesystem {
		t.Errorf("FormatGUID = %s, want %s", s, LinuxFilesystem)
	}
	for _, bad := range []string{"", "0FC63DAF-8483-4772-8E79-3D69D8477DE", "0FC63DAF+8483-4772-8E79-3D69D8477DE4", "0FC63DAF-8483-4772-8E79-3D69D8477DEX"} {
		if _, err := ParseGUID(bad); err == nil {
			t.Errorf("ParseGUID(%q) succeeded", bad)
		}
	}
	// The name space is what its comment says.
	url, err := parseUUID("6ba7b811-9dad-11d1-80b4-00c04fd430c8") // RFC 4122 URL name space
	if err != nil {
		t.Fatal(err)
	}
	h := sha1.Sum(append(url[:], "alpinespine.org/spine/disk"...))
	h[6] = h[6]&0x0f | 0x50
	h[8] = h[8]&0x3f | 0x80
	if ns := guidNamespace(); !bytes.Equal(ns[:], h[:16]) {
		t.Errorf("guidNamespace = % x, want % x", ns, h[:16])
	}
}
