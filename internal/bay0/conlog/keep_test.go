package conlog

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestKeepIsBoundedAndRotated: however much is written, the two files stay within the bound,
// and the newest lines are there to read back.
func TestKeepIsBoundedAndRotated(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "web")
	k, err := OpenKeep(dir, MinKeep)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20000 {
		fmt.Fprintf(k, "persona web: line %d\n", i)
	}
	var total int64
	for _, f := range []string{currentFile, previousFile} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		total += st.Size()
	}
	if total > MinKeep {
		t.Errorf("kept %d bytes, bound %d", total, MinKeep)
	}
	tail, err := k.Tail(3, 1<<20)
	if err != nil || !slices.Equal(tail, []string{"persona web: line 19997", "persona web: line 19998", "persona web: line 19999"}) {
		t.Errorf("Tail = %q, %v", tail, err)
	}
	// Tail across the rotation, and with a byte bound that cuts a line: only whole lines.
	tail, _ = k.Tail(100000, 1000)
	if len(tail) == 0 || tail[len(tail)-1] != "persona web: line 19999" || len(tail) > 1000/len("persona web: line 19999") {
		t.Errorf("Tail within 1000 bytes = %d lines ending %q", len(tail), tail[len(tail)-1])
	}
	if n, err := k.Err(); n != 0 || err != nil {
		t.Errorf("Err = %d, %v", n, err)
	}
	k.Close()
	fmt.Fprintf(k, "after close\n") // dropped, never a panic
}

// TestKeepEndsACutLine: a line cut by a crash is ended at the next open, not joined to the next
// boot's first line.
func TestKeepEndsACutLine(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, currentFile), []byte("whole\ncut sh"), 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := OpenKeep(dir, MinKeep)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	fmt.Fprintf(k, "next boot\n")
	if tail, _ := k.Tail(10, 1<<20); !slices.Equal(tail, []string{"whole", "cut sh", "next boot"}) {
		t.Errorf("Tail = %q", tail)
	}
}

// TestKeepRefusesSymlinks: a symlink planted for the directory or the file is never followed.
func TestKeepRefusesSymlinks(t *testing.T) {
	root := t.TempDir()
	other := filepath.Join(root, "other")
	if err := os.Mkdir(other, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(other, filepath.Join(root, "web")); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenKeep(filepath.Join(root, "web"), MinKeep); err == nil {
		t.Error("OpenKeep followed a symlinked directory")
	}
	if err := os.Symlink(filepath.Join(root, "victim"), filepath.Join(other, currentFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenKeep(other, MinKeep); err == nil {
		t.Error("OpenKeep followed a symlinked file")
	}
	if _, err := os.Stat(filepath.Join(root, "victim")); err == nil {
		t.Error("a write went through the symlink")
	}
	if _, err := OpenKeep(filepath.Join(root, "small"), MinKeep-1); err == nil {
		t.Error("OpenKeep took a bound below MinKeep")
	}
}

// TestKeepSaysItsFirstFailure: a write that fails is counted, said once until one succeeds
// again, and never reported to the writer (the console's MultiWriter must go on).
func TestKeepSaysItsFirstFailure(t *testing.T) {
	dir := t.TempDir()
	k, err := OpenKeep(dir, MinKeep)
	if err != nil {
		t.Fatal(err)
	}
	var said []error
	k.OnFail = func(err error) { said = append(said, err) }
	k.f.Close() // the file goes away under the writer
	for range 3 {
		if n, err := k.Write([]byte("line\n")); n != 5 || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if n, err := k.Err(); n != 3 || err == nil || len(said) != 1 {
		t.Errorf("Err = %d, %v; said %d times", n, err, len(said))
	}
	k.Close()
}
