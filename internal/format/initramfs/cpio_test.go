package initramfs

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// sampleEntries covers every entry kind, odd name and data lengths (so every
// padding case) and empty files.
func sampleEntries() []Entry {
	return []Entry{
		{Name: "dev", Mode: fs.ModeDir | 0o755},
		{Name: "dev/console", Mode: fs.ModeDevice | fs.ModeCharDevice | 0o600, Major: 5, Minor: 1},
		{Name: "etc", Mode: fs.ModeDir | 0o755},
		{Name: "etc/bay0", Mode: fs.ModeDir | 0o700},
		{Name: "etc/bay0/a", Mode: 0o644, Data: []byte("a")},
		{Name: "etc/bay0/ab", Mode: 0o600, Data: []byte("ab\n")},
		{Name: "etc/bay0/abc", Mode: 0o640, Data: []byte("abcd")},
		{Name: "etc/bay0/abcd", Mode: 0o444, Data: nil},
		{Name: "etc/bay0/link", Mode: fs.ModeSymlink | 0o777, Linkname: "abc"},
		{Name: "etc/abs-link", Mode: fs.ModeSymlink | 0o777, Linkname: "/init"},
		{Name: "init", Mode: 0o755, Data: bytes.Repeat([]byte{0x7f, 'E', 'L', 'F', 0}, 1001)},
	}
}

func writeArchive(t testing.TB, entries []Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, e := range entries {
		var err error
		switch e.Mode.Type() {
		case fs.ModeDir:
			err = w.AddDir(e.Name, e.Mode.Perm())
		case fs.ModeSymlink:
			err = w.AddSymlink(e.Name, e.Linkname)
		case fs.ModeDevice | fs.ModeCharDevice:
			err = w.AddCharDevice(e.Name, e.Mode.Perm(), e.Major, e.Minor)
		default:
			err = w.AddFile(e.Name, e.Mode, e.Data)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gz(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func cpioTool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("cpio")
	if err != nil {
		t.Fatalf("cpio not found (install the Debian package cpio): %v", err)
	}
	return p
}

// TestWriterWithCpio checks Writer's output with GNU cpio, which unpacks it
// as the kernel would.
func TestWriterWithCpio(t *testing.T) {
	cpio := cpioTool(t)
	entries := sampleEntries()
	archive := writeArchive(t, entries)
	if len(archive)%blockSize != 0 {
		t.Fatalf("archive is %d bytes, not a multiple of %d", len(archive), blockSize)
	}

	list := exec.Command(cpio, "-it", "--quiet")
	list.Stdin = bytes.NewReader(archive)
	out, err := list.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -it: %v\n%s", err, out)
	}
	var want []string
	for _, e := range entries {
		want = append(want, e.Name)
	}
	if got := strings.Fields(string(out)); !slices.Equal(got, want) {
		t.Fatalf("cpio -it lists %q, want %q", got, want)
	}

	verbose := exec.Command(cpio, "-itv", "--quiet", "--numeric-uid-gid")
	verbose.Stdin = bytes.NewReader(archive)
	out, err = verbose.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -itv: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || f[2] != "0" || f[3] != "0" || !strings.Contains(line, "1970") {
			t.Errorf("cpio -itv: want uid 0, gid 0, mtime 0: %q", line)
		}
	}

	dir := t.TempDir()
	extract := exec.Command(cpio, "-idm", "--quiet", "--no-absolute-filenames")
	extract.Dir = dir
	extract.Stdin = bytes.NewReader(archive)
	if out, err := extract.CombinedOutput(); err != nil {
		t.Fatalf("cpio -idm: %v\n%s", err, out)
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Error(err)
			continue
		}
		if fi.Mode() != e.Mode {
			t.Errorf("%s: mode %v, want %v", e.Name, fi.Mode(), e.Mode)
		}
		switch e.Mode.Type() {
		case fs.ModeSymlink:
			if target, err := os.Readlink(p); err != nil || target != e.Linkname {
				t.Errorf("%s: link to %q (%v), want %q", e.Name, target, err, e.Linkname)
			}
		case 0:
			if data, err := os.ReadFile(p); err != nil || !bytes.Equal(data, e.Data) {
				t.Errorf("%s: contents differ (%v)", e.Name, err)
			}
		case fs.ModeDevice | fs.ModeCharDevice:
			st, ok := fi.Sys().(*syscall.Stat_t)
			if !ok || uint32(st.Rdev>>8&0xfff) != e.Major || uint32(st.Rdev&0xff) != e.Minor {
				t.Errorf("%s: device numbers differ: %+v", e.Name, fi.Sys())
			}
		}
	}
	var extracted []string
	filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err == nil && p != dir {
			rel, _ := filepath.Rel(dir, p)
			extracted = append(extracted, rel)
		}
		return err
	})
	if len(extracted) != len(entries) {
		t.Errorf("cpio extracted %q, want exactly %d entries", extracted, len(entries))
	}
}

func TestListRoundTrip(t *testing.T) {
	entries := sampleEntries()
	archive := writeArchive(t, entries)
	got, err := List(bytes.NewReader(gz(t, archive)))
	if err != nil {
		t.Fatal(err)
	}
	for i := range entries {
		if entries[i].Data == nil && entries[i].Mode.Type() == 0 {
			entries[i].Data = []byte{}
		}
		if got[i].Data == nil && got[i].Mode.Type() == 0 {
			got[i].Data = []byte{}
		}
	}
	if !reflect.DeepEqual(got, entries) {
		t.Fatalf("List =\n%v\nwant\n%v", got, entries)
	}
	if again := writeArchive(t, got); !bytes.Equal(again, archive) {
		t.Fatal("writing the listed entries gives other bytes")
	}
	empty, err := List(bytes.NewReader(gz(t, writeArchive(t, nil))))
	if err != nil || len(empty) != 0 {
		t.Fatalf("empty archive: %v, %v", empty, err)
	}
}

func TestWriterErrors(t *testing.T) {
	tests := []struct {
		name string
		add  func(w *Writer) error
		want error
	}{
		{"no parent", func(w *Writer) error { return w.AddFile("etc/x", 0o644, nil) }, ErrName},
		{"parent is a file", func(w *Writer) error {
			w.AddFile("etc", 0o644, nil)
			return w.AddFile("etc/x", 0o644, nil)
		}, ErrName},
		{"twice", func(w *Writer) error {
			w.AddDir("etc", 0o755)
			return w.AddDir("etc", 0o755)
		}, ErrName},
		{"absolute", func(w *Writer) error { return w.AddDir("/etc", 0o755) }, ErrName},
		{"dot dot", func(w *Writer) error { return w.AddDir("..", 0o755) }, ErrName},
		{"dot", func(w *Writer) error { return w.AddDir(".", 0o755) }, ErrName},
		{"empty", func(w *Writer) error { return w.AddFile("", 0o644, nil) }, ErrName},
		{"double slash", func(w *Writer) error {
			w.AddDir("a", 0o755)
			return w.AddFile("a//b", 0o644, nil)
		}, ErrName},
		{"trailing slash", func(w *Writer) error { return w.AddDir("a/", 0o755) }, ErrName},
		{"trailer name", func(w *Writer) error { return w.AddFile(trailerName, 0o644, nil) }, ErrName},
		{"NUL", func(w *Writer) error { return w.AddFile("a\x00b", 0o644, nil) }, ErrName},
		{"empty link target", func(w *Writer) error { return w.AddSymlink("a", "") }, ErrName},
		{"setuid", func(w *Writer) error { return w.AddFile("a", 0o4755, nil) }, ErrMode},
		{"setgid dir", func(w *Writer) error { return w.AddDir("a", fs.ModeSetgid|0o755) }, ErrMode},
		{"dir mode for a file", func(w *Writer) error { return w.AddFile("a", fs.ModeDir|0o755, nil) }, ErrMode},
		{"device", func(w *Writer) error { return w.AddFile("a", fs.ModeDevice|0o600, nil) }, ErrMode},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := NewWriter(&bytes.Buffer{})
			if err := tt.add(w); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
	w := NewWriter(&bytes.Buffer{})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.AddDir("late", 0o755); err == nil {
		t.Fatal("AddDir after Close succeeded")
	}
}

// corrupt returns a copy of the sample archive changed by f.
func corrupt(t *testing.T, f func(b []byte) []byte) []byte {
	t.Helper()
	return f(bytes.Clone(writeArchive(t, sampleEntries())))
}

// setField overwrites header field i of the entry whose header starts at off.
func setField(b []byte, off, i int, v string) []byte {
	copy(b[off+6+8*i:], v)
	return b
}

func TestListRejects(t *testing.T) {
	good := writeArchive(t, sampleEntries())
	// The second entry ("etc") starts after the first: header, "dev\0" and padding.
	second := headerSize + 4 + pad4(headerSize+4)
	tests := map[string][]byte{
		"bad magic":        corrupt(t, func(b []byte) []byte { b[5] = '2'; return b }), // 070702, the crc format
		"uppercase hex":    corrupt(t, func(b []byte) []byte { return setField(b, 0, fMode, "000041ED") }),
		"uid":              corrupt(t, func(b []byte) []byte { return setField(b, 0, fUID, "000003e8") }),
		"mtime":            corrupt(t, func(b []byte) []byte { return setField(b, 0, fMtime, "00000001") }),
		"check":            corrupt(t, func(b []byte) []byte { return setField(b, 0, fCheck, "00000001") }),
		"inode order":      corrupt(t, func(b []byte) []byte { return setField(b, second, fIno, "00000001") }),
		"setuid directory": corrupt(t, func(b []byte) []byte { return setField(b, 0, fMode, "000049ed") }),
		"device node":      corrupt(t, func(b []byte) []byte { return setField(b, 0, fMode, "000021ed") }),
		"hard link":        corrupt(t, func(b []byte) []byte { return setField(b, 0, fNlink, "00000003") }),
		"name size":        corrupt(t, func(b []byte) []byte { return setField(b, 0, fNamesize, "00000003") }),
		"file size":        corrupt(t, func(b []byte) []byte { return setField(b, 0, fFilesize, "ffffffff") }),
		"truncated":        good[:len(good)-blockSize],
		"no trailer":       good[:second],
		"junk after":       append(bytes.Clone(good), 1),
		"extra block":      append(bytes.Clone(good), make([]byte, blockSize)...),
		"parent missing":   writeArchiveUnchecked(t, "etc/x"),
	}
	for name, archive := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := List(bytes.NewReader(gz(t, archive))); err == nil {
				t.Fatal("List accepted it")
			}
		})
	}
	t.Run("two gzip members", func(t *testing.T) {
		two := append(gz(t, good), gz(t, good)...)
		if _, err := List(bytes.NewReader(two)); !errors.Is(err, ErrFormat) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("not gzip", func(t *testing.T) {
		if _, err := List(bytes.NewReader(good)); !errors.Is(err, ErrFormat) {
			t.Fatalf("got %v", err)
		}
	})
}

// writeArchiveUnchecked writes a one-file archive without Writer's checks.
func writeArchiveUnchecked(t *testing.T, name string) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf)
	var f [fieldCount]uint32
	f[fIno], f[fMode], f[fNlink], f[fNamesize] = 1, modeFile|0o644, 1, uint32(len(name)+1)
	if err := w.writeEntry(f, name, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// FuzzList feeds List gzip-compressed fuzz input (so the fuzzer works on the
// cpio bytes) and checks that whatever it accepts is written back unchanged.
func FuzzList(f *testing.F) {
	f.Add(writeArchive(f, sampleEntries()))
	f.Add(writeArchive(f, nil))
	f.Add(writeArchive(f, []Entry{{Name: "a", Mode: fs.ModeSymlink | 0o777, Linkname: "b"}}))
	f.Fuzz(func(t *testing.T, archive []byte) {
		entries, err := List(bytes.NewReader(gz(t, archive)))
		if err != nil {
			return
		}
		if again := writeArchive(t, entries); !bytes.Equal(again, archive) {
			t.Fatalf("accepted archive is not canonical:\n%q\n%q", archive, again)
		}
	})
}
