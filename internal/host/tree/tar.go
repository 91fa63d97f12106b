package tree

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
)

// Kind says how the entries of a tar stream are read.
type Kind int

const (
	// Plain archives hold files only: every entry is what it says (the data of a Debian
	// package). A directory entry over a symlink to a directory keeps the symlink, as dpkg does.
	Plain Kind = iota
	// Layer is an OCI image layer: ".wh.NAME" deletes NAME from the layers below and
	// ".wh..wh..opq" empties its directory of what the layers below put there. An entry
	// replaces whatever was at its path unless both are directories, as containerd does.
	Layer
)

// Names with a meaning in OCI layers (image-spec layer.md, "Whiteouts").
const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
)

// EntryError is an archive entry that could not be applied.
type EntryError struct {
	Name string
	Err  error
}

func (e *EntryError) Error() string { return fmt.Sprintf("tar entry %q: %v", e.Name, e.Err) }
func (e *EntryError) Unwrap() error { return e.Err }

// Apply unpacks a tar stream into the tree. Modes are normalised (DirMode, FileMode, ExecMode
// when any execute bit is set); ownership, timestamps and extended attributes are dropped (the
// Spine is built all-root with fixed times); device nodes and pipes are dropped. Apply reads r
// up to the end of the archive, not necessarily to EOF.
func (t *Tree) Apply(r io.Reader, kind Kind) error {
	a := applier{t: t, kind: kind, touched: map[string]bool{}}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		if err := a.entry(hdr, tr); err != nil {
			return &EntryError{Name: hdr.Name, Err: err}
		}
	}
}

// applier applies one archive. touched holds the resolved paths this archive wrote, with their
// parents: whiteouts only delete what lower layers made (image-spec: "Files that are present in
// the same layer as a whiteout file can only be hidden by whiteout files in subsequent layers").
type applier struct {
	t       *Tree
	kind    Kind
	touched map[string]bool
}

func (a *applier) touch(p string) {
	for ; p != "" && !a.touched[p]; p = parentOf(p) {
		a.touched[p] = true
	}
}

func (a *applier) entry(hdr *tar.Header, r io.Reader) error {
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if name == "" {
		return nil // the root itself: its mode is the tree's, not the archive's
	}
	base := path.Base(name)
	if a.kind == Layer && strings.HasPrefix(base, whiteoutPrefix) {
		return a.whiteout(parentOf(name), base)
	}
	switch hdr.Typeflag {
	case tar.TypeDir, tar.TypeReg, tar.TypeCont, tar.TypeSymlink, tar.TypeLink:
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return nil // never carried into a Spine
	default:
		return fmt.Errorf("tar entry type %q is not supported", hdr.Typeflag)
	}
	if isSparse(hdr) {
		// The holes of a sparse file cost nothing in the archive but are written out in full:
		// a few bytes could fill the build host's disk. Image and package builders never
		// write them.
		return errors.New("sparse files are not supported")
	}
	p, err := a.t.entryPath(name)
	if err != nil {
		return err
	}
	a.touch(p)
	switch hdr.Typeflag {
	case tar.TypeDir:
		return a.dir(p)
	case tar.TypeSymlink:
		return a.t.symlink(p, hdr.Linkname)
	case tar.TypeLink:
		return a.link(p, hdr.Linkname)
	}
	mode := FileMode
	if hdr.Mode&0o111 != 0 {
		mode = ExecMode
	}
	return a.t.writeFile(p, r, mode)
}

// isSparse reports a GNU sparse file in any of its encodings (old GNU type 'S', PAX 0.x, 1.0).
func isSparse(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

func (a *applier) dir(p string) error {
	fi, err := a.t.lstat(p)
	if err != nil {
		return err
	}
	if fi != nil && fi.IsDir() {
		return a.t.root.Chmod(p, DirMode)
	}
	if fi != nil && a.kind == Plain && fi.Mode()&fs.ModeSymlink != 0 && a.t.isDir(p) {
		return nil
	}
	if err := a.t.clear(p); err != nil {
		return err
	}
	return a.t.mkdir(p, DirMode)
}

// link makes p a hard link to target, a file the archive (or a lower layer) already wrote.
func (a *applier) link(p, target string) error {
	n, err := cleanName(target)
	if err != nil {
		return fmt.Errorf("hard link target: %w", err)
	}
	if n == "" {
		return errors.New("hard link to the tree's root")
	}
	dir, err := a.t.resolve(parentOf(n), false)
	if err != nil {
		return fmt.Errorf("hard link target %q: %w", target, err)
	}
	old := path.Join(dir, path.Base(n))
	fi, err := a.t.root.Lstat(old)
	if err != nil {
		return fmt.Errorf("hard link target %q: %w", target, err)
	}
	if !fi.Mode().IsRegular() && fi.Mode()&fs.ModeSymlink == 0 {
		return fmt.Errorf("hard link target %q is not a file", target)
	}
	if old == p {
		return nil
	}
	if err := a.t.clear(p); err != nil {
		return err
	}
	return a.t.root.Link(old, p)
}

// whiteout handles ".wh.NAME" and ".wh..wh..opq" in directory dir.
func (a *applier) whiteout(dir, base string) error {
	d, err := a.t.resolve(dir, false)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrNotDir) {
		return nil // nothing below to hide
	}
	if err != nil {
		return err
	}
	if base == opaqueMarker {
		return a.pruneLower(d)
	}
	if strings.HasPrefix(base, whiteoutPrefix+whiteoutPrefix) {
		return nil // other AUFS metadata (.wh..wh.plnk, ...): not part of the image
	}
	victim := strings.TrimPrefix(base, whiteoutPrefix)
	switch victim {
	case "", ".":
		return nil
	case "..":
		return ErrUnsafePath
	}
	p := path.Join(d, victim)
	if a.touched[p] {
		return a.pruneLower(p)
	}
	return a.t.clear(p)
}

// pruneLower removes everything under directory p that this archive did not write.
func (a *applier) pruneLower(p string) error {
	fi, err := a.t.lstat(p)
	if err != nil || fi == nil || !fi.IsDir() {
		return err
	}
	name := p
	if name == "" {
		name = "."
	}
	f, err := a.t.root.Open(name)
	if err != nil {
		return err
	}
	ents, err := f.ReadDir(-1)
	f.Close()
	if err != nil {
		return err
	}
	for _, e := range ents {
		c := path.Join(p, e.Name())
		if !a.touched[c] {
			if err := a.t.clear(c); err != nil {
				return err
			}
			continue
		}
		if e.IsDir() {
			if err := a.pruneLower(c); err != nil {
				return err
			}
		}
	}
	return nil
}
