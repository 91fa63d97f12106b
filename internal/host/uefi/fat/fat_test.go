package fat

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if p, err = exec.LookPath("/usr/sbin/" + name); err != nil {
			t.Fatalf("%s not found (install the Debian package %s; scripts/deps.sh does)", name, pkg)
		}
	}
	return p
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// writeImage writes v to a new file and returns its path.
func writeImage(t *testing.T, v Volume) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "esp.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(v.Size); err != nil {
		t.Fatal(err)
	}
	if err := Write(f, v); err != nil {
		t.Fatal(err)
	}
	return p
}

func testVolume() Volume {
	big := make([]byte, 3<<20+123) // many clusters, a partial last one
	rand.New(rand.NewSource(1)).Read(big)
	return Volume{
		Size:  64 << 20,
		Label: "SPINE ESP",
		Seed:  "test",
		Time:  time.Date(2026, 1, 1, 12, 30, 10, 0, time.UTC),
		Files: []File{
			{Path: "EFI/BOOT/BOOTX64.EFI", Data: big},
			{Path: "EFI/SPINE/A.EFI", Data: []byte("slot a")},
			{Path: "EFI/SPINE/EMPTY", Data: nil},
			{Path: "README.TXT", Data: []byte("hello\n")},
		},
	}
}

// dosfstools' fsck finds nothing to repair, and mtools reads every file back byte for byte.
func TestReferenceTools(t *testing.T) {
	fsck := tool(t, "fsck.fat", "dosfstools")
	mtype := tool(t, "mtype", "mtools")
	mdir := tool(t, "mdir", "mtools")
	v := testVolume()
	img := writeImage(t, v)
	out := run(t, fsck, "-n", "-v", img)
	if !strings.Contains(out, "32 bit entries") || strings.Contains(strings.ToLower(out), "dirty") {
		t.Errorf("fsck.fat:\n%s", out)
	}
	t.Setenv("MTOOLS_SKIP_CHECK", "1")
	for _, f := range v.Files {
		got := run(t, mtype, "-i", img, "::/"+f.Path)
		if got != string(f.Data) {
			t.Errorf("%s: mtype read %d bytes (sha256 %x), wrote %d (sha256 %x)", f.Path, len(got),
				sha256.Sum256([]byte(got)), len(f.Data), sha256.Sum256(f.Data))
		}
	}
	listing := run(t, mdir, "-i", img, "::/EFI/BOOT")
	if !strings.Contains(listing, "BOOTX64  EFI") || !strings.Contains(listing, "2026-01-01") {
		t.Errorf("mdir ::/EFI/BOOT:\n%s", listing)
	}
	if root := run(t, mdir, "-i", img, "::/"); !strings.Contains(root, "SPINE ESP") {
		t.Errorf("volume label missing:\n%s", root)
	}
}

func TestReproducible(t *testing.T) {
	a, err := os.ReadFile(writeImage(t, testVolume()))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(writeImage(t, testVolume()))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Error("the same volume written twice differs")
	}
	// The order files are given in does not matter.
	v := testVolume()
	v.Files[0], v.Files[3] = v.Files[3], v.Files[0]
	c, _ := os.ReadFile(writeImage(t, v))
	if !bytes.Equal(a, c) {
		t.Error("file order changes the volume")
	}
	v = testVolume()
	v.Seed = "other"
	d, _ := os.ReadFile(writeImage(t, v))
	if bytes.Equal(a, d) {
		t.Error("the seed does not reach the volume serial number")
	}
}

// The result does not depend on what the target held before.
func TestOverwritesGarbage(t *testing.T) {
	clean, err := os.ReadFile(writeImage(t, testVolume()))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "dirty.img")
	junk := bytes.Repeat([]byte{0xE5, 0x41}, len(clean)/2)
	if err := os.WriteFile(p, junk, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := Write(f, testVolume()); err != nil {
		t.Fatal(err)
	}
	f.Close()
	out := run(t, tool(t, "fsck.fat", "dosfstools"), "-n", p)
	if strings.Contains(out, "Free cluster summary wrong") || strings.Contains(out, "differ") {
		t.Errorf("fsck.fat on a volume written over garbage:\n%s", out)
	}
}

func TestRefuses(t *testing.T) {
	for name, v := range map[string]Volume{
		"too small":     {Size: 32 << 20},
		"odd size":      {Size: 64<<20 + 1},
		"lower case":    {Size: 64 << 20, Files: []File{{Path: "efi/boot/bootx64.efi"}}},
		"long name":     {Size: 64 << 20, Files: []File{{Path: "EFI/BOOT/BOOTX64LONG.EFI"}}},
		"long ext":      {Size: 64 << 20, Files: []File{{Path: "A.EFIX"}}},
		"two dots":      {Size: 64 << 20, Files: []File{{Path: "A.B.C"}}},
		"space":         {Size: 64 << 20, Files: []File{{Path: "A B"}}},
		"empty element": {Size: 64 << 20, Files: []File{{Path: "EFI//A"}}},
		"twice":         {Size: 64 << 20, Files: []File{{Path: "A"}, {Path: "A"}}},
		"file and dir":  {Size: 64 << 20, Files: []File{{Path: "A"}, {Path: "A/B"}}},
		"label":         {Size: 64 << 20, Label: "much too long label"},
		"does not fit":  {Size: 34 << 20, Files: []File{{Path: "BIG", Data: make([]byte, 40<<20)}}},
	} {
		p := filepath.Join(t.TempDir(), "x.img")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		err = Write(f, v)
		f.Close()
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
		if strings.Contains(name, "case") && !errors.Is(err, ErrName) {
			t.Errorf("%s: %v, want ErrName", name, err)
		}
	}
}

func TestGeometry(t *testing.T) {
	for _, size := range []int64{MinSize, 64 << 20, 260 << 20, 1 << 30, 8 << 30} {
		g, err := plan(size)
		if err != nil {
			t.Errorf("%d: %v", size, err)
			continue
		}
		if g.clusters < minClusters || (g.clusters+2)*4 > g.fatSectors*SectorSize ||
			int64(reservedSectors+2*g.fatSectors+g.clusters*g.sectorsPerCluster) > int64(g.sectors) {
			t.Errorf("%d: bad geometry %+v", size, g)
		}
	}
}
