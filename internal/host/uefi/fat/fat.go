// Package fat writes FAT32 file systems, the format of an EFI system partition, reproducibly:
// fixed time stamps, a volume serial number from a seed, files and directories laid out in
// name order in contiguous clusters.
//
// It writes what firmware needs to read and nothing more: 8.3 upper-case names (no long file
// names), one volume, files given whole. The reserved sectors, both FATs and every directory
// cluster are written in full, so the result does not depend on what the target held before;
// unused data clusters are left as they are.
//
// See Microsoft's "FAT: General Overview of On-Disk Format" (the FAT32 specification, 2000)
// and the UEFI specification, "File System Format".
package fat

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Fixed geometry of the volumes Write lays out.
const (
	SectorSize      = 512
	reservedSectors = 32 // boot sector, FSInfo, backup boot sector at 6, its FSInfo at 7
	numFATs         = 2
	fsInfoSector    = 1
	backupBoot      = 6
	rootCluster     = 2
	dirEntrySize    = 32
	minClusters     = 65525      // fewer clusters make the volume FAT16 by definition
	maxClusters     = 0x0FFFFFF5 // FAT32 cluster numbers are 28 bits, minus the reserved values
	endOfChain      = 0x0FFFFFFF
	mediaFixed      = 0xF8
	attrDirectory   = 0x10
	attrArchive     = 0x20
	attrVolumeLabel = 0x08
)

// MinSize is the smallest volume Write accepts: room for 65525 one-sector clusters and their FATs.
const MinSize = 33 << 20

// File is one file of the volume.
type File struct {
	// Path is slash-separated, relative to the root, each element an 8.3 name such as
	// "EFI/BOOT/BOOTX64.EFI"; directories are created as needed.
	Path string
	Data []byte
}

// Volume describes the file system to write.
type Volume struct {
	// Size is the volume size in bytes, a multiple of SectorSize and at least MinSize.
	Size int64
	// HiddenSectors is the volume's first sector on its disk (the partition's start LBA),
	// recorded in the boot sector as FAT requires.
	HiddenSectors uint32
	// Label is an 8.3-style volume label of up to 11 characters; empty means none.
	Label string
	// Seed makes the volume serial number; the same seed gives the same number.
	Seed string
	// Time stamps every file and directory; the zero value means 1980-01-01 00:00:00, the
	// earliest time FAT can record.
	Time  time.Time
	Files []File
}

// ErrName means a path element is not a valid upper-case 8.3 name.
var ErrName = errors.New("not an upper-case 8.3 FAT name")

// geometry is the computed layout.
type geometry struct {
	sectors           uint32
	sectorsPerCluster uint32
	fatSectors        uint32
	clusters          uint32 // data clusters, numbered from 2
}

func (g geometry) clusterBytes() int64 { return int64(g.sectorsPerCluster) * SectorSize }
func (g geometry) dataStart() int64 {
	return int64(reservedSectors+numFATs*g.fatSectors) * SectorSize
}
func (g geometry) clusterOffset(c uint32) int64 {
	return g.dataStart() + int64(c-rootCluster)*g.clusterBytes()
}

// plan chooses the cluster size and FAT size for size bytes.
func plan(size int64) (geometry, error) {
	if size < MinSize || size%SectorSize != 0 || size/SectorSize > 0xFFFFFFFF {
		return geometry{}, fmt.Errorf("FAT32 volume of %d bytes: want a multiple of %d from %d to 2 TiB", size, SectorSize, int64(MinSize))
	}
	sectors := uint32(size / SectorSize)
	for _, spc := range []uint32{1, 2, 4, 8, 16, 32, 64} {
		// The FAT must hold an entry for every cluster plus the two reserved ones; counting
		// clusters as if the FATs took no room overestimates them, so the FAT is big enough.
		over := (sectors-reservedSectors)/spc + 2
		fat := (over*4 + SectorSize - 1) / SectorSize
		if reservedSectors+numFATs*fat >= sectors {
			continue
		}
		clusters := (sectors - reservedSectors - numFATs*fat) / spc
		// Prefer small clusters, but keep the FAT32 cluster count in range.
		if clusters >= minClusters && clusters <= maxClusters {
			return geometry{sectors: sectors, sectorsPerCluster: spc, fatSectors: fat, clusters: clusters}, nil
		}
	}
	return geometry{}, fmt.Errorf("FAT32 volume of %d bytes: no cluster size gives %d to %d clusters", size, minClusters, maxClusters)
}

// node is a directory or file of the tree being written.
type node struct {
	name     [11]byte
	dir      bool
	data     []byte
	children []*node
	cluster  uint32 // first cluster; 0 for an empty file
	clusters uint32
}

// Write writes the volume to w at offset 0 (an io.SectionReader-style view of the partition).
func Write(w io.WriterAt, v Volume) error {
	g, err := plan(v.Size)
	if err != nil {
		return err
	}
	label, err := labelName(v.Label)
	if err != nil {
		return err
	}
	root := &node{dir: true, cluster: rootCluster}
	for _, f := range v.Files {
		if err := root.add(f); err != nil {
			return err
		}
	}
	// Allocate: directories and files in depth-first name order, each contiguous.
	next := uint32(rootCluster)
	var order []*node
	var alloc func(n *node) error
	alloc = func(n *node) error {
		slices.SortFunc(n.children, func(a, b *node) int { return strings.Compare(string(a.name[:]), string(b.name[:])) })
		size := int64(len(n.data))
		if n.dir {
			entries := len(n.children) + 2 // "." and "..", or the label in the root
			size = int64(entries) * dirEntrySize
		}
		n.clusters = uint32((size + g.clusterBytes() - 1) / g.clusterBytes())
		if n.dir && n.clusters == 0 {
			n.clusters = 1
		}
		if n.clusters > 0 {
			if uint64(next)+uint64(n.clusters) > uint64(g.clusters)+rootCluster {
				return fmt.Errorf("FAT32 volume of %d bytes is too small for its files", v.Size)
			}
			n.cluster = next
			next += n.clusters
		}
		order = append(order, n)
		for _, c := range n.children {
			if err := alloc(c); err != nil {
				return err
			}
		}
		return nil
	}
	if err := alloc(root); err != nil {
		return err
	}

	stamp := fatTime(v.Time)
	serial := sha256.Sum256([]byte("alpinespine.org/spine/fat\x00" + v.Seed))
	if err := writeReserved(w, g, binary.LittleEndian.Uint32(serial[:]), label, v.HiddenSectors, next); err != nil {
		return err
	}
	if err := writeFATs(w, g, order); err != nil {
		return err
	}
	for _, n := range order {
		var content []byte
		if n.dir {
			content = n.directory(label, stamp, n == root, order)
		} else {
			content = n.data
		}
		if n.clusters == 0 {
			continue
		}
		// Directories are written to the end of their clusters so stale bytes never read
		// as entries; files only as far as their data.
		if n.dir {
			content = append(content, make([]byte, int64(n.clusters)*g.clusterBytes()-int64(len(content)))...)
		}
		if _, err := w.WriteAt(content, g.clusterOffset(n.cluster)); err != nil {
			return fmt.Errorf("write FAT32 data: %w", err)
		}
	}
	return nil
}

// add places file f under n, creating directories on the way.
func (n *node) add(f File) error {
	parts := strings.Split(f.Path, "/")
	for i, p := range parts {
		name, err := shortName(p)
		if err != nil {
			return fmt.Errorf("file %q: %w", f.Path, err)
		}
		last := i == len(parts)-1
		var child *node
		for _, c := range n.children {
			if c.name == name {
				child = c
			}
		}
		switch {
		case child == nil && last:
			n.children = append(n.children, &node{name: name, data: f.Data})
			return nil
		case child == nil:
			child = &node{name: name, dir: true}
			n.children = append(n.children, child)
		case last || !child.dir:
			return fmt.Errorf("file %q: %q is given twice or is both a file and a directory", f.Path, p)
		}
		n = child
	}
	return nil
}

// directory encodes the entries of directory n. parentOf finds ".." among all nodes.
func (n *node) directory(label [11]byte, stamp [2]uint16, isRoot bool, all []*node) []byte {
	var b []byte
	if isRoot {
		if label != ([11]byte{}) {
			b = append(b, entry(label, attrVolumeLabel, 0, 0, stamp)...)
		}
	} else {
		parent := uint32(0) // ".." of a directory in the root points at cluster 0
		for _, p := range all {
			if p.dir && p.cluster != rootCluster && slices.Contains(p.children, n) {
				parent = p.cluster
			}
		}
		b = append(b, entry(dotName("."), attrDirectory, n.cluster, 0, stamp)...)
		b = append(b, entry(dotName(".."), attrDirectory, parent, 0, stamp)...)
	}
	for _, c := range n.children {
		if c.dir {
			b = append(b, entry(c.name, attrDirectory, c.cluster, 0, stamp)...)
		} else {
			b = append(b, entry(c.name, attrArchive, c.cluster, uint32(len(c.data)), stamp)...)
		}
	}
	return b
}

// entry encodes one 32-byte directory entry.
func entry(name [11]byte, attr byte, cluster, size uint32, stamp [2]uint16) []byte {
	e := make([]byte, dirEntrySize)
	copy(e, name[:])
	e[11] = attr
	binary.LittleEndian.PutUint16(e[14:], stamp[1]) // creation time
	binary.LittleEndian.PutUint16(e[16:], stamp[0]) // creation date
	binary.LittleEndian.PutUint16(e[18:], stamp[0]) // last access date
	binary.LittleEndian.PutUint16(e[20:], uint16(cluster>>16))
	binary.LittleEndian.PutUint16(e[22:], stamp[1]) // write time
	binary.LittleEndian.PutUint16(e[24:], stamp[0]) // write date
	binary.LittleEndian.PutUint16(e[26:], uint16(cluster))
	binary.LittleEndian.PutUint32(e[28:], size)
	return e
}

// writeReserved writes the boot sector, the FSInfo sector and their backups.
func writeReserved(w io.WriterAt, g geometry, serial uint32, label [11]byte, hidden, nextFree uint32) error {
	b := make([]byte, reservedSectors*SectorSize)
	bs := b[:SectorSize]
	copy(bs, []byte{0xEB, 0x58, 0x90}) // jump over the BPB
	copy(bs[3:], "MSWIN4.1")           // the OEM name the specification recommends
	binary.LittleEndian.PutUint16(bs[11:], SectorSize)
	bs[13] = byte(g.sectorsPerCluster)
	binary.LittleEndian.PutUint16(bs[14:], reservedSectors)
	bs[16] = numFATs
	bs[21] = mediaFixed
	binary.LittleEndian.PutUint16(bs[24:], 63)  // sectors per track (legacy geometry)
	binary.LittleEndian.PutUint16(bs[26:], 255) // heads (legacy geometry)
	binary.LittleEndian.PutUint32(bs[28:], hidden)
	binary.LittleEndian.PutUint32(bs[32:], g.sectors)
	binary.LittleEndian.PutUint32(bs[36:], g.fatSectors)
	binary.LittleEndian.PutUint32(bs[44:], rootCluster)
	binary.LittleEndian.PutUint16(bs[48:], fsInfoSector)
	binary.LittleEndian.PutUint16(bs[50:], backupBoot)
	bs[64] = 0x80 // drive number
	bs[66] = 0x29 // extended boot signature: serial, label and type follow
	binary.LittleEndian.PutUint32(bs[67:], serial)
	if label == ([11]byte{}) {
		copy(bs[71:], "NO NAME    ")
	} else {
		copy(bs[71:], label[:])
	}
	copy(bs[82:], "FAT32   ")
	// Not bootable by a BIOS: halt if one ever jumps here.
	copy(bs[90:], []byte{0xF4, 0xEB, 0xFD})
	bs[510], bs[511] = 0x55, 0xAA

	fi := b[fsInfoSector*SectorSize : (fsInfoSector+1)*SectorSize]
	binary.LittleEndian.PutUint32(fi[0:], 0x41615252)
	binary.LittleEndian.PutUint32(fi[484:], 0x61417272)
	binary.LittleEndian.PutUint32(fi[488:], g.clusters-(nextFree-rootCluster)) // free clusters
	binary.LittleEndian.PutUint32(fi[492:], nextFree)                          // first free cluster
	binary.LittleEndian.PutUint32(fi[508:], 0xAA550000)

	copy(b[backupBoot*SectorSize:], b[:2*SectorSize])
	if _, err := w.WriteAt(b, 0); err != nil {
		return fmt.Errorf("write FAT32 boot sectors: %w", err)
	}
	return nil
}

// writeFATs writes both copies of the allocation table.
func writeFATs(w io.WriterAt, g geometry, nodes []*node) error {
	t := make([]byte, int64(g.fatSectors)*SectorSize)
	binary.LittleEndian.PutUint32(t[0:], 0x0FFFFF00|mediaFixed)
	binary.LittleEndian.PutUint32(t[4:], endOfChain) // clean, no errors
	for _, n := range nodes {
		for i := uint32(0); i < n.clusters; i++ {
			c := n.cluster + i
			v := c + 1
			if i == n.clusters-1 {
				v = endOfChain
			}
			binary.LittleEndian.PutUint32(t[4*c:], v)
		}
	}
	for i := int64(0); i < numFATs; i++ {
		if _, err := w.WriteAt(t, (reservedSectors+i*int64(g.fatSectors))*SectorSize); err != nil {
			return fmt.Errorf("write FAT: %w", err)
		}
	}
	return nil
}

// shortName converts "BOOTX64.EFI" to its 11-byte directory form "BOOTX64 EFI".
func shortName(s string) ([11]byte, error) {
	var n [11]byte
	base, ext, hasDot := strings.Cut(s, ".")
	if base == "" || len(base) > 8 || len(ext) > 3 || (hasDot && ext == "") || strings.Contains(ext, ".") {
		return n, fmt.Errorf("%w: %q", ErrName, s)
	}
	for _, c := range []byte(base + ext) {
		if !validChar(c) {
			return n, fmt.Errorf("%w: %q", ErrName, s)
		}
	}
	copy(n[:], "           ")
	copy(n[:8], base)
	copy(n[8:], ext)
	return n, nil
}

func labelName(s string) ([11]byte, error) {
	var n [11]byte
	if s == "" {
		return n, nil
	}
	if len(s) > 11 {
		return n, fmt.Errorf("volume label %q: %w", s, ErrName)
	}
	for _, c := range []byte(s) {
		if !validChar(c) && c != ' ' {
			return n, fmt.Errorf("volume label %q: %w", s, ErrName)
		}
	}
	copy(n[:], "           ")
	copy(n[:], s)
	return n, nil
}

func dotName(s string) [11]byte {
	var n [11]byte
	copy(n[:], "           ")
	copy(n[:], s)
	return n
}

// validChar reports whether c may appear in a short name (upper-case letters, digits and the
// specification's allowed punctuation).
func validChar(c byte) bool {
	return 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'()-@^_`{}~", c) >= 0
}

// fatTime returns the FAT date and time of t (UTC, two-second resolution), clamped to the
// years FAT can record.
func fatTime(t time.Time) [2]uint16 {
	t = t.UTC()
	if t.Year() < 1980 {
		t = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if t.Year() > 2107 {
		t = time.Date(2107, 12, 31, 23, 59, 58, 0, time.UTC)
	}
	date := uint16(t.Year()-1980)<<9 | uint16(t.Month())<<5 | uint16(t.Day())
	clock := uint16(t.Hour())<<11 | uint16(t.Minute())<<5 | uint16(t.Second()/2)
	return [2]uint16{date, clock}
}
