package update

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"alpinespine.org/spine/internal/format/bootctl"
	"alpinespine.org/spine/internal/format/event"
)

// cachedSlot models a device behind a page cache whose write path is broken: what is written
// lands in the cache as sent, but the disk receives it with one byte flipped at badOff. Reads
// through the slot see the cache; disk reads what the device holds.
type cachedSlot struct {
	cache, disk memSlot
	badOff      int64
}

func (s *cachedSlot) ReadAt(p []byte, off int64) (int, error) { return s.cache.ReadAt(p, off) }
func (s *cachedSlot) WriteAt(p []byte, off int64) (int, error) {
	s.disk.WriteAt(p, off)
	if s.badOff >= off && s.badOff < off+int64(len(p)) {
		s.disk.b[s.badOff] ^= 0x40
	}
	return s.cache.WriteAt(p, off)
}
func (s *cachedSlot) Sync() error { return nil }

// TestVerifyReadsTheDisk (issue 13.7): a write that reached the cache but not the disk intact
// verifies through the cache and fails through the disk, which is what SyncAndVerify reads.
func TestVerifyReadsTheDisk(t *testing.T) {
	pub, priv := keys(t)
	path, im := makeImage(t, priv, 2)
	offer, _ := OfferFromImage(im)
	trusted := []ed25519.PublicKey{pub}
	m, ft, err := offer.Check(trusted, Floor{Running: 1, SlotSize: 1 << 24})
	if err != nil {
		t.Fatal(err)
	}
	whole, _ := os.ReadFile(path)
	slot := &cachedSlot{cache: memSlot{b: make([]byte, 1<<24)}, disk: memSlot{b: make([]byte, 1<<24)}, badOff: 5000}
	if err := Write(slot, bytes.NewReader(whole[:BodySize(ft)]), ft, offer, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := SyncAndVerify(slot, slot, ft, m, trusted, 2); err != nil {
		t.Fatalf("through the cache the broken write looks right, so this test cannot fail: %v", err)
	}
	if err := SyncAndVerify(slot, &slot.disk, ft, m, trusted, 2); err == nil {
		t.Fatal("verification read the cache: a write that never reached the disk intact passed")
	}
	st := &Stager{Target: 1, Slot: slot, Disk: &slot.disk, Trusted: trusted, Store: func(func(bootctl.Record) (bootctl.Record, error)) error { return nil }}
	if _, err := st.Stage(bytes.NewReader(whole[:BodySize(ft)]), offer, ft, m); err == nil || !strings.Contains(err.Error(), "verify") {
		t.Fatalf("Stage through a broken write path: %v, want a verification failure", err)
	}
}

// TestDirect reads a real file with O_DIRECT at unaligned offsets and lengths.
func TestDirect(t *testing.T) {
	p := filepath.Join(t.TempDir(), "dev")
	b := make([]byte, 3<<20+777)
	for i := range b {
		b[i] = byte(i*7 + i>>12)
	}
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := OpenDirect(p)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, c := range []struct{ off, n int }{{0, 4096}, {1, 1}, {4095, 2}, {12345, 256 << 10}, {100, 2<<20 + 5}, {len(b) - 10, 10}} {
		got := make([]byte, c.n)
		if n, err := d.ReadAt(got, int64(c.off)); err != nil || n != c.n || !bytes.Equal(got, b[c.off:c.off+c.n]) {
			t.Errorf("ReadAt(%d bytes at %d) = %d, %v (equal: %v)", c.n, c.off, n, err, bytes.Equal(got, b[c.off:c.off+c.n]))
		}
	}
	if _, err := d.ReadAt(make([]byte, 20), int64(len(b)-10)); !errors.Is(err, io.EOF) {
		t.Errorf("read past the end: %v", err)
	}
}

// fakeRecord is a boot-control record in memory that counts its writes.
type fakeRecord struct {
	rec    bootctl.Record
	writes []bootctl.Record
}

func (f *fakeRecord) store(change func(bootctl.Record) (bootctl.Record, error)) error {
	next, err := change(f.rec)
	if err != nil {
		return err
	}
	f.rec = next
	f.writes = append(f.writes, f.rec)
	return nil
}

// TestStagerKeepsTwoSpines: whatever way an update fails after its first byte (a cut body, a
// tampered body), the target ends up holding the running Spine, verified and good; a client
// that sends nothing costs the target nothing; a good update ends in trial.
func TestStagerKeepsTwoSpines(t *testing.T) {
	pub, priv := keys(t)
	trusted := []ed25519.PublicKey{pub}
	runPath, _ := makeImage(t, priv, 1)
	running, _ := os.ReadFile(runPath)
	newPath, newIm := makeImage(t, priv, 2)
	update, _ := os.ReadFile(newPath)
	offer, _ := OfferFromImage(newIm)
	m, ft, err := offer.Check(trusted, Floor{Running: 1, SlotSize: 1 << 24})
	if err != nil {
		t.Fatal(err)
	}
	body := update[:BodySize(ft)]
	tampered := bytes.Clone(body)
	tampered[len(tampered)/3] ^= 1
	old := bootctl.Slot{State: bootctl.Good, Version: 0, ImageSize: 4096}
	for _, c := range []struct {
		name string
		body []byte
		// want is the target's state afterwards; restored says it holds the running Spine.
		want     bootctl.State
		restored bool
		err      string
	}{
		{"nothing sent", nil, bootctl.Good, false, "read update body"},
		{"client gone", body[:len(body)/2], bootctl.Good, true, "restored"},
		{"tampered", tampered, bootctl.Good, true, "restored"},
		{"good", body, bootctl.Trial, false, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			target := &memSlot{b: bytes.Repeat([]byte{0xee}, 1<<24)}
			rec := &fakeRecord{rec: bootctl.Record{Primary: 0, Slots: [2]bootctl.Slot{{State: bootctl.Good, Version: 1, ImageSize: uint64(len(running))}, old}}}
			var kinds []event.Kind
			st := &Stager{Target: 1, Slot: target, Running: bytes.NewReader(running), RunningSize: uint64(len(running)),
				Trusted: trusted, Store: rec.store, Emit: func(e event.Event) { kinds = append(kinds, e.Kind) }}
			_, err := st.Stage(bytes.NewReader(c.body), offer, ft, m)
			if c.err == "" && err != nil || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
				t.Fatalf("Stage: %v, want %q", err, c.err)
			}
			s := rec.rec.Slots[1]
			if s.State != c.want {
				t.Fatalf("target %+v, want %s", s, c.want)
			}
			switch {
			case c.restored:
				if s.Version != 1 || s.ImageSize != uint64(len(running)) || !bytes.Equal(target.b[:len(running)], running) || rec.rec.Primary != 0 {
					t.Errorf("target not restored from the running Spine: %+v", rec.rec)
				}
				if len(rec.writes) != 2 || rec.writes[0].Slots[1].Reason != bootctl.ReasonWriting {
					t.Errorf("record writes %+v, want begin then restored", rec.writes)
				}
			case c.want == bootctl.Trial:
				if rec.rec.Primary != 1 || s.Version != 2 || !bytes.Equal(target.b[:len(update)], update) {
					t.Errorf("after a good update: %+v", rec.rec)
				}
			default:
				if len(rec.writes) != 0 || s != old {
					t.Errorf("a client that sent nothing changed the record: %+v", rec.writes)
				}
			}
			if rec.rec.Slots[0].State != bootctl.Good {
				t.Error("the running slot must stay good")
			}
			want := map[bool][]event.Kind{true: {event.UpdateWriting, event.UpdateRestored}, false: {event.UpdateWriting}}[c.restored]
			if c.body == nil {
				want = nil
			}
			if fmt.Sprint(kinds) != fmt.Sprint(want) {
				t.Errorf("events %v, want %v", kinds, want)
			}
		})
	}
}

func TestInterrupted(t *testing.T) {
	good := bootctl.Slot{State: bootctl.Good, Version: 1}
	writing := bootctl.Slot{State: bootctl.Empty, Reason: bootctl.ReasonWriting}
	for _, c := range []struct {
		name    string
		rec     bootctl.Record
		running int
		want    bool
	}{
		{"cut write beside a", bootctl.Record{Primary: 0, Slots: [2]bootctl.Slot{good, writing}}, 0, true},
		{"cut write beside b", bootctl.Record{Primary: 1, Slots: [2]bootctl.Slot{writing, good}}, 1, true},
		{"never written", bootctl.Record{Primary: 0, Slots: [2]bootctl.Slot{good, {}}}, 0, false},
		{"running a fallback", bootctl.Record{Primary: 1, Slots: [2]bootctl.Slot{good, writing}}, 0, false},
		{"bogus slot", bootctl.Record{}, 3, false},
	} {
		if got := Interrupted(c.rec, c.running); got != c.want {
			t.Errorf("%s: Interrupted = %v", c.name, got)
		}
	}
}
