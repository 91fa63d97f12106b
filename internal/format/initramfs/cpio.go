package initramfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strconv"
	"strings"
)

// The "newc" cpio format, as the kernel unpacks it
// (Documentation/driver-api/early-userspace/buffer-format.rst): each entry is a
// 110-byte ASCII header of thirteen 8-digit hex fields, the NUL-terminated name
// padded to a multiple of 4, then the data padded to a multiple of 4. The
// archive ends with an entry named TRAILER!!!, then zeros to a 512-byte block.
const (
	newcMagic      = "070701"
	headerSize     = 110
	fieldCount     = 13
	trailerName    = "TRAILER!!!"
	blockSize      = 512
	maxNameSize    = 4096 // PATH_MAX, the kernel's limit for a name
	maxArchiveSize = 512 << 20

	// Unix file types in c_mode.
	modeTypeMask = 0o170000
	modeDir      = 0o040000
	modeFile     = 0o100000
	modeSymlink  = 0o120000
	modeChar     = 0o020000
)

// Header field positions, in c_magic's order after the magic.
const (
	fIno = iota
	fMode
	fUID
	fGID
	fNlink
	fMtime
	fFilesize
	fDevMajor
	fDevMinor
	fRdevMajor
	fRdevMinor
	fNamesize
	fCheck
)

// Errors returned (wrapped) by this package.
var (
	// ErrFormat means an archive is not one this package writes.
	ErrFormat = errors.New("initramfs: bad archive")
	// ErrName means an entry name is not a clean relative path, repeats an
	// earlier name, or has no directory entry for its parent before it.
	ErrName = errors.New("initramfs: bad entry name")
	// ErrMode means a mode has bits beyond the entry type and permissions
	// (setuid, setgid, sticky, other types).
	ErrMode = errors.New("initramfs: unsupported mode")
)

// Entry is one file, directory, symbolic link or character device of an archive.
type Entry struct {
	Name     string      // relative, slash-separated: "etc/bay0/keys/0.pub"
	Mode     fs.FileMode // fs.ModeDir, fs.ModeSymlink, fs.ModeDevice|fs.ModeCharDevice or 0 (regular file), plus permissions
	Data     []byte      // contents of a regular file
	Linkname string      // target of a symbolic link
	Major    uint32      // device numbers of a character device
	Minor    uint32
}

// isCharDevice reports whether m is a character device's mode.
func isCharDevice(m fs.FileMode) bool {
	return m.Type() == fs.ModeDevice|fs.ModeCharDevice
}

// tree tracks the names of an archive, for the Writer and for List alike: a
// name is valid once, and only after its parent directory.
type tree map[string]fs.FileMode

func (t tree) add(name string, mode fs.FileMode) error {
	if name == "" || len(name)+1 > maxNameSize || !fs.ValidPath(name) || name == "." ||
		name == trailerName || strings.ContainsRune(name, 0) {
		return fmt.Errorf("%w: %q", ErrName, name)
	}
	if _, dup := t[name]; dup {
		return fmt.Errorf("%w: %q added twice", ErrName, name)
	}
	if dir := path.Dir(name); dir != "." && !t[dir].IsDir() {
		return fmt.Errorf("%w: %q comes before its directory %q", ErrName, name, dir)
	}
	t[name] = mode
	return nil
}

// Writer writes a newc cpio archive. The output depends only on the entries
// and their order: mtime, uid, gid and device numbers are 0 and inode numbers
// count from 1. Names are relative ("etc/bay0"); each entry's parent directory
// must have been added before it (nothing is added implicitly). Hard links,
// block devices and setuid/setgid/sticky bits cannot be written; character
// devices only through AddCharDevice (the console a kernel opens for /init).
type Writer struct {
	w      io.Writer
	n      int64 // bytes written
	ino    uint32
	names  tree
	err    error // sticky: the archive is unusable after a failed write
	closed bool
}

// NewWriter returns a Writer that writes an archive to w; call Close to finish it.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: w, names: make(tree)}
}

// AddDir adds a directory; mode holds its permissions (fs.ModeDir may be set).
func (w *Writer) AddDir(name string, mode fs.FileMode) error {
	if mode&^(fs.ModePerm|fs.ModeDir) != 0 {
		return fmt.Errorf("%w: directory %q: %v", ErrMode, name, mode)
	}
	return w.add(Entry{Name: name, Mode: fs.ModeDir | mode.Perm()})
}

// AddFile adds a regular file with the given permissions and contents.
func (w *Writer) AddFile(name string, mode fs.FileMode, data []byte) error {
	if mode&^fs.ModePerm != 0 {
		return fmt.Errorf("%w: file %q: %v", ErrMode, name, mode)
	}
	return w.add(Entry{Name: name, Mode: mode, Data: data})
}

// AddCharDevice adds a character device node with the given permissions and numbers.
func (w *Writer) AddCharDevice(name string, mode fs.FileMode, major, minor uint32) error {
	if mode&^fs.ModePerm != 0 {
		return fmt.Errorf("%w: device %q: %v", ErrMode, name, mode)
	}
	return w.add(Entry{Name: name, Mode: fs.ModeDevice | fs.ModeCharDevice | mode, Major: major, Minor: minor})
}

// AddSymlink adds a symbolic link (mode 0777) pointing to target.
func (w *Writer) AddSymlink(name, target string) error {
	return w.add(Entry{Name: name, Mode: fs.ModeSymlink | 0o777, Linkname: target})
}

// add writes one validated entry.
func (w *Writer) add(e Entry) error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return fmt.Errorf("initramfs: add %q: writer closed", e.Name)
	}
	data := e.Data
	var mode uint32
	switch e.Mode.Type() {
	case fs.ModeDir:
		mode = modeDir
	case fs.ModeSymlink:
		if e.Linkname == "" || len(e.Linkname)+1 > maxNameSize || strings.ContainsRune(e.Linkname, 0) {
			return fmt.Errorf("%w: symlink %q: bad target %q", ErrName, e.Name, e.Linkname)
		}
		mode = modeSymlink
		data = []byte(e.Linkname)
	case 0:
		mode = modeFile
		if int64(len(data)) > maxArchiveSize {
			return fmt.Errorf("initramfs: file %q: %d bytes is too large", e.Name, len(data))
		}
	default:
		if !isCharDevice(e.Mode) {
			return fmt.Errorf("%w: %q: %v", ErrMode, e.Name, e.Mode)
		}
		mode = modeChar
		data = nil
	}
	if err := w.names.add(e.Name, e.Mode); err != nil {
		return err
	}
	w.ino++
	nlink := uint32(1)
	if mode == modeDir {
		nlink = 2
	}
	var f [fieldCount]uint32
	f[fIno] = w.ino
	f[fMode] = mode | uint32(e.Mode.Perm())
	f[fNlink] = nlink
	f[fFilesize] = uint32(len(data))
	f[fNamesize] = uint32(len(e.Name) + 1)
	if mode == modeChar {
		f[fRdevMajor], f[fRdevMinor] = e.Major, e.Minor
	}
	if err := w.writeEntry(f, e.Name, data); err != nil {
		return fmt.Errorf("initramfs: write %q: %w", e.Name, err)
	}
	return nil
}

// writeEntry writes a header, the name and the data, each padded.
func (w *Writer) writeEntry(f [fieldCount]uint32, name string, data []byte) error {
	var b bytes.Buffer
	b.WriteString(newcMagic)
	for _, v := range f {
		fmt.Fprintf(&b, "%08x", v)
	}
	b.WriteString(name)
	b.WriteByte(0)
	b.Write(zeros[:pad4(headerSize+len(name)+1)])
	if err := w.write(b.Bytes()); err != nil {
		return err
	}
	if err := w.write(data); err != nil {
		return err
	}
	return w.write(zeros[:pad4(len(data))])
}

var zeros [blockSize]byte

func (w *Writer) write(p []byte) error {
	if w.err != nil {
		return w.err
	}
	n, err := w.w.Write(p)
	w.n += int64(n)
	if err != nil {
		w.err = err
	}
	return err
}

// Close writes the trailer entry and pads the archive to a 512-byte block. It
// does not close the underlying writer.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return nil
	}
	w.closed = true
	var f [fieldCount]uint32
	f[fNlink] = 1
	f[fNamesize] = uint32(len(trailerName) + 1)
	if err := w.writeEntry(f, trailerName, nil); err != nil {
		return fmt.Errorf("initramfs: write trailer: %w", err)
	}
	if err := w.write(zeros[:(blockSize-w.n%blockSize)%blockSize]); err != nil {
		return fmt.Errorf("initramfs: write trailer: %w", err)
	}
	return nil
}

// pad4 returns how many bytes bring n to a multiple of 4.
func pad4(n int) int { return -n & 3 }

// parse reads an uncompressed archive in exactly the form Writer produces and
// returns its entries: newc magic, lowercase hex fields, zero metadata, inode
// numbers counting from 1, regular files with one link, valid names in tree
// order, a trailer and zero padding to a 512-byte block. Writing the entries
// again gives the same bytes.
func parse(b []byte) ([]Entry, error) {
	var entries []Entry
	names := make(tree)
	off := 0
	for ino := uint32(1); ; ino++ {
		if len(b)-off < headerSize {
			return nil, fmt.Errorf("%w: truncated header at %d", ErrFormat, off)
		}
		h := b[off : off+headerSize]
		if string(h[:6]) != newcMagic {
			return nil, fmt.Errorf("%w: bad magic at %d", ErrFormat, off)
		}
		var f [fieldCount]uint32
		for i := range f {
			field := h[6+8*i : 14+8*i]
			// Lowercase only, as Writer writes it: one archive, one encoding.
			if bytes.ContainsFunc(field, func(r rune) bool { return !('0' <= r && r <= '9' || 'a' <= r && r <= 'f') }) {
				return nil, fmt.Errorf("%w: header field %d at %d is not lowercase hex", ErrFormat, i, off)
			}
			v, err := strconv.ParseUint(string(field), 16, 32)
			if err != nil {
				return nil, fmt.Errorf("%w: header field %d at %d", ErrFormat, i, off)
			}
			f[i] = uint32(v)
		}
		namesize := int(f[fNamesize])
		if namesize < 2 || namesize > maxNameSize {
			return nil, fmt.Errorf("%w: name size %d at %d", ErrFormat, namesize, off)
		}
		nameEnd := off + headerSize + namesize
		if nameEnd+pad4(headerSize+namesize) > len(b) {
			return nil, fmt.Errorf("%w: truncated name at %d", ErrFormat, off)
		}
		if b[nameEnd-1] != 0 {
			return nil, fmt.Errorf("%w: name not NUL-terminated at %d", ErrFormat, off)
		}
		name := string(b[off+headerSize : nameEnd-1])
		if !allZero(b[nameEnd : nameEnd+pad4(headerSize+namesize)]) {
			return nil, fmt.Errorf("%w: non-zero padding after %q", ErrFormat, name)
		}
		dataOff := nameEnd + pad4(headerSize+namesize)
		size := int64(f[fFilesize])
		if size+int64(pad4(int(size))) > int64(len(b)-dataOff) {
			return nil, fmt.Errorf("%w: %q: truncated data", ErrFormat, name)
		}
		data := b[dataOff : dataOff+int(size)]
		next := dataOff + int(size) + pad4(int(size))
		if !allZero(b[dataOff+int(size) : next]) {
			return nil, fmt.Errorf("%w: non-zero padding after the data of %q", ErrFormat, name)
		}
		zero := []int{fUID, fGID, fMtime, fDevMajor, fDevMinor, fCheck}
		if f[fMode]&modeTypeMask != modeChar {
			zero = append(zero, fRdevMajor, fRdevMinor)
		}
		for _, i := range zero {
			if f[i] != 0 {
				return nil, fmt.Errorf("%w: %q: non-zero header field %d", ErrFormat, name, i)
			}
		}

		if name == trailerName {
			if f[fIno] != 0 || f[fMode] != 0 || f[fNlink] != 1 || size != 0 {
				return nil, fmt.Errorf("%w: bad trailer", ErrFormat)
			}
			if len(b)%blockSize != 0 || len(b)-next >= blockSize || !allZero(b[next:]) {
				return nil, fmt.Errorf("%w: %d bytes after the trailer, want zero padding to a %d-byte block", ErrFormat, len(b)-next, blockSize)
			}
			return entries, nil
		}
		if f[fIno] != ino {
			return nil, fmt.Errorf("%w: %q: inode %d, want %d", ErrFormat, name, f[fIno], ino)
		}
		mode := f[fMode]
		if mode&^(modeTypeMask|0o777) != 0 {
			return nil, fmt.Errorf("%w: %q: mode %#o", ErrMode, name, mode)
		}
		e := Entry{Name: name, Mode: fs.FileMode(mode & 0o777)}
		switch mode & modeTypeMask {
		case modeDir:
			if size != 0 || f[fNlink] != 2 {
				return nil, fmt.Errorf("%w: directory %q with data or nlink %d", ErrFormat, name, f[fNlink])
			}
			e.Mode |= fs.ModeDir
		case modeFile:
			if f[fNlink] != 1 {
				return nil, fmt.Errorf("%w: %q: hard links are not supported", ErrFormat, name)
			}
			e.Data = data
		case modeSymlink:
			if f[fNlink] != 1 || mode&0o777 != 0o777 || size == 0 || size+1 > maxNameSize || bytes.IndexByte(data, 0) >= 0 {
				return nil, fmt.Errorf("%w: bad symlink %q", ErrFormat, name)
			}
			e.Mode |= fs.ModeSymlink
			e.Linkname = string(data)
		case modeChar:
			if f[fNlink] != 1 || size != 0 {
				return nil, fmt.Errorf("%w: bad character device %q", ErrFormat, name)
			}
			e.Mode |= fs.ModeDevice | fs.ModeCharDevice
			e.Major, e.Minor = f[fRdevMajor], f[fRdevMinor]
		default:
			return nil, fmt.Errorf("%w: %q: file type %#o", ErrMode, name, mode&modeTypeMask)
		}
		if err := names.add(name, e.Mode); err != nil {
			return nil, err
		}
		entries = append(entries, e)
		off = next
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
