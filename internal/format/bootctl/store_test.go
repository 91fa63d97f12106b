package bootctl

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// memDev is an in-memory bay0-state partition. A write lands only its first
// tear bytes (all of it when tear < 0) and then fails, as when the power goes
// in the middle of it; the bytes that did not land are left as they were, or
// set to junk when scramble is set (a device that loses a whole sector).
type memDev struct {
	b        []byte
	tear     int
	scramble bool
	syncs    int
	syncErr  error
	ops      []string
}

func newDev() *memDev { return &memDev{b: make([]byte, NumCopies*RecordSize), tear: -1} }

func (d *memDev) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(d.b)) {
		return 0, io.EOF
	}
	n := copy(p, d.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (d *memDev) WriteAt(p []byte, off int64) (int, error) {
	d.ops = append(d.ops, "write")
	if d.tear < 0 {
		return copy(d.b[off:], p), nil
	}
	n := copy(d.b[off:], p[:min(d.tear, len(p))])
	if d.scramble {
		for i := off + int64(n); i < off+int64(len(p)); i++ {
			d.b[i] = byte(i*7 + 1)
		}
	}
	return n, errors.New("power cut")
}

func (d *memDev) Sync() error {
	d.ops = append(d.ops, "sync")
	d.syncs++
	return d.syncErr
}

func TestStoreLoad(t *testing.T) {
	dev := newDev()
	if _, _, err := Load(dev); !errors.Is(err, ErrNoRecord) {
		t.Fatalf("Load of a blank device = %v, want ErrNoRecord", err)
	}

	// A new disk: the initial record goes to copy 0 with Seq 1.
	first := Initial(&SlotInit{Version: 3, ImageSize: 10 << 20}, nil)
	wrote, cp, err := Store(dev, Record{}, 1, first)
	if err != nil || cp != 0 || wrote.Seq != 1 {
		t.Fatalf("Store initial = %d, %v", cp, err)
	}
	if strings.Join(dev.ops, ",") != "write,sync" {
		t.Errorf("device operations %v, want write then sync", dev.ops)
	}
	rec, got, err := Load(dev)
	first.Seq = 1
	if err != nil || got != 0 || rec != first {
		t.Fatalf("Load = %+v, %d, %v; want %+v in copy 0", rec, got, err, first)
	}

	// Each Store goes to the other copy with the next Seq, and Load follows.
	for i := range 5 {
		next := rec
		next.LastReset = strings.Repeat("r", i)
		wrote, cp, err := Store(dev, rec, got, next)
		if err != nil || cp != 1-got {
			t.Fatalf("Store %d = %d, %v; want copy %d", i, cp, err, 1-got)
		}
		next.Seq = rec.Seq + 1
		if wrote != next {
			t.Fatalf("Store %d returned %+v, want %+v", i, wrote, next)
		}
		rec, got, err = Load(dev)
		if err != nil || got != cp || rec != next {
			t.Fatalf("Load after Store %d = %+v, %d, %v; want %+v in copy %d", i, rec, got, err, next, cp)
		}
	}
}

func TestStoreRejects(t *testing.T) {
	dev := newDev()
	if _, _, err := Store(dev, Record{}, 2, Record{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Store with previous copy 2 = %v", err)
	}
	if _, _, err := Store(dev, Record{Seq: 1<<64 - 1}, 0, Record{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Store with an exhausted Seq = %v", err)
	}
	if _, _, err := Store(dev, Record{}, 0, Record{LastReset: strings.Repeat("x", LastResetSize+1)}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Store of an invalid record = %v", err)
	}
	if len(dev.ops) != 0 {
		t.Errorf("rejected Stores touched the device: %v", dev.ops)
	}
	dev.syncErr = errors.New("io error")
	if _, _, err := Store(dev, Record{}, 0, Record{}); err == nil || !strings.Contains(err.Error(), "sync") {
		t.Errorf("Store with a failing sync = %v", err)
	}
}

// TestStoreSurvivesPowerCut cuts the power after every possible prefix of a
// write has landed: Load must return the previous record, or the new one when
// all of it landed.
func TestStoreSurvivesPowerCut(t *testing.T) {
	for _, scramble := range []bool{false, true} {
		dev := newDev()
		older := Initial(&SlotInit{Version: 1, ImageSize: 1 << 20}, &SlotInit{Version: 1, ImageSize: 1 << 20})
		if _, _, err := Store(dev, Record{}, 1, older); err != nil {
			t.Fatal(err)
		}
		prev, prevCopy, err := Load(dev)
		if err != nil {
			t.Fatal(err)
		}
		// Make both copies valid so the torn write lands on a real older record.
		next := prev
		next.Slots[1] = Slot{State: Trial, TriesLeft: 1, Version: 2, ImageSize: 2 << 20}
		next.Primary = 1
		if _, _, err := Store(dev, prev, prevCopy, next); err != nil {
			t.Fatal(err)
		}
		prev, prevCopy, err = Load(dev)
		if err != nil {
			t.Fatal(err)
		}
		saved := bytes.Clone(dev.b)

		next = prev
		next.Slots[1].TriesLeft = 0
		next.LastReset = "about to try slot b"
		for tear := 0; tear <= RecordSize; tear++ {
			copy(dev.b, saved)
			dev.tear, dev.scramble = tear, scramble
			if _, _, err := Store(dev, prev, prevCopy, next); err == nil {
				t.Fatalf("tear %d: Store did not report the failed write", tear)
			}
			dev.tear = -1
			got, gotCopy, err := Load(dev)
			if err != nil {
				t.Fatalf("tear %d scramble %v: Load = %v", tear, scramble, err)
			}
			want, wantCopy := prev, prevCopy
			if tear == RecordSize {
				want, wantCopy = next, 1-prevCopy
				want.Seq = prev.Seq + 1
			}
			if got != want || gotCopy != wantCopy {
				t.Fatalf("tear %d scramble %v: Load = %+v in copy %d, want %+v in copy %d", tear, scramble, got, gotCopy, want, wantCopy)
			}
		}

		// After the cut the next boot stores again, over the same torn copy.
		copy(dev.b, saved)
		dev.tear = 100
		if _, _, err := Store(dev, prev, prevCopy, next); err == nil {
			t.Fatal("torn Store succeeded")
		}
		dev.tear = -1
		rec, cp, err := Load(dev)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := Store(dev, rec, cp, next); err != nil {
			t.Fatal(err)
		}
		rec, _, err = Load(dev)
		if err != nil || rec.LastReset != next.LastReset || rec.Seq != prev.Seq+1 {
			t.Fatalf("Store after the cut: %+v, %v", rec, err)
		}
	}
}

func TestLoadPicksValidCopy(t *testing.T) {
	a, b := Record{Seq: 7, LastReset: "a"}, Record{Seq: 9, LastReset: "b"}
	for _, tc := range []struct {
		name     string
		c0, c1   []byte
		want     Record
		wantCopy int
	}{
		{"newer in copy 1", marshal(t, a), marshal(t, b), b, 1},
		{"newer in copy 0", marshal(t, b), marshal(t, a), b, 0},
		{"equal seq", marshal(t, Record{Seq: 9, LastReset: "x"}), marshal(t, b), Record{Seq: 9, LastReset: "x"}, 0},
		{"newer copy corrupt", marshal(t, a), corrupt(marshal(t, b)), a, 0},
		{"older copy corrupt", corrupt(marshal(t, a)), marshal(t, b), b, 1},
		{"copy 1 blank", marshal(t, a), make([]byte, RecordSize), a, 0},
		{"copy 0 blank", make([]byte, RecordSize), marshal(t, b), b, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev := newDev()
			copy(dev.b, tc.c0)
			copy(dev.b[RecordSize:], tc.c1)
			got, cp, err := Load(dev)
			if err != nil || got != tc.want || cp != tc.wantCopy {
				t.Errorf("Load = %+v, %d, %v; want %+v, %d", got, cp, err, tc.want, tc.wantCopy)
			}
		})
	}
}

func corrupt(b []byte) []byte {
	b[offSeq+3] ^= 0x10
	return b
}

func TestLoadNeitherValid(t *testing.T) {
	dev := newDev()
	copy(dev.b, corrupt(marshal(t, Record{Seq: 1})))
	_, _, err := Load(dev)
	if !errors.Is(err, ErrNoRecord) || !errors.Is(err, ErrBadChecksum) || !errors.Is(err, ErrBadMagic) {
		t.Fatalf("Load = %v, want ErrNoRecord with a checksum error and a magic error", err)
	}
	if !strings.Contains(err.Error(), "copy 0") || !strings.Contains(err.Error(), "copy 1") {
		t.Errorf("Load error %q does not say why for each copy", err)
	}

	// A device too small for the second copy.
	short := &memDev{b: marshal(t, Record{Seq: 1}), tear: -1}
	if rec, cp, err := Load(short); err != nil || cp != 0 || rec.Seq != 1 {
		t.Errorf("Load of a one-copy device = %+v, %d, %v", rec, cp, err)
	}
	if _, _, err := Load(&memDev{b: make([]byte, 100)}); !errors.Is(err, ErrNoRecord) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("Load of a tiny device = %v", err)
	}
}
