package disk

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// sparseDisk is a disk of size bytes holding head at its start and tail at
// its end (tail wins where they overlap) and zeros in between, so tests and
// the fuzzer can work on large disks with small inputs.
type sparseDisk struct {
	head, tail []byte
	size       int64
}

func (d sparseDisk) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= d.size {
		return 0, io.EOF
	}
	n := len(b)
	if int64(n) > d.size-off {
		n = int(d.size - off)
	}
	clear(b[:n])
	overlay := func(src []byte, at int64) {
		lo, hi := max(at, off), min(at+int64(len(src)), off+int64(n))
		if lo < hi {
			copy(b[lo-off:hi-off], src[lo-at:hi-at])
		}
	}
	overlay(d.head, 0)
	overlay(d.tail, d.size-int64(len(d.tail)))
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

// testLayout is what Create would write for testSpecs.
func testLayout(t testing.TB) layout {
	l, err := plan(testSpecs(), "seed")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func (l layout) disk() sparseDisk {
	head, tail := l.encode()
	return sparseDisk{head: head, tail: tail, size: l.sectors * SectorSize}
}

func TestSparseDiskMatchesCreate(t *testing.T) {
	path, _ := create(t, "seed")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d := testLayout(t).disk()
	got := make([]byte, len(b))
	if n, err := d.ReadAt(got, 0); n != len(b) || err != nil {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
	if !slices.Equal(got, b) {
		t.Fatal("layout.encode differs from the file Create writes")
	}
}

func TestReadSgdiskDisk(t *testing.T) {
	d := sgdiskDisk(t)
	parts, err := ReadPartitions(d, d.size)
	if err != nil {
		t.Fatal(err)
	}
	typ, err := ParseGUID(LinuxFilesystem)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name        string
		start, size int64
		guid        string
	}{
		{"bay0-state", 2048, 2048, "AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE"},
		{"spine-ä", 4096, 4063, "12345678-9ABC-DEF0-1234-56789ABCDEF0"},
	}
	if len(parts) != len(want) {
		t.Fatalf("got %+v", parts)
	}
	for i, w := range want {
		p := parts[i]
		if p.Index != i+1 || p.Name != w.name || p.Start != w.start*SectorSize || p.Size != w.size*SectorSize ||
			p.Type != typ || FormatGUID(p.GUID) != w.guid {
			t.Errorf("partition %d = %+v (guid %s), want %+v", i+1, p, FormatGUID(p.GUID), w)
		}
	}
}

// sgdiskDisk is a 4 MiB disk partitioned by sgdisk 1.0.9, of which testdata
// keeps the first and last 34 sectors:
//
//	truncate -s 4M s.img
//	sgdisk -U 11111111-2222-3333-4444-555555555555 \
//	  -n 1:2048:+1M -t 1:8300 -c 1:bay0-state -u 1:AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE \
//	  -n 2:0:0 -t 2:8300 -c 2:spine-ä -u 2:12345678-9ABC-DEF0-1234-56789ABCDEF0 s.img
func sgdiskDisk(t testing.TB) sparseDisk {
	head, err := os.ReadFile(filepath.Join("testdata", "sgdisk-4MiB.head"))
	if err != nil {
		t.Fatal(err)
	}
	tail, err := os.ReadFile(filepath.Join("testdata", "sgdisk-4MiB.tail"))
	if err != nil {
		t.Fatal(err)
	}
	return sparseDisk{head: head, tail: tail, size: 4 * mib}
}

// Sector offsets of the primary and backup structures inside head and tail.
const (
	primaryHeader = SectorSize
	primaryArray  = 2 * SectorSize
	backupArray   = 0
	backupHeader  = entrySectors * SectorSize
)

func TestReadFallsBackToBackup(t *testing.T) {
	want := testLayout(t).parts
	for _, tc := range []struct {
		name string
		off  int // byte in head to flip
	}{
		{"header CRC", primaryHeader + hOffCRC},
		{"header field", primaryHeader + hOffFirstLBA},
		{"signature", primaryHeader + hOffSig},
		{"entries", primaryArray + eOffFirst},
		{"name", primaryArray + entryNameOff},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := testLayout(t).disk()
			d.head[tc.off] ^= 0x01
			got, err := ReadPartitions(d, d.size)
			if err != nil {
				t.Fatalf("ReadPartitions with a bad primary: %v", err)
			}
			if !slices.Equal(got, want) {
				t.Errorf("backup gives %+v, want %+v", got, want)
			}

			// Now spoil the backup too.
			d.tail[backupHeader+hOffCRC] ^= 0x01
			_, err = ReadPartitions(d, d.size)
			if !errors.Is(err, ErrBadGPT) || !strings.Contains(err.Error(), "primary") || !strings.Contains(err.Error(), "backup") {
				t.Errorf("ReadPartitions with both bad = %v, want ErrBadGPT naming primary and backup", err)
			}
		})
	}
}

// TestReadUsesBackupContent makes sure the fallback really reads the backup:
// the backup alone names a partition differently.
func TestReadUsesBackupContent(t *testing.T) {
	l := testLayout(t)
	d := l.disk()
	d.tail[backupArray+entryNameOff] = 'B'
	fixCRCs(d.tail[backupHeader:backupHeader+SectorSize], d.tail[backupArray:backupArray+entriesBytes])
	got, err := ReadPartitions(d, d.size)
	if err != nil || got[0].Name != "bay0-state" {
		t.Fatalf("primary: %+v, %v", got, err)
	}
	d.head[primaryHeader+hOffCRC] ^= 0xff
	got, err = ReadPartitions(d, d.size)
	if err != nil || got[0].Name != "Bay0-state" {
		t.Fatalf("backup: %+v, %v", got, err)
	}
}

// fixCRCs recomputes the entries CRC and the header CRC after a test changed them.
func fixCRCs(h, entries []byte) {
	binary.LittleEndian.PutUint32(h[hOffEntriesCRC:], crc32.ChecksumIEEE(entries))
	binary.LittleEndian.PutUint32(h[hOffCRC:], 0)
	binary.LittleEndian.PutUint32(h[hOffCRC:], crc32.ChecksumIEEE(h[:headerSize]))
}

// TestReadRejects breaks one rule in both copies, with valid CRCs, and checks
// that the parser says which rule.
func TestReadRejects(t *testing.T) {
	le := binary.LittleEndian
	entry := func(e []byte, i int) []byte { return e[i*EntrySize : (i+1)*EntrySize] }
	for _, tc := range []struct {
		name string
		mut  func(h, e []byte, last uint64)
		want string
	}{
		{"signature", func(h, e []byte, last uint64) { copy(h, "EFI PARX") }, "signature"},
		{"revision", func(h, e []byte, last uint64) { le.PutUint32(h[hOffRev:], 0x00020000) }, "revision"},
		{"header too small", func(h, e []byte, last uint64) { le.PutUint32(h[hOffSize:], 91) }, "header size"},
		{"header too large", func(h, e []byte, last uint64) { le.PutUint32(h[hOffSize:], 513) }, "header size"},
		{"my LBA", func(h, e []byte, last uint64) { le.PutUint64(h[hOffMyLBA:], 7) }, "header says"},
		{"alternate LBA", func(h, e []byte, last uint64) { le.PutUint64(h[hOffAltLBA:], last+1) }, "alternate"},
		{"usable beyond disk", func(h, e []byte, last uint64) { le.PutUint64(h[hOffLastLBA:], last+1) }, "usable"},
		{"usable reversed", func(h, e []byte, last uint64) { le.PutUint64(h[hOffFirstLBA:], last-10) }, "usable"},
		{"usable covers header", func(h, e []byte, last uint64) {
			le.PutUint64(h[hOffFirstLBA:], 1)
			le.PutUint64(h[hOffLastLBA:], last)
		}, "inside usable"},
		{"entry size", func(h, e []byte, last uint64) { le.PutUint32(h[hOffEntrySize:], 256) }, "entry size"},
		{"entry count", func(h, e []byte, last uint64) { le.PutUint32(h[hOffNumEntries:], maxEntries+1) }, "entries, at most"},
		{"entries beyond disk", func(h, e []byte, last uint64) { le.PutUint64(h[hOffEntriesLBA:], last-3) }, "out of range"},
		{"entries in usable", func(h, e []byte, last uint64) { le.PutUint64(h[hOffEntriesLBA:], 100) }, "overlap usable"},
		{"entries CRC", func(h, e []byte, last uint64) { le.PutUint32(h[hOffNumEntries:], 64) }, "entries CRC"},
		{"partition before usable", func(h, e []byte, last uint64) { le.PutUint64(entry(e, 0)[eOffFirst:], 33) }, "outside usable"},
		{"partition after usable", func(h, e []byte, last uint64) { le.PutUint64(entry(e, 3)[eOffLast:], last-32) }, "outside usable"},
		{"partition reversed", func(h, e []byte, last uint64) { le.PutUint64(entry(e, 0)[eOffLast:], 2047) }, "outside usable"},
		{"overlap", func(h, e []byte, last uint64) { le.PutUint64(entry(e, 1)[eOffFirst:], 4095) }, "overlap"},
		{"unpaired high surrogate", func(h, e []byte, last uint64) { le.PutUint16(entry(e, 2)[entryNameOff:], 0xd800) }, "surrogate"},
		{"unpaired low surrogate", func(h, e []byte, last uint64) { le.PutUint16(entry(e, 2)[entryNameOff:], 0xdc00) }, "surrogate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := testLayout(t)
			d := l.disk()
			last := uint64(l.sectors - 1)
			for _, c := range [][2][]byte{
				{d.head[primaryHeader : primaryHeader+SectorSize], d.head[primaryArray : primaryArray+entriesBytes]},
				{d.tail[backupHeader : backupHeader+SectorSize], d.tail[backupArray : backupArray+entriesBytes]},
			} {
				tc.mut(c[0], c[1], last)
				if tc.name != "entries CRC" {
					fixCRCs(c[0], c[1])
				} else {
					binary.LittleEndian.PutUint32(c[0][hOffCRC:], 0)
					binary.LittleEndian.PutUint32(c[0][hOffCRC:], crc32.ChecksumIEEE(c[0][:headerSize]))
				}
			}
			_, err := ReadPartitions(d, d.size)
			if !errors.Is(err, ErrBadGPT) || strings.Count(err.Error(), tc.want) < 2 {
				t.Errorf("ReadPartitions = %v, want ErrBadGPT with %q for both copies", err, tc.want)
			}
		})
	}
}

func TestReadRejectsDiskSize(t *testing.T) {
	d := testLayout(t).disk()
	for _, size := range []int64{0, 511, d.size - 1, minDiskSector*SectorSize - SectorSize} {
		if _, err := ReadPartitions(d, size); !errors.Is(err, ErrBadGPT) {
			t.Errorf("ReadPartitions(size %d) = %v, want ErrBadGPT", size, err)
		}
	}
	// A disk that is shorter than it claims cannot be read.
	if _, err := ReadPartitions(shortReader{d, SectorSize + 100}, d.size); !errors.Is(err, ErrBadGPT) {
		t.Errorf("ReadPartitions of a truncated disk = %v, want ErrBadGPT", err)
	}
}

// shortReader ends at n bytes.
type shortReader struct {
	r io.ReaderAt
	n int64
}

func (s shortReader) ReadAt(b []byte, off int64) (int, error) {
	if off >= s.n {
		return 0, io.EOF
	}
	if int64(len(b)) > s.n-off {
		n, _ := s.r.ReadAt(b[:s.n-off], off)
		return n, io.EOF
	}
	return s.r.ReadAt(b, off)
}

func FuzzReadPartitions(f *testing.F) {
	sg := sgdiskDisk(f)
	f.Add(sg.head, sg.tail, uint32(sg.size/SectorSize), false)
	d := testLayout(f).disk()
	f.Add(d.head, d.tail, uint32(d.size/SectorSize), false)
	f.Add(d.head, d.tail, uint32(d.size/SectorSize), true)
	f.Add(d.head, d.tail, uint32(d.size/SectorSize)+1, false) // backup not at the end
	bad := slices.Clone(d.head)
	bad[primaryHeader+hOffCRC] ^= 1
	f.Add(bad, d.tail, uint32(d.size/SectorSize), false)
	f.Add(d.head[:headSectors*SectorSize], []byte{}, uint32(headSectors+tailSectors), false)

	// fix recomputes the primary CRCs so that mutations reach the checks behind them.
	f.Fuzz(func(t *testing.T, head, tail []byte, sectors uint32, fix bool) {
		if fix && len(head) >= headSectors*SectorSize {
			head = slices.Clone(head)
			fixCRCs(head[primaryHeader:primaryHeader+SectorSize], head[primaryArray:primaryArray+entriesBytes])
		}
		disk := sparseDisk{head: head, tail: tail, size: int64(sectors) * SectorSize}
		parts, err := ReadPartitions(disk, disk.size)
		if err != nil {
			return
		}
		checkInvariants(t, parts, disk.size)

		// Round trip: write the partitions as Create would, read them back.
		last := int64(sectors) - 1
		for _, p := range parts {
			if p.Index > NumEntries || p.Start < headSectors*SectorSize || (p.Start+p.Size)/SectorSize-1 > last-tailSectors {
				return // does not fit the layout Create writes
			}
		}
		again, err := ReadPartitions(layout{parts: parts, sectors: int64(sectors)}.disk(), disk.size)
		if err != nil {
			t.Fatalf("re-encoded table does not parse: %v\n%+v", err, parts)
		}
		if !slices.Equal(again, parts) {
			t.Fatalf("round trip changed the table:\n got %+v\nwant %+v", again, parts)
		}
	})
}

func checkInvariants(t *testing.T, parts []Partition, size int64) {
	t.Helper()
	seen := map[int]bool{}
	for i, p := range parts {
		if p.Index < 1 || seen[p.Index] || (i > 0 && p.Index <= parts[i-1].Index) {
			t.Fatalf("bad index order: %+v", parts)
		}
		seen[p.Index] = true
		if p.Start <= 0 || p.Size <= 0 || p.Start%SectorSize != 0 || p.Size%SectorSize != 0 || p.Start+p.Size > size {
			t.Fatalf("partition outside the disk of %d bytes: %+v", size, p)
		}
		if p.Type == ([16]byte{}) {
			t.Fatalf("unused entry returned: %+v", p)
		}
		for _, q := range parts[:i] {
			if p.Start < q.Start+q.Size && q.Start < p.Start+p.Size {
				t.Fatalf("partitions overlap: %+v %+v", p, q)
			}
		}
	}
}
