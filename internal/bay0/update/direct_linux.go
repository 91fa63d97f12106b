package update

import (
	"fmt"
	"io"
	"sync"

	"golang.org/x/sys/unix"
)

// directAlign is the alignment O_DIRECT needs of offsets, lengths and memory: a page covers
// every logical block size.
const directAlign = 4096

// directChunk is the buffer one read uses.
const directChunk = 1 << 20

// Direct reads a device with O_DIRECT: every read comes from the device, never from the page
// cache (open(2), O_DIRECT; a read first writes back dirty cached pages of its range).
type Direct struct {
	fd   int
	bufs sync.Pool
}

// OpenDirect opens path read-only with O_DIRECT.
func OpenDirect(path string) (*Direct, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s with O_DIRECT: %w", path, err)
	}
	d := &Direct{fd: fd}
	d.bufs.New = func() any { b := alignedBuffer(directChunk, directAlign); return &b }
	return d, nil
}

// ReadAt reads len(p) bytes at off through aligned reads. It is safe for concurrent use.
func (d *Direct) ReadAt(p []byte, off int64) (int, error) {
	bp := d.bufs.Get().(*[]byte)
	defer d.bufs.Put(bp)
	buf := *bp
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		start := pos &^ (directAlign - 1)
		skip := int(pos - start)
		want := min(len(buf), (skip+len(p)-done+directAlign-1)&^(directAlign-1))
		n, err := unix.Pread(d.fd, buf[:want], start)
		if err != nil {
			return done, fmt.Errorf("read at %d: %w", start, err)
		}
		if n <= skip {
			return done, io.EOF
		}
		done += copy(p[done:], buf[skip:n])
		if n < want && done < len(p) {
			return done, io.EOF
		}
	}
	return done, nil
}

// Close closes the descriptor.
func (d *Direct) Close() error { return unix.Close(d.fd) }
