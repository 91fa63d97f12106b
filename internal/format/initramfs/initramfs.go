// Package initramfs builds bay0's initramfs: a gzip-compressed newc cpio
// archive holding bay0 as /init and the trusted public keys, and nothing else
// (no shell, no libc, no tools, no kernel modules: Spine's kernel has every
// driver built in).
//
// The output is reproducible: the same Spec gives the same bytes. Layout:
//
//	dev/ proc/ sys/ run/ newroot/           empty mount points
//	dev/console                             the console node (c 5 1) the kernel opens for /init
//	init                                    bay0 (0755)
//	etc/bay0/keys/0.pub, 1.pub, ...         trusted keys, PEM
//	etc/bay0/role                           what bay0 is here for, unless plain stage 1 (see Role)
package initramfs

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
)

// Paths inside the initramfs.
const (
	InitPath = "init"
	KeysDir  = "etc/bay0/keys"
	RolePath = "etc/bay0/role"
	// Bay0SumPath holds the hex sha256 of /init, the bay0 binary, and a newline: stage 1
	// compares it with the Spine's signed bay0_sha256 without hashing itself under a slow CPU.
	Bay0SumPath = "etc/bay0/bay0.sha256"
	// ConsolePath is the console device node (character 5:1).
	ConsolePath = "dev/console"
)

// Role says what bay0 does as /init of an initramfs. Three are possible:
//
//   - RoleStage1 (no role file): the initramfs `spine vm` hands a kernel in its direct mode.
//     bay0 applies the boot law and switches root into the chosen slot under this kernel.
//   - RoleStage0: the initramfs built into the signed boot program on the EFI system
//     partition. bay0 applies the boot law, verifies the chosen slot, and starts that slot's
//     own kernel with kexec, so the kernel that runs the Spine is the one its slot holds.
//   - SlotRole(slot): the initramfs stage 0 hands the slot's kernel, with the slot's own bay0
//     as /init. Stage 0 has already counted the try, so bay0 only verifies and mounts that
//     slot; if it fails it records the failure and reboots, and stage 0 decides again.
type Role string

// The roles that do not name a slot.
const (
	RoleStage1 Role = ""
	RoleStage0 Role = "stage0"
)

// SlotRole is the role of the initramfs stage 0 builds for slot name ("a" or "b").
func SlotRole(name string) Role { return Role("slot " + name) }

// ErrRole means a role file says something no bay0 acts on.
var ErrRole = errors.New("initramfs: bad role")

// ParseRole reads a role file's contents: the role and a newline.
func ParseRole(b []byte) (Role, error) {
	r, ok := strings.CutSuffix(string(b), "\n")
	if !ok {
		return "", fmt.Errorf("%w: %q does not end in a newline", ErrRole, b)
	}
	if err := Role(r).validate(); err != nil {
		return "", err
	}
	return Role(r), nil
}

// Slot returns the slot name of a SlotRole.
func (r Role) Slot() (string, bool) {
	name, ok := strings.CutPrefix(string(r), "slot ")
	return name, ok && (name == "a" || name == "b")
}

func (r Role) validate() error {
	if _, ok := r.Slot(); ok || r == RoleStage1 || r == RoleStage0 {
		return nil
	}
	return fmt.Errorf("%w: %q is none of stage0, slot a, slot b", ErrRole, string(r))
}

// ErrSpec means a Spec cannot be built into an initramfs.
var ErrSpec = errors.New("initramfs: bad spec")

// Spec is what goes into an initramfs.
type Spec struct {
	Bay0        []byte   // static bay0 binary, installed as /init
	TrustedKeys [][]byte // PEM "PUBLIC KEY" blocks, installed as etc/bay0/keys/<i>.pub; at least one
	Role        Role     // written to RolePath unless RoleStage1
	// Bay0SHA256 is the hex sha256 of Bay0 when the caller already knows it (stage 0 takes it
	// from the signed manifest of the Spine it read Bay0 from); "" has Archive compute it.
	Bay0SHA256 string

	// Extra files, for tools that wrap bay0 (bench boots Debian's modular kernel through a
	// module loader that then starts bay0). Their directories are made; a name already taken
	// is an error. Spine's own initramfs has none.
	Extra []Entry
}

// Build writes the initramfs for s to w, gzip-compressed.
func Build(w io.Writer, s Spec) error {
	// The zero gzip.Header has no name and mtime 0: nothing varies between
	// builds. (BestCompression saves 0.1% here and takes 2.5 times longer.)
	gz := gzip.NewWriter(w)
	if err := Archive(gz, s); err != nil {
		return err
	}
	if err := gz.Close(); err != nil {
		return fmt.Errorf("initramfs: compress: %w", err)
	}
	return nil
}

// Archive writes the initramfs for s to w as a plain newc archive: what a kernel built with the
// initramfs inside it takes (the kernel image around it is compressed already).
func Archive(w io.Writer, s Spec) error {
	if err := s.validate(); err != nil {
		return err
	}
	entries := make(map[string]Entry)
	dir := func(name string) {
		for ; name != "."; name = path.Dir(name) {
			entries[name] = Entry{Name: name, Mode: fs.ModeDir | 0o755}
		}
	}
	file := func(name string, mode fs.FileMode, data []byte) {
		dir(path.Dir(name))
		entries[name] = Entry{Name: name, Mode: mode, Data: data}
	}
	for _, d := range []string{"dev", "proc", "sys", "run", "newroot", KeysDir} {
		dir(d)
	}
	// The kernel opens /dev/console for /init before anything is mounted. Its own default
	// archive has the node; an archive built into the kernel replaces that default, so this
	// one carries it (without it /init starts with no stdin, stdout or stderr).
	entries[ConsolePath] = Entry{Name: ConsolePath, Mode: fs.ModeDevice | fs.ModeCharDevice | 0o600, Major: 5, Minor: 1}
	file(InitPath, 0o755, s.Bay0)
	sum := s.Bay0SHA256
	if sum == "" {
		h := sha256.Sum256(s.Bay0)
		sum = hex.EncodeToString(h[:])
	}
	file(Bay0SumPath, 0o644, []byte(sum+"\n"))
	if s.Role != RoleStage1 {
		file(RolePath, 0o644, []byte(string(s.Role)+"\n"))
	}
	for i, k := range s.TrustedKeys {
		file(path.Join(KeysDir, strconv.Itoa(i)+".pub"), 0o644, k)
	}
	for _, e := range s.Extra {
		if _, taken := entries[e.Name]; taken || !fs.ValidPath(e.Name) || e.Name == "." || !e.Mode.IsRegular() {
			return fmt.Errorf("%w: extra file %q: not a new regular file with a clean relative name", ErrSpec, e.Name)
		}
		file(e.Name, e.Mode, e.Data)
	}

	// Sorted names put every directory before its contents.
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	slices.Sort(names)

	cw := NewWriter(w)
	for _, n := range names {
		e := entries[n]
		var err error
		switch {
		case e.Mode.IsDir():
			err = cw.AddDir(n, e.Mode)
		case isCharDevice(e.Mode):
			err = cw.AddCharDevice(n, e.Mode.Perm(), e.Major, e.Minor)
		default:
			err = cw.AddFile(n, e.Mode, e.Data)
		}
		if err != nil {
			return err
		}
	}
	return cw.Close()
}

// validate checks the parts of s that need no files.
func (s Spec) validate() error {
	switch {
	case len(s.Bay0) == 0:
		return fmt.Errorf("%w: no bay0 binary", ErrSpec)
	case len(s.TrustedKeys) == 0:
		return fmt.Errorf("%w: no trusted keys: bay0 could verify no Spine", ErrSpec)
	}
	if err := s.Role.validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrSpec, err)
	}
	for i, k := range s.TrustedKeys {
		block, rest := pem.Decode(k)
		if block == nil || block.Type != "PUBLIC KEY" || len(bytes.TrimSpace(rest)) != 0 {
			return fmt.Errorf("%w: trusted key %d is not one PEM \"PUBLIC KEY\" block", ErrSpec, i)
		}
	}
	return nil
}

// List reads an initramfs as Build writes it: a single gzip member holding a
// newc archive (see Writer for what is accepted). It is strict: anything else,
// including data after the gzip member, is an error.
func List(r io.Reader) ([]Entry, error) {
	br := bufio.NewReader(r)
	gz, err := gzip.NewReader(br)
	if err != nil {
		return nil, fmt.Errorf("%w: gzip: %v", ErrFormat, err)
	}
	gz.Multistream(false)
	b, err := io.ReadAll(io.LimitReader(gz, maxArchiveSize+1))
	if err != nil {
		return nil, fmt.Errorf("%w: gzip: %v", ErrFormat, err)
	}
	if len(b) > maxArchiveSize {
		return nil, fmt.Errorf("%w: larger than %d bytes uncompressed", ErrFormat, maxArchiveSize)
	}
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		if err == nil {
			return nil, fmt.Errorf("%w: data after the gzip stream", ErrFormat)
		}
		return nil, fmt.Errorf("initramfs: read: %w", err)
	}
	return parse(b)
}

// String describes an entry like one line of `ls -l`, for `spine inspect`.
func (e Entry) String() string {
	switch {
	case e.Mode.IsDir():
		return fmt.Sprintf("%v %s/", e.Mode, e.Name)
	case e.Mode&fs.ModeSymlink != 0:
		return fmt.Sprintf("%v %s -> %s", e.Mode, e.Name, e.Linkname)
	case isCharDevice(e.Mode):
		return fmt.Sprintf("%v %s (%d, %d)", e.Mode, e.Name, e.Major, e.Minor)
	}
	return fmt.Sprintf("%v %s (%d bytes)", e.Mode, e.Name, len(e.Data))
}
