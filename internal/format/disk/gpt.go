package disk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"unicode/utf16"
)

// On-disk sizes and offsets. All integers are little-endian.
const (
	headerSize    = 92 // bytes of the header covered by its CRC, as written by Create
	headerRev     = 0x00010000
	headerSig     = "EFI PART"
	entriesBytes  = NumEntries * EntrySize
	entrySectors  = entriesBytes / SectorSize // 32
	headSectors   = 2 + entrySectors          // MBR, header, entries
	tailSectors   = entrySectors + 1          // entries, header
	maxEntries    = 4096                      // bounds the entry array a header may ask us to read
	mbrEntryOff   = 446
	mbrSigOff     = 510
	mbrTypeGPT    = 0xee
	nameBytes     = MaxNameLen * 2
	entryNameOff  = 56
	minDiskSector = headSectors + tailSectors
)

// Header field offsets.
const (
	hOffSig        = 0  // [8]byte "EFI PART"
	hOffRev        = 8  // uint32
	hOffSize       = 12 // uint32
	hOffCRC        = 16 // uint32, CRC32 (IEEE) of the header with this field zero
	hOffMyLBA      = 24 // uint64
	hOffAltLBA     = 32 // uint64
	hOffFirstLBA   = 40 // uint64, first usable
	hOffLastLBA    = 48 // uint64, last usable
	hOffDiskGUID   = 56 // [16]byte
	hOffEntriesLBA = 72 // uint64
	hOffNumEntries = 80 // uint32
	hOffEntrySize  = 84 // uint32
	hOffEntriesCRC = 88 // uint32, CRC32 (IEEE) of NumEntries*EntrySize bytes
)

// Entry field offsets.
const (
	eOffType  = 0  // [16]byte
	eOffGUID  = 16 // [16]byte
	eOffFirst = 32 // uint64, first LBA
	eOffLast  = 40 // uint64, last LBA, inclusive
	// 48: uint64 attribute flags, written as zero and ignored.
)

// layout is a complete partition table: what Create writes.
type layout struct {
	diskGUID [16]byte
	parts    []Partition // Index in 1..NumEntries, within the usable sectors
	sectors  int64       // disk size in sectors
}

// encode returns the first headSectors and the last tailSectors of the disk.
func (l layout) encode() (head, tail []byte) {
	last := uint64(l.sectors - 1)
	entries := make([]byte, entriesBytes)
	for _, p := range l.parts {
		e := entries[(p.Index-1)*EntrySize : p.Index*EntrySize]
		copy(e[eOffType:], p.Type[:])
		copy(e[eOffGUID:], p.GUID[:])
		binary.LittleEndian.PutUint64(e[eOffFirst:], uint64(p.Start/SectorSize))
		binary.LittleEndian.PutUint64(e[eOffLast:], uint64((p.Start+p.Size)/SectorSize-1))
		for i, u := range utf16.Encode([]rune(p.Name)) {
			binary.LittleEndian.PutUint16(e[entryNameOff+2*i:], u)
		}
	}
	entriesCRC := crc32.ChecksumIEEE(entries)

	header := func(my, alt, entriesLBA uint64) []byte {
		h := make([]byte, SectorSize)
		copy(h[hOffSig:], headerSig)
		binary.LittleEndian.PutUint32(h[hOffRev:], headerRev)
		binary.LittleEndian.PutUint32(h[hOffSize:], headerSize)
		binary.LittleEndian.PutUint64(h[hOffMyLBA:], my)
		binary.LittleEndian.PutUint64(h[hOffAltLBA:], alt)
		binary.LittleEndian.PutUint64(h[hOffFirstLBA:], headSectors)
		binary.LittleEndian.PutUint64(h[hOffLastLBA:], last-tailSectors)
		copy(h[hOffDiskGUID:], l.diskGUID[:])
		binary.LittleEndian.PutUint64(h[hOffEntriesLBA:], entriesLBA)
		binary.LittleEndian.PutUint32(h[hOffNumEntries:], NumEntries)
		binary.LittleEndian.PutUint32(h[hOffEntrySize:], EntrySize)
		binary.LittleEndian.PutUint32(h[hOffEntriesCRC:], entriesCRC)
		binary.LittleEndian.PutUint32(h[hOffCRC:], crc32.ChecksumIEEE(h[:headerSize]))
		return h
	}

	head = make([]byte, 0, headSectors*SectorSize)
	head = append(head, protectiveMBR(l.sectors)...)
	head = append(head, header(1, last, 2)...)
	head = append(head, entries...)

	tail = make([]byte, 0, tailSectors*SectorSize)
	tail = append(tail, entries...)
	tail = append(tail, header(last, 1, last-entrySectors)...)
	return head, tail
}

// protectiveMBR returns LBA 0: one partition of type 0xEE covering the disk
// (or as much of it as 32 bits can say), so that MBR-only tools keep off.
func protectiveMBR(sectors int64) []byte {
	b := make([]byte, SectorSize)
	e := b[mbrEntryOff : mbrEntryOff+16]
	copy(e[1:4], []byte{0x00, 0x02, 0x00}) // CHS of LBA 1
	e[4] = mbrTypeGPT
	copy(e[5:8], []byte{0xff, 0xff, 0xff}) // CHS beyond what CHS can say
	binary.LittleEndian.PutUint32(e[8:], 1)
	n := uint64(sectors - 1)
	if n > 0xffffffff {
		n = 0xffffffff
	}
	binary.LittleEndian.PutUint32(e[12:], uint32(n))
	b[mbrSigOff], b[mbrSigOff+1] = 0x55, 0xaa
	return b
}

// ReadPartitions reads the GPT of a disk of size bytes. It uses the primary
// header at LBA 1 and falls back to the backup header at the last LBA when the
// primary header or its entries are not valid. The used entries are returned
// in entry order.
func ReadPartitions(r io.ReaderAt, size int64) ([]Partition, error) {
	if size < minDiskSector*SectorSize || size%SectorSize != 0 {
		return nil, fmt.Errorf("read GPT: %w: disk size %d is not a multiple of %d of at least %d sectors",
			ErrBadGPT, size, SectorSize, minDiskSector)
	}
	last := uint64(size/SectorSize - 1)
	parts, perr := readGPT(r, 1, last)
	if perr == nil {
		return parts, nil
	}
	parts, berr := readGPT(r, last, last)
	if berr == nil {
		return parts, nil
	}
	return nil, fmt.Errorf("read GPT: %w: %w", ErrBadGPT, errors.Join(
		fmt.Errorf("primary header at LBA 1: %w", perr),
		fmt.Errorf("backup header at LBA %d: %w", last, berr)))
}

// readGPT reads and checks the header at LBA lba and the entries it points to.
// last is the last LBA of the disk.
func readGPT(r io.ReaderAt, lba, last uint64) ([]Partition, error) {
	h := make([]byte, SectorSize)
	if err := readAt(r, h, lba); err != nil {
		return nil, err
	}
	if string(h[hOffSig:hOffSig+8]) != headerSig {
		return nil, fmt.Errorf("bad signature %q", h[hOffSig:hOffSig+8])
	}
	if rev := binary.LittleEndian.Uint32(h[hOffRev:]); rev != headerRev {
		return nil, fmt.Errorf("unknown revision %#08x", rev)
	}
	hsize := binary.LittleEndian.Uint32(h[hOffSize:])
	if hsize < headerSize || hsize > SectorSize {
		return nil, fmt.Errorf("header size %d out of range [%d, %d]", hsize, headerSize, SectorSize)
	}
	want := binary.LittleEndian.Uint32(h[hOffCRC:])
	c := bytes.Clone(h[:hsize])
	binary.LittleEndian.PutUint32(c[hOffCRC:], 0)
	if got := crc32.ChecksumIEEE(c); got != want {
		return nil, fmt.Errorf("header CRC %#08x, want %#08x", got, want)
	}

	my := binary.LittleEndian.Uint64(h[hOffMyLBA:])
	alt := binary.LittleEndian.Uint64(h[hOffAltLBA:])
	first := binary.LittleEndian.Uint64(h[hOffFirstLBA:])
	lastUsable := binary.LittleEndian.Uint64(h[hOffLastLBA:])
	entriesLBA := binary.LittleEndian.Uint64(h[hOffEntriesLBA:])
	n := binary.LittleEndian.Uint32(h[hOffNumEntries:])
	esize := binary.LittleEndian.Uint32(h[hOffEntrySize:])
	switch {
	case my != lba:
		return nil, fmt.Errorf("header says it is at LBA %d", my)
	case alt == 0 || alt == my || alt > last:
		return nil, fmt.Errorf("alternate header LBA %d out of range", alt)
	case first == 0 || first > lastUsable || lastUsable > last:
		return nil, fmt.Errorf("usable LBAs [%d, %d] out of range [1, %d]", first, lastUsable, last)
	case my >= first && my <= lastUsable:
		return nil, fmt.Errorf("header LBA %d inside usable LBAs [%d, %d]", my, first, lastUsable)
	case esize != EntrySize:
		return nil, fmt.Errorf("entry size %d, want %d", esize, EntrySize)
	case n > maxEntries:
		return nil, fmt.Errorf("%d entries, at most %d", n, maxEntries)
	}

	entries := make([]byte, int(n)*EntrySize)
	if n > 0 {
		sectors := (uint64(len(entries)) + SectorSize - 1) / SectorSize
		end := entriesLBA + sectors - 1 // no overflow: entriesLBA <= last is checked first
		switch {
		case entriesLBA == 0 || entriesLBA > last || sectors > last-entriesLBA+1:
			return nil, fmt.Errorf("entries at LBA %d (%d sectors) out of range [1, %d]", entriesLBA, sectors, last)
		case my >= entriesLBA && my <= end:
			return nil, fmt.Errorf("entries at LBAs [%d, %d] cover the header", entriesLBA, end)
		case entriesLBA <= lastUsable && end >= first:
			return nil, fmt.Errorf("entries at LBAs [%d, %d] overlap usable LBAs [%d, %d]", entriesLBA, end, first, lastUsable)
		}
		if err := readAt(r, entries, entriesLBA); err != nil {
			return nil, err
		}
	}
	if got, want := crc32.ChecksumIEEE(entries), binary.LittleEndian.Uint32(h[hOffEntriesCRC:]); got != want {
		return nil, fmt.Errorf("entries CRC %#08x, want %#08x", got, want)
	}

	var parts []Partition
	for i := range int(n) {
		p, used, err := parseEntry(entries[i*EntrySize:(i+1)*EntrySize], first, lastUsable)
		if err != nil {
			return nil, fmt.Errorf("entry %d: %w", i+1, err)
		}
		if used {
			p.Index = i + 1
			parts = append(parts, p)
		}
	}
	if err := checkOverlap(parts); err != nil {
		return nil, err
	}
	return parts, nil
}

// parseEntry decodes one entry; used is false for an entry with a zero type GUID.
func parseEntry(e []byte, first, lastUsable uint64) (p Partition, used bool, err error) {
	copy(p.Type[:], e[eOffType:])
	if p.Type == ([16]byte{}) {
		return Partition{}, false, nil
	}
	copy(p.GUID[:], e[eOffGUID:])
	lo := binary.LittleEndian.Uint64(e[eOffFirst:])
	hi := binary.LittleEndian.Uint64(e[eOffLast:])
	if lo > hi || lo < first || hi > lastUsable {
		return Partition{}, false, fmt.Errorf("LBAs [%d, %d] outside usable LBAs [%d, %d]", lo, hi, first, lastUsable)
	}
	// lastUsable is below the disk size in sectors, so these do not overflow.
	p.Start = int64(lo) * SectorSize
	p.Size = int64(hi-lo+1) * SectorSize
	p.Name, err = decodeName(e[entryNameOff : entryNameOff+nameBytes])
	if err != nil {
		return Partition{}, false, err
	}
	return p, true, nil
}

// decodeName decodes a NUL-terminated (or full-length) UTF-16LE name and
// rejects unpaired surrogates.
func decodeName(b []byte) (string, error) {
	units := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		u := binary.LittleEndian.Uint16(b[i:])
		if u == 0 {
			break
		}
		units = append(units, u)
	}
	for i := 0; i < len(units); i++ {
		switch u := units[i]; {
		case u >= 0xd800 && u < 0xdc00:
			if i+1 >= len(units) || units[i+1] < 0xdc00 || units[i+1] > 0xdfff {
				return "", fmt.Errorf("name: unpaired surrogate %#04x", u)
			}
			i++
		case u >= 0xdc00 && u <= 0xdfff:
			return "", fmt.Errorf("name: unpaired surrogate %#04x", u)
		}
	}
	return string(utf16.Decode(units)), nil
}

// checkOverlap rejects partitions that share a sector.
func checkOverlap(parts []Partition) error {
	sorted := slices.Clone(parts)
	slices.SortFunc(sorted, func(a, b Partition) int {
		switch {
		case a.Start < b.Start:
			return -1
		case a.Start > b.Start:
			return 1
		}
		return 0
	})
	for i := 1; i < len(sorted); i++ {
		a, b := sorted[i-1], sorted[i]
		if a.Start+a.Size > b.Start {
			return fmt.Errorf("entries %d and %d overlap", a.Index, b.Index)
		}
	}
	return nil
}

// readAt fills b from sector lba.
func readAt(r io.ReaderAt, b []byte, lba uint64) error {
	n, err := r.ReadAt(b, int64(lba)*SectorSize)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read %d bytes at LBA %d: %w", len(b), lba, err)
}
