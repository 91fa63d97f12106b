// Package disk writes and reads the GPT partition table of a bay0 disk image.
//
// A disk made by Create is a sparse raw file: 1 MiB holding the protective
// MBR, the primary GPT header and its 128 entries; the partitions, each
// 1 MiB aligned, in the order given; then 1 MiB at the end holding the backup
// entries and header. Every GUID is derived from a seed, so the same inputs
// give the same bytes. ReadPartitions is the strict reader for both the host
// and the guest; FindBlockDevice maps a partition name to its device node in
// the guest through sysfs.
//
// See the UEFI specification, chapter 5 "GUID Partition Table (GPT) Disk Layout".
package disk

import (
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// SectorSize is the logical sector size of every disk this package writes or reads.
const SectorSize = 512

// Layout constants of the disks Create writes.
const (
	// Align is the alignment of every partition start and size, and the size
	// of the head and tail areas around the partitions.
	Align = 1 << 20
	// NumEntries is the number of entries in the partition array Create writes.
	NumEntries = 128
	// EntrySize is the size of one partition entry, the only size ReadPartitions accepts.
	EntrySize = 128
	// MaxNameLen is the longest partition name in UTF-16 code units.
	MaxNameLen = 36
	// LinuxFilesystem is the type GUID of a partition whose PartitionSpec names no type.
	LinuxFilesystem = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
	// EFISystem is the type GUID of an EFI system partition, where UEFI firmware looks for
	// boot programs.
	EFISystem = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
)

// Errors returned by this package, wrapped with context.
var (
	// ErrNoPartition means no partition carries the requested name.
	ErrNoPartition = errors.New("no such partition")
	// ErrAmbiguous means more than one partition carries the requested name.
	ErrAmbiguous = errors.New("partition name is not unique")
	// ErrBadGPT means neither the primary nor the backup GPT is valid.
	ErrBadGPT = errors.New("no valid GPT")
	// ErrBadSpec means a PartitionSpec cannot be laid out.
	ErrBadSpec = errors.New("bad partition spec")
)

// PartitionSpec asks Create for one partition.
type PartitionSpec struct {
	// Name is the GPT partition name: 1 to 36 printable ASCII characters, no
	// spaces, unique on the disk.
	Name string
	// Size is the size in bytes, a positive multiple of 1 MiB.
	Size int64
	// Type is the partition type GUID as text; empty means LinuxFilesystem.
	Type string
}

// Partition is one used entry of a GPT.
type Partition struct {
	// Index is the 1-based position in the partition entry array, as in /dev/vda<Index>.
	Index int
	// Name is the partition name, decoded from UTF-16LE.
	Name string
	// Start and Size are in bytes.
	Start, Size int64
	// Type and GUID are the partition type GUID and the unique partition GUID,
	// in the on-disk byte order (see FormatGUID).
	Type, GUID [16]byte
}

// Create writes a new disk image at path with one partition per spec, in order.
// The disk GUID and partition GUIDs are derived from seed and the names. The
// image is written to path+".tmp", synced, then renamed over path, so a failure
// leaves path untouched. It returns the partitions as ReadPartitions reads them.
func Create(path string, specs []PartitionSpec, seed string) ([]Partition, error) {
	l, err := plan(specs, seed)
	if err != nil {
		return nil, err
	}
	tmp := path + ".tmp"
	if err := writeImage(tmp, l); err != nil {
		return nil, errors.Join(err, removeIfExists(tmp))
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, errors.Join(fmt.Errorf("rename disk image: %w", err), removeIfExists(tmp))
	}
	return l.parts, nil
}

// plan validates specs and lays the partitions out on the disk.
func plan(specs []PartitionSpec, seed string) (layout, error) {
	if len(specs) > NumEntries {
		return layout{}, fmt.Errorf("%w: %d partitions, at most %d", ErrBadSpec, len(specs), NumEntries)
	}
	seen := make(map[string]bool, len(specs))
	parts := make([]Partition, 0, len(specs))
	next := int64(Align)
	for i, s := range specs {
		if err := checkName(s.Name); err != nil {
			return layout{}, fmt.Errorf("%w: partition %d: %w", ErrBadSpec, i+1, err)
		}
		t := s.Type
		if t == "" {
			t = LinuxFilesystem
		}
		typ, err := ParseGUID(t)
		if err != nil {
			return layout{}, fmt.Errorf("%w: partition %q: %w", ErrBadSpec, s.Name, err)
		}
		if seen[s.Name] {
			return layout{}, fmt.Errorf("%w: partition %d: name %q used twice", ErrBadSpec, i+1, s.Name)
		}
		seen[s.Name] = true
		if s.Size <= 0 || s.Size%Align != 0 {
			return layout{}, fmt.Errorf("%w: partition %q: size %d is not a positive multiple of 1 MiB", ErrBadSpec, s.Name, s.Size)
		}
		// Leave room for the tail so the total below cannot overflow.
		if s.Size > maxDiskSize-Align-next {
			return layout{}, fmt.Errorf("%w: partition %q: disk larger than %d bytes", ErrBadSpec, s.Name, int64(maxDiskSize))
		}
		parts = append(parts, Partition{
			Index: i + 1,
			Name:  s.Name,
			Start: next,
			Size:  s.Size,
			Type:  typ,
			GUID:  derivedGUID("partition", seed, s.Name),
		})
		next += s.Size
	}
	return layout{
		diskGUID: derivedGUID("disk", seed, ""),
		parts:    parts,
		sectors:  (next + Align) / SectorSize,
	}, nil
}

// maxDiskSize bounds the disks Create writes, far beyond any real use, so that
// sizes and sector numbers never overflow.
const maxDiskSize = 1 << 60

// checkName accepts names the kernel reports unchanged as PARTNAME: it turns
// the UTF-16 name into 7-bit ASCII and replaces what it cannot print.
func checkName(name string) error {
	if name == "" || len(name) > MaxNameLen {
		return fmt.Errorf("name %q must be 1 to %d characters", name, MaxNameLen)
	}
	for _, c := range []byte(name) {
		if c <= ' ' || c > '~' {
			return fmt.Errorf("name %q: only printable ASCII without spaces", name)
		}
	}
	return nil
}

// writeImage writes the sparse image l to path and syncs it.
func writeImage(path string, l layout) (err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("create disk image: %w", err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close disk image %q: %w", path, cerr)
		}
	}()
	size := l.sectors * SectorSize
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("size disk image %q: %w", path, err)
	}
	head, tail := l.encode()
	if _, err := f.WriteAt(head, 0); err != nil {
		return fmt.Errorf("write primary GPT to %q: %w", path, err)
	}
	if _, err := f.WriteAt(tail, size-int64(len(tail))); err != nil {
		return fmt.Errorf("write backup GPT to %q: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync disk image %q: %w", path, err)
	}
	return nil
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %q: %w", path, err)
	}
	return nil
}

// guidNamespace is the RFC 4122 name-space UUID of bay0 disks: the UUIDv5 of
// "alpinespine.org/spine/disk" in the URL name space,
// 519530b7-8ce7-568e-98bd-a9794e040d55.
func guidNamespace() [16]byte {
	return [16]byte{0x51, 0x95, 0x30, 0xb7, 0x8c, 0xe7, 0x56, 0x8e, 0x98, 0xbd, 0xa9, 0x79, 0x4e, 0x04, 0x0d, 0x55}
}

// derivedGUID returns a name-based (version 5, SHA-1) UUID of kind, seed and
// name, in GPT byte order. The fields are length-prefixed so that no two
// different inputs hash the same bytes.
func derivedGUID(kind, seed, name string) [16]byte {
	ns := guidNamespace()
	h := sha1.New()
	h.Write(ns[:])
	for _, s := range []string{kind, seed, name} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	var u [16]byte
	copy(u[:], h.Sum(nil))
	u[6] = u[6]&0x0f | 0x50 // version 5
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	return swapGUID(u)
}

// ParseGUID parses "XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX" into GPT byte order,
// where the first three fields are little-endian.
func ParseGUID(s string) ([16]byte, error) {
	u, err := parseUUID(s)
	if err != nil {
		return [16]byte{}, err
	}
	return swapGUID(u), nil
}

// FormatGUID formats a GUID in GPT byte order as upper-case text, the way
// sfdisk and sgdisk print it.
func FormatGUID(g [16]byte) string {
	u := swapGUID(g)
	s := hex.EncodeToString(u[:])
	return strings.ToUpper(s[0:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:32])
}

// parseUUID parses the canonical text form into RFC 4122 (big-endian) byte order.
func parseUUID(s string) ([16]byte, error) {
	var u [16]byte
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, fmt.Errorf("parse GUID %q: want XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX", s)
	}
	b, err := hex.DecodeString(s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36])
	if err != nil {
		return u, fmt.Errorf("parse GUID %q: %w", s, err)
	}
	copy(u[:], b)
	return u, nil
}

// swapGUID converts between RFC 4122 byte order and GPT byte order; it is its own inverse.
func swapGUID(u [16]byte) [16]byte {
	g := u
	g[0], g[1], g[2], g[3] = u[3], u[2], u[1], u[0]
	g[4], g[5] = u[5], u[4]
	g[6], g[7] = u[7], u[6]
	return g
}

// Find returns the partition called name. It refuses a name that appears twice.
func Find(parts []Partition, name string) (Partition, error) {
	var found []Partition
	for _, p := range parts {
		if p.Name == name {
			found = append(found, p)
		}
	}
	switch len(found) {
	case 0:
		return Partition{}, fmt.Errorf("find partition %q: %w", name, ErrNoPartition)
	case 1:
		return found[0], nil
	default:
		return Partition{}, fmt.Errorf("find partition %q: %w: entries %d and %d", name, ErrAmbiguous, found[0].Index, found[1].Index)
	}
}
