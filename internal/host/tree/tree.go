// Package tree assembles a persona's root tree in a directory, from archives the operator did
// not write (OCI image layers, the data of Debian packages) and from the operator's own files,
// without ever writing outside that directory.
//
// Every operation goes through an os.Root, and paths are resolved the way the persona will see
// them once the tree is its root: an absolute symlink points into the tree and ".." stops at
// its top. A symlink planted by one archive entry therefore cannot lead a later write onto the
// build host; at worst it leads it somewhere else inside the tree.
package tree

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// maxLinks bounds the symlinks followed while resolving one path, as the kernel does
// (MAXSYMLINKS, path_resolution(7)).
const maxLinks = 40

// Modes given to everything unpacked from an archive. The Spine is built all-root and a persona
// runs as a uid that owns nothing in its tree, so it reads its files through the "other" bits:
// they must be readable. The tree is mounted read-only, so write bits change nothing, and the
// setuid, setgid and sticky bits are never carried (Article III: no privilege inside a tree).
const (
	DirMode  fs.FileMode = 0o755
	FileMode fs.FileMode = 0o644
	ExecMode fs.FileMode = 0o755
)

var (
	// ErrUnsafePath refuses an archive entry or link whose name climbs out of the tree ("..").
	ErrUnsafePath = errors.New("path climbs out of the tree")
	// ErrNotDir means a path goes through something that is not a directory.
	ErrNotDir = errors.New("not a directory")
	// ErrLoop means resolving a path followed more than 40 symlinks.
	ErrLoop = errors.New("too many levels of symbolic links")
	// ErrSpecial refuses a device node, named pipe or socket in the operator's own files.
	ErrSpecial = errors.New("cannot be part of a Spine")
)

// Tree is a directory being filled as a persona's root tree.
type Tree struct {
	root *os.Root
}

// Open opens an existing directory as a tree. Close it when done.
func Open(dir string) (*Tree, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open tree: %w", err)
	}
	return &Tree{root: r}, nil
}

// Close releases the tree's directory.
func (t *Tree) Close() error { return t.root.Close() }

// cleanName turns an archive entry name or a hard link target into a clean path relative to
// the tree's root ("" is the root itself). A leading "/" is dropped: inside an image it names
// the image's root, which is the tree. Any ".." element is refused outright, even a harmless
// one: no tool writes them, and an archive that does is not one to trust.
func cleanName(name string) (string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("%q: NUL byte in name", name)
	}
	for _, e := range strings.Split(name, "/") {
		if e == ".." {
			return "", fmt.Errorf("%q: %w", name, ErrUnsafePath)
		}
	}
	p := path.Clean("/" + name)
	return strings.TrimPrefix(p, "/"), nil
}

// parentOf is path.Dir for tree-relative paths, with "" as the root.
func parentOf(p string) string {
	d := path.Dir(p)
	if d == "." || d == "/" {
		return ""
	}
	return d
}

// resolve returns the path, relative to the tree's root and free of symlinks, that p (relative,
// clean or not) names, following every symlink as the persona would see it. When create is set,
// every element must be a directory and missing ones are made (DirMode); otherwise the last
// element may be anything and a missing element gives an error that wraps fs.ErrNotExist.
func (t *Tree) resolve(p string, create bool) (string, error) {
	todo := split(p)
	cur, links := "", 0
	for len(todo) > 0 {
		e := todo[0]
		todo = todo[1:]
		if e == ".." {
			cur = parentOf(cur)
			continue
		}
		next := path.Join(cur, e)
		fi, err := t.root.Lstat(next)
		switch {
		case errors.Is(err, fs.ErrNotExist) && create:
			if err := t.mkdir(next, DirMode); err != nil {
				return "", err
			}
			cur = next
		case err != nil:
			return "", err
		case fi.Mode()&fs.ModeSymlink != 0:
			if links++; links > maxLinks {
				return "", fmt.Errorf("%s: %w", p, ErrLoop)
			}
			target, err := t.root.Readlink(next)
			if err != nil {
				return "", err
			}
			if path.IsAbs(target) {
				cur = ""
			}
			todo = append(split(target), todo...)
		case fi.IsDir() || len(todo) == 0 && !create:
			cur = next
		default:
			return "", fmt.Errorf("%s: %s: %w", p, next, ErrNotDir)
		}
	}
	return cur, nil
}

// split returns the elements of a slash-separated path, without empty and "." ones.
func split(p string) []string {
	var out []string
	for _, e := range strings.Split(p, "/") {
		if e != "" && e != "." {
			out = append(out, e)
		}
	}
	return out
}

// entryPath resolves the directory of a clean relative name (making missing directories) and
// returns where the entry itself goes. The last element is not followed: an entry replaces a
// symlink, it does not write through it.
func (t *Tree) entryPath(name string) (string, error) {
	dir, err := t.resolve(parentOf(name), true)
	if err != nil {
		return "", err
	}
	return path.Join(dir, path.Base(name)), nil
}

func (t *Tree) mkdir(p string, mode fs.FileMode) error {
	if err := t.root.Mkdir(p, mode); err != nil {
		return err
	}
	// Chmod after making: the umask must not decide what lands in the image.
	return t.root.Chmod(p, mode)
}

// clear removes whatever is at p (nothing there is fine).
func (t *Tree) clear(p string) error {
	if p == "" {
		return errors.New("cannot replace the tree's root")
	}
	return t.root.RemoveAll(p)
}

// lstat is Lstat that reports a missing path as (nil, nil).
func (t *Tree) lstat(p string) (fs.FileInfo, error) {
	fi, err := t.root.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return fi, err
}

// writeFile replaces whatever is at the resolved path p with a regular file holding r's bytes.
func (t *Tree) writeFile(p string, r io.Reader, mode fs.FileMode) error {
	if err := t.clear(p); err != nil {
		return err
	}
	f, err := t.root.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	// Chmod through the open file: the path is not looked up again.
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// symlink replaces whatever is at the resolved path p with a symlink to target. The target is
// stored as written: it is resolved by the kernel inside the persona's root, never here.
func (t *Tree) symlink(p, target string) error {
	if target == "" || strings.IndexByte(target, 0) >= 0 {
		return fmt.Errorf("symlink target %q is not a path", target)
	}
	if err := t.clear(p); err != nil {
		return err
	}
	return t.root.Symlink(target, p)
}

// WriteFile puts r's bytes at name (a path inside the tree), replacing what was there, with the
// given permission bits.
func (t *Tree) WriteFile(name string, r io.Reader, mode fs.FileMode) error {
	n, err := cleanName(name)
	if err != nil {
		return err
	}
	if n == "" {
		return fmt.Errorf("write %q: cannot replace the tree's root", name)
	}
	p, err := t.entryPath(n)
	if err != nil {
		return fmt.Errorf("write %q: %w", name, err)
	}
	if err := t.writeFile(p, r, mode); err != nil {
		return fmt.Errorf("write %q: %w", name, err)
	}
	return nil
}

// Lookup follows name (a path inside the persona, absolute or not) through the tree as the
// persona would and returns the tree-relative path it ends at and that file's mode.
func (t *Tree) Lookup(name string) (string, fs.FileMode, error) {
	p, err := t.resolve(name, false)
	if err != nil {
		return "", 0, err
	}
	if p == "" {
		p = "."
	}
	fi, err := t.root.Lstat(p)
	if err != nil {
		return "", 0, err
	}
	return p, fi.Mode(), nil
}

// LookPath finds an executable the way execvp(3) does inside the persona: a name with a slash is
// taken as is (relative to workdir), anything else is searched in pathEnv (a $PATH value). It
// returns the absolute path inside the persona, which may go through symlinks.
func (t *Tree) LookPath(file, pathEnv, workdir string) (string, error) {
	if strings.Contains(file, "/") {
		p := file
		if !path.IsAbs(p) {
			p = path.Join("/", workdir, p)
		}
		if err := t.isExec(p); err != nil {
			return "", err
		}
		return p, nil
	}
	for _, dir := range strings.Split(pathEnv, ":") {
		if !path.IsAbs(dir) {
			continue
		}
		p := path.Join(dir, file)
		if t.isExec(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%q is not in the tree on PATH %q", file, pathEnv)
}

func (t *Tree) isExec(p string) error {
	_, mode, err := t.Lookup(p)
	if err != nil {
		return err
	}
	if !mode.IsRegular() || mode.Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", p)
	}
	return nil
}

// CopyDir copies the operator's directory src into the tree. Permission bits are kept as they
// are, setuid included, so that the audit sees them and refuses: the operator's own files are
// judged, not silently changed. A directory of src merges into the directory the same path
// names in the tree, through symlinks (an image's /lib -> usr/lib stays a symlink). Device
// nodes, pipes and sockets are refused with ErrSpecial.
func (t *Tree) CopyDir(src string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		dst, err := t.entryPath(rel)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		mode := info.Mode().Perm() | info.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)
		switch typ := info.Mode().Type(); typ {
		case fs.ModeDir:
			fi, err := t.lstat(dst)
			if err != nil {
				return err
			}
			if fi != nil && fi.IsDir() {
				return t.root.Chmod(dst, mode)
			}
			if t.isDir(dst) {
				return nil // a symlink to a directory: merge into its target
			}
			if err := t.clear(dst); err != nil {
				return err
			}
			return t.mkdir(dst, mode)
		case fs.ModeSymlink:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return t.symlink(dst, link)
		case 0:
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			return t.writeFile(dst, f, mode)
		default:
			return fmt.Errorf("%s: %s %w", rel, describe(typ), ErrSpecial)
		}
	})
}

// isDir reports whether p, followed through symlinks, is a directory of the tree.
func (t *Tree) isDir(p string) bool {
	r, err := t.resolve(p, false)
	if err != nil {
		return false
	}
	fi, err := t.root.Lstat(r)
	return err == nil && fi.IsDir()
}

func describe(t fs.FileMode) string {
	switch {
	case t&fs.ModeDevice != 0:
		return "device node"
	case t&fs.ModeNamedPipe != 0:
		return "named pipe"
	case t&fs.ModeSocket != 0:
		return "socket"
	}
	return "special file"
}

// ReadFile reads the regular file name (a path inside the persona, followed as the persona
// would) up to limit bytes; a larger file is an error. A missing file wraps fs.ErrNotExist.
func (t *Tree) ReadFile(name string, limit int64) ([]byte, error) {
	p, mode, err := t.Lookup(name)
	if err != nil {
		return nil, err
	}
	if !mode.IsRegular() {
		return nil, fmt.Errorf("read %q: not a regular file", name)
	}
	f, err := t.root.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %q: %w", name, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("read %q: larger than %d bytes", name, limit)
	}
	return b, nil
}

// Dir is the tree's directory on the build host.
func (t *Tree) Dir() string { return t.root.Name() }
