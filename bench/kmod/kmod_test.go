package kmod

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func sampleDeps(t *testing.T) map[string][]string {
	t.Helper()
	return readDeps(t, "testdata/modules.dep")
}

// readDeps parses a modules.dep file.
func readDeps(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	deps, err := ParseDeps(f)
	if err != nil {
		t.Fatal(err)
	}
	return deps
}

func TestName(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/drivers/md/dm-verity.ko":                 "dm_verity",
		"kernel/drivers/md/dm-verity.ko.xz":              "dm_verity",
		"kernel/fs/ext4/ext4.ko.zst":                     "ext4",
		"kernel/drivers/misc/pvpanic/pvpanic-mmio.ko.gz": "pvpanic_mmio",
		"virtio_ring.ko":                                 "virtio_ring",
		"dm-mod":                                         "dm_mod",
	} {
		if got := Name(in); got != want {
			t.Errorf("Name(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseDeps(t *testing.T) {
	deps := sampleDeps(t)
	if len(deps) != 25 {
		t.Errorf("got %d modules, want 25", len(deps))
	}
	want := []string{"kernel/drivers/md/dm-bufio.ko", "kernel/drivers/md/dm-mod.ko", "kernel/lib/reed_solomon/reed_solomon.ko"}
	if got := deps["kernel/drivers/md/dm-verity.ko"]; !slices.Equal(got, want) {
		t.Errorf("dm-verity deps = %q, want %q", got, want)
	}
	if got, ok := deps["kernel/fs/mbcache.ko"]; !ok || len(got) != 0 {
		t.Errorf("mbcache deps = %q, %v; want none", got, ok)
	}
}

func TestParseDepsErrors(t *testing.T) {
	for _, in := range []string{
		"kernel/a.ko\n",                           // no colon
		"kernel/a.ko:\nkernel/a.ko:\n",            // listed twice
		"/kernel/a.ko:\n",                         // absolute
		"../a.ko:\n",                              // escapes the directory
		"kernel/a.txt:\n",                         // not a module
		"kernel/a.ko:kernel/b.ko\n",               // no space
		"kernel/a.ko: kernel/b.ko  kernel/c.ko\n", // double space
		"kernel/a.ko: kernel/a.ko\n",              // depends on itself
		"kernel/a.ko: kernel/./b.ko\n",            // unclean
		"\n",                                      // blank line
	} {
		if _, err := ParseDeps(strings.NewReader(in)); !errors.Is(err, ErrSyntax) {
			t.Errorf("ParseDeps(%q) = %v, want ErrSyntax", in, err)
		}
	}
}

func TestResolve(t *testing.T) {
	deps := sampleDeps(t)
	got, err := Resolve(deps, []string{"dm-verity", "ext4", "virtio_pci", "dm_mod", "virtio_blk"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"kernel/lib/reed_solomon/reed_solomon.ko",
		"kernel/drivers/md/dm-mod.ko",
		"kernel/drivers/md/dm-bufio.ko",
		"kernel/drivers/md/dm-verity.ko",
		"kernel/fs/jbd2/jbd2.ko",
		"kernel/fs/mbcache.ko",
		"kernel/lib/crc16.ko",
		"kernel/fs/ext4/ext4.ko",
		"kernel/drivers/virtio/virtio_ring.ko",
		"kernel/drivers/virtio/virtio.ko",
		"kernel/drivers/virtio/virtio_pci_modern_dev.ko",
		"kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
		"kernel/drivers/virtio/virtio_pci.ko",
		"kernel/drivers/block/virtio_blk.ko",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Resolve =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	checkOrder(t, deps, got)
}

// checkOrder checks that every module comes after all its dependencies, once.
func checkOrder(t *testing.T, deps map[string][]string, order []string) {
	t.Helper()
	at := make(map[string]int)
	for i, p := range order {
		if _, dup := at[p]; dup {
			t.Fatalf("%s listed twice", p)
		}
		at[p] = i
	}
	for i, p := range order {
		for _, d := range deps[p] {
			if j, ok := at[d]; !ok || j > i {
				t.Fatalf("%s comes before its dependency %s", p, d)
			}
		}
	}
}

func TestResolveErrors(t *testing.T) {
	deps := sampleDeps(t)
	_, err := Resolve(deps, []string{"dm_verity", "no_such_module"})
	if !errors.Is(err, ErrUnknownModule) || !strings.Contains(err.Error(), "no_such_module") {
		t.Errorf("unknown module: %v", err)
	}

	broken := map[string][]string{"kernel/a.ko": {"kernel/missing.ko"}}
	_, err = Resolve(broken, []string{"a"})
	if !errors.Is(err, ErrUnknownModule) || !strings.Contains(err.Error(), "kernel/missing.ko") {
		t.Errorf("missing dependency: %v", err)
	}

	cycle := map[string][]string{"kernel/a.ko": {"kernel/b.ko"}, "kernel/b.ko": {"kernel/a.ko"}}
	if _, err := Resolve(cycle, []string{"a"}); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Errorf("cycle: %v", err)
	}

	twice := map[string][]string{"kernel/x/a.ko": nil, "kernel/y/a.ko": nil, "kernel/b.ko": nil}
	if _, err := Resolve(twice, []string{"a"}); err == nil {
		t.Error("ambiguous name resolved")
	}
	if got, err := Resolve(twice, []string{"b"}); err != nil || !slices.Equal(got, []string{"kernel/b.ko"}) {
		t.Errorf("an ambiguous name that is not asked for: %q, %v", got, err)
	}
}

func TestParseBuiltin(t *testing.T) {
	f, err := os.Open("testdata/modules.builtin")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := ParseBuiltin(f)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"crc32c_generic": true, "ext4": true, "virtio": true}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if _, err := ParseBuiltin(strings.NewReader("kernel/a.ko\nnot a path\n")); !errors.Is(err, ErrSyntax) {
		t.Errorf("bad line: %v", err)
	}
}

func TestLoadList(t *testing.T) {
	in := "# modules\n\nkernel/drivers/md/dm-mod.ko\nkernel/drivers/watchdog/i6300esb.ko nowayout=1\nkernel/x.ko a=1 b=\"x y\"\n"
	items, err := ParseLoadList(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []LoadItem{
		{Path: "kernel/drivers/md/dm-mod.ko"},
		{Path: "kernel/drivers/watchdog/i6300esb.ko", Params: "nowayout=1"},
		{Path: "kernel/x.ko", Params: `a=1 b="x y"`},
	}
	if !slices.Equal(items, want) {
		t.Fatalf("got %+v, want %+v", items, want)
	}
	again, err := ParseLoadList(bytes.NewReader(FormatLoadList(items)))
	if err != nil || !slices.Equal(again, items) {
		t.Fatalf("round trip: %+v, %v", again, err)
	}
}

func TestLoadListErrors(t *testing.T) {
	for _, in := range []string{
		"/lib/modules/x.ko\n",        // absolute
		"../x.ko\n",                  // escapes the directory
		"kernel/x\n",                 // not a module
		" kernel/x.ko\n",             // leading space
		"kernel/x.ko  a=1\n",         // parameters with leading space
		"kernel/x.ko a=1 \n",         // trailing space
		"kernel/x.ko\nkernel/x.ko\n", // twice
		"kernel/x.ko a=\x01\n",       // control character
		"kernel/x.ko\tnowayout=1\n",  // tab instead of space
	} {
		if _, err := ParseLoadList(strings.NewReader(in)); !errors.Is(err, ErrSyntax) {
			t.Errorf("ParseLoadList(%q) = %v, want ErrSyntax", in, err)
		}
	}
}

func TestLoadAllStopsAtFirstError(t *testing.T) {
	dir := t.TempDir()
	err := LoadAll(dir, []LoadItem{{Path: "kernel/first.ko"}, {Path: "kernel/second.ko"}})
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "kernel/first.ko")) {
		t.Fatalf("got %v, want an error naming the first module", err)
	}
	if err := LoadAll(dir, []LoadItem{{Path: "../escape.ko"}}); !errors.Is(err, ErrSyntax) {
		t.Fatalf("path escaping the modules directory: %v", err)
	}
}

func FuzzParseLoadList(f *testing.F) {
	f.Add([]byte("# c\nkernel/a.ko\nkernel/b/c-d.ko x=1 y=2\n"))
	f.Add([]byte("kernel/x.ko.xz \n\n#\n"))
	f.Add([]byte("a.ko\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		items, err := ParseLoadList(bytes.NewReader(in))
		if err != nil {
			return
		}
		for _, it := range items {
			if err := it.Validate(); err != nil {
				t.Fatalf("parsed an invalid item: %v", err)
			}
		}
		again, err := ParseLoadList(bytes.NewReader(FormatLoadList(items)))
		if err != nil {
			t.Fatalf("reparse: %v", err)
		}
		if !slices.Equal(again, items) {
			t.Fatalf("round trip: %+v != %+v", again, items)
		}
	})
}

func FuzzParseDeps(f *testing.F) {
	sample, err := os.ReadFile("testdata/modules.dep")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sample)
	f.Add([]byte("kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/a.ko\n"))
	f.Add([]byte("kernel/a.ko: kernel/c.ko\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		deps, err := ParseDeps(bytes.NewReader(in))
		if err != nil {
			return
		}
		var names []string
		for p, list := range deps {
			if !validPath(p) {
				t.Fatalf("invalid key %q", p)
			}
			for _, d := range list {
				if !validPath(d) {
					t.Fatalf("invalid dependency %q", d)
				}
			}
			names = append(names, Name(p))
		}
		slices.Sort(names)
		order, err := Resolve(deps, names)
		if err == nil {
			checkOrder(t, deps, order)
		}
	})
}
