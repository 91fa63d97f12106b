package conlog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// KeepDir is the directory of /persist under which bay0 keeps the logs of the personas whose
// policy asks for it, one subtree each: /persist/.logs/NAME. A persona name starts with a
// letter, so it never collides with a persona's own subtree, and no persona mounts it: bay0
// writes there on the persona's behalf, and no persona reaches another's logs, or its own.
const KeepDir = ".logs"

// The two files of a kept log. current takes the new lines; when it would pass half the
// bound, it becomes previous (the older previous is dropped), so the whole stays within it.
const (
	currentFile  = "current"
	previousFile = "previous"
)

// MinKeep bounds a kept log from below: room for two files of a few hundred lines.
const MinKeep = 64 << 10

// Keep is one persona's log kept in /persist across reboots, bounded and rotated. It is an
// io.Writer that never fails (an io.MultiWriter with the console never stops on it): a line
// that cannot be written is counted, and Err says why the latest one failed.
type Keep struct {
	mu     sync.Mutex
	dir    string
	half   int64
	f      *os.File
	size   int64
	lost   int
	err    error
	closed bool
	dirFD  int
	// failing says the latest write failed.
	failing bool
	// OnFail, if set, is told of the first failed write after a good one (so a full or
	// broken /persist is said once, not at every line).
	OnFail func(error)
}

// OpenKeep opens (making it if needed, mode 0700) the kept log in dir, at most limit bytes in
// all. dir and the files in it are opened without following symlinks.
func OpenKeep(dir string, limit int64) (*Keep, error) {
	if limit < MinKeep {
		return nil, fmt.Errorf("kept log %s: bound %d is below %d bytes", dir, limit, MinKeep)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("kept log: %w", err)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("kept log: open %s: %w", dir, err)
	}
	k := &Keep{dir: dir, half: limit / 2, dirFD: fd}
	if err := k.open(); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return k, nil
}

// open opens current for appending. Precondition: k.mu held or k not shared yet.
func (k *Keep) open() error {
	fd, err := unix.Openat(k.dirFD, currentFile, unix.O_RDWR|unix.O_APPEND|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("kept log: open %s: %w", filepath.Join(k.dir, currentFile), err)
	}
	f := os.NewFile(uintptr(fd), filepath.Join(k.dir, currentFile))
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		f.Close()
		return fmt.Errorf("kept log: %s is not a regular file (%v)", f.Name(), err)
	}
	k.f, k.size = f, st.Size()
	// A line cut short by a crash is ended, so the next line does not join it.
	var last [1]byte
	if k.size > 0 {
		if _, err := f.ReadAt(last[:], k.size-1); err == nil && last[0] != '\n' {
			n, _ := f.Write([]byte("\n"))
			k.size += int64(n)
		}
	}
	return nil
}

// Write appends p, which should be whole lines (the persona's log pump writes one line per
// call). It rotates first when p would take current past half the bound.
func (k *Keep) Write(p []byte) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := len(p)
	if k.closed {
		return n, nil
	}
	if int64(len(p)) > k.half {
		p = append(p[:k.half-1:k.half-1], '\n')
	}
	if k.size+int64(len(p)) > k.half {
		if err := k.rotate(); err != nil {
			k.fail(err)
			return n, nil
		}
	}
	w, err := k.f.Write(p)
	k.size += int64(w)
	if err != nil {
		k.fail(fmt.Errorf("kept log: write %s: %w", k.f.Name(), err))
		return n, nil
	}
	k.failing = false
	return n, nil
}

// fail counts a lost write. Precondition: k.mu held.
func (k *Keep) fail(err error) {
	k.lost++
	k.err = err
	if !k.failing && k.OnFail != nil {
		k.OnFail(err)
	}
	k.failing = true
}

// rotate makes current previous and starts an empty current. Precondition: k.mu held.
func (k *Keep) rotate() error {
	if err := k.f.Close(); err != nil {
		return fmt.Errorf("kept log: close %s: %w", k.f.Name(), err)
	}
	if err := unix.Renameat(k.dirFD, currentFile, k.dirFD, previousFile); err != nil {
		return fmt.Errorf("kept log: rotate %s: %w", k.dir, err)
	}
	return k.open()
}

// Err returns the latest write failure and how many writes failed, if any.
func (k *Keep) Err() (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.lost, k.err
}

// Close closes the kept log; later writes are dropped. The machine's end calls it, so that
// nothing holds /persist open.
func (k *Keep) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil
	}
	k.closed = true
	err := k.f.Close()
	unix.Close(k.dirFD)
	return err
}

// Tail returns at most n of the last complete lines kept (previous, then current), without
// their newlines, reading at most maxBytes from the end of the two files together.
func (k *Keep) Tail(n int, maxBytes int64) ([]string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var lines [][]byte
	left := maxBytes
	for _, name := range []string{currentFile, previousFile} {
		b, cut, err := k.readTail(name, left)
		if err != nil {
			return nil, err
		}
		left -= int64(len(b))
		ls := bytes.Split(b, []byte("\n"))
		ls = ls[:len(ls)-1] // what follows the last newline: nothing
		if cut && len(ls) > 0 {
			ls = ls[1:] // begins inside a line
		}
		lines = append(ls, lines...)
		if cut || len(lines) >= n {
			break
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = string(l)
	}
	return out, nil
}

// readTail reads at most limit bytes from the end of the file name, up to its last newline;
// cut says the read began after the file's start. A missing file reads as empty.
func (k *Keep) readTail(name string, limit int64) (b []byte, cut bool, err error) {
	fd, err := unix.Openat(k.dirFD, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("kept log: open %s: %w", filepath.Join(k.dir, name), err)
	}
	f := os.NewFile(uintptr(fd), filepath.Join(k.dir, name))
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, false, fmt.Errorf("kept log: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, false, fmt.Errorf("kept log: %s is not a regular file", f.Name())
	}
	off := max(st.Size()-max(limit, 0), 0)
	b = make([]byte, st.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil && err != io.EOF {
		return nil, false, fmt.Errorf("kept log: read %s: %w", f.Name(), err)
	}
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		return b[:i+1], off > 0, nil
	}
	return nil, off > 0, nil
}
