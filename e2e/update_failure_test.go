//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"alpinespine.org/spine/internal/bay0/control"
	"alpinespine.org/spine/internal/bay0/update"
	"alpinespine.org/spine/internal/format/bootctl"
	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/format/image"
	"alpinespine.org/spine/internal/host/ctlclient"
	"alpinespine.org/spine/internal/host/provision"
	"alpinespine.org/spine/internal/host/vm/vmtest"
)

// Article VI §2 (issue 12.4): an update that fails at any point leaves the machine with two
// bootable Spines. Writing the inactive slot gives up the Spine it held at the first byte;
// every failure after that restores the slot from the running, committed Spine, and a power cut
// leaves a record that makes the next boot restore it. Each test ends by booting the restored
// slot on purpose.

// slotB is the attribute of events about slot b.
var slotB = kv("slot", "b")

// waitRestored waits until bay0 has restored slot b and refused the update.
func waitRestored(t *testing.T, v *vmtest.VM, timeout time.Duration) {
	t.Helper()
	v.WaitEvent(t, event.UpdateRestored, timeout, slotB, kv("version", "1"))
	v.WaitEvent(t, event.UpdateFailed, bootTimeout, slotB)
}

// pushBody streams img's update with its body passed through wrap.
func pushBody(ctx context.Context, c *ctlclient.Client, img string, wrap func(io.Reader) io.Reader, progress func(int64)) (control.UpdateResult, error) {
	im, f, err := image.OpenFile(img)
	if err != nil {
		return control.UpdateResult{}, err
	}
	defer f.Close()
	offer, err := update.OfferFromImage(im)
	if err != nil {
		return control.UpdateResult{}, err
	}
	size := update.BodySize(im.Footer)
	resp, err := c.Update(ctx, control.Request{Offer: &offer, Size: size}, wrap(io.NewSectionReader(f, 0, size)), progress)
	if err != nil {
		return control.UpdateResult{}, err
	}
	var r control.UpdateResult
	return r, resp.Decode(&r)
}

// flipAt flips one byte of the stream at off.
type flipAt struct {
	r   io.Reader
	off int64
	pos int64
}

func (f *flipAt) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if f.off >= f.pos && f.off < f.pos+int64(n) {
		p[f.off-f.pos] ^= 0x20
	}
	f.pos += int64(n)
	return n, err
}

// stallAfter passes n bytes of the stream, then blocks until release is closed.
type stallAfter struct {
	r       io.Reader
	n       int64
	release chan struct{}
}

func (s *stallAfter) Read(p []byte) (int, error) {
	if s.n <= 0 {
		<-s.release
		return 0, errors.New("released")
	}
	p = p[:min(int64(len(p)), s.n)]
	k, err := s.r.Read(p)
	s.n -= int64(k)
	return k, err
}

// twoGoodSpines checks the record after a failed update: a still the committed primary, b
// restored to a good copy of v1.
func twoGoodSpines(t *testing.T, disk string) {
	t.Helper()
	rec := record(t, disk)
	a, b := rec.Slots[0], rec.Slots[1]
	if rec.Primary != 0 || a.State != bootctl.Good || a.Version != 1 || b.State != bootctl.Good || b.Version != 1 || b.ImageSize != a.ImageSize {
		t.Fatalf("after the failed update the record holds %+v, want two good v1 Spines, a primary", rec)
	}
	if !bytes.Equal(readPartition(t, disk, provision.SlotPartition(0), int64(a.ImageSize)), readPartition(t, disk, provision.SlotPartition(1), int64(b.ImageSize))) {
		t.Fatal("slot b does not hold a byte-identical copy of slot a's Spine")
	}
}

// bootRestoredSlot makes b primary on the stopped machine's disk and boots it: the restored
// Spine is bootable, not only recorded as good.
func bootRestoredSlot(t *testing.T, disk string) {
	t.Helper()
	rec := record(t, disk)
	rec.Primary = 1
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	state, err := provision.Partition(f, provision.StatePartition)
	if err == nil {
		err = provision.WriteRecord(f, state, rec)
	}
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	v := vmtest.Boot(t, machine(disk))
	v.WaitEvent(t, event.SlotTry, bootTimeout, slotB, kv("state", "good"))
	waitUp(t, v, "tiny", 1, "b", bootTimeout)
	v.Kill(t)
	v.NeverEvent(t, event.SlotFailed)
}

// committedMachine boots a disk holding v1 in both slots until slot a has committed, and
// returns the machine, its disk and control socket, and a v2 Spine to update to.
func committedMachine(t *testing.T, timeout time.Duration) (*vmtest.VM, string, string, string) {
	t.Helper()
	v1 := buildSpine(t, spineOpts{governor: quickHealth})
	v2 := buildSpine(t, spineOpts{version: 2, governor: quickHealth})
	disk := makeDisk(t, v1, v1, nil)
	cfg, sock := withControl(t, machine(disk))
	cfg.Timeout = timeout
	v := vmtest.Boot(t, cfg)
	// The whole boot, the unlock and the health window come first.
	v.WaitEvent(t, event.Committed, 2*bootTimeout, kv("slot", "a"))
	return v, disk, sock, v2
}

// TestFailedUpdatesKeepTwoSpines: a tampered body, a client that goes away mid-upload and a
// body that stalls are each refused, and each time slot b is back to a verified copy of the
// running Spine before the next update may start.
func TestFailedUpdatesKeepTwoSpines(t *testing.T) {
	t.Parallel()
	v, disk, sock, v2 := committedMachine(t, 6*bootTimeout)
	size := update.BodySize(footer(t, v2))
	ctx, cancel := context.WithTimeout(context.Background(), 4*bootTimeout)
	defer cancel()
	cases := []struct {
		name string
		push func(c *ctlclient.Client) error
	}{
		{"tampered body", func(c *ctlclient.Client) error {
			_, err := pushBody(ctx, c, v2, func(r io.Reader) io.Reader { return &flipAt{r: r, off: size / 3} }, nil)
			return err
		}},
		{"client gone", func(c *ctlclient.Client) error {
			var once sync.Once
			_, err := pushUpdate(ctx, c, v2, func(n int64) {
				if n >= size/2 {
					once.Do(func() { c.Close() })
				}
			})
			return err
		}},
		{"stalled body", func(c *ctlclient.Client) error {
			release := make(chan struct{})
			s := &stallAfter{n: size / 2, release: release}
			done := make(chan error, 1)
			go func() {
				_, err := pushBody(ctx, c, v2, func(r io.Reader) io.Reader { s.r = r; return s }, nil)
				done <- err
			}()
			// bay0 gives up on the body after control.BodyStall, restores the slot and answers.
			waitRestored(t, v, control.BodyStall+2*bootTimeout)
			close(release)
			c.Close()
			return <-done
		}},
	}
	for _, tc := range cases {
		c := dial(t, sock)
		err := tc.push(c)
		if err == nil {
			t.Fatalf("%s: the update was accepted", tc.name)
		}
		c.Close()
		if tc.name != "stalled body" {
			waitRestored(t, v, 2*bootTimeout)
		}
		t.Logf("%s: refused (%v); slot b restored", tc.name, err)
		c = dial(t, sock)
		var st control.StatusInfo
		if err := call(t, c, control.Request{Verb: control.VerbStatus}).Decode(&st); err != nil {
			t.Fatal(err)
		}
		c.Close()
		if st.Slots[1].State != "good" || st.Slots[1].Version != 1 || st.Slots[0].State != "good" || st.Slot != "a" {
			t.Fatalf("%s: status %+v, want both slots good", tc.name, st)
		}
	}
	v.Kill(t)
	v.Never(t, "not restored")
	twoGoodSpines(t, disk)
	bootRestoredSlot(t, disk)
}

// TestPowerCutMidUpdateRestores: the power goes while the slot is written; the record says so,
// and the next boot, on the committed Spine, restores the slot before anything else.
func TestPowerCutMidUpdateRestores(t *testing.T) {
	t.Parallel()
	v, disk, sock, v2 := committedMachine(t, bootTimeout)
	c := dial(t, sock)
	size := update.BodySize(footer(t, v2))
	ctx, cancel := context.WithTimeout(context.Background(), 2*bootTimeout)
	defer cancel()
	// The body stops half-way, so the power goes while the slot is being written.
	release := make(chan struct{})
	defer close(release)
	go pushBody(ctx, c, v2, func(r io.Reader) io.Reader { return &stallAfter{r: r, n: size / 2, release: release} }, nil)
	v.WaitEvent(t, event.UpdateWriting, bootTimeout, slotB)
	v.Kill(t)
	rec := record(t, disk)
	if rec.Slots[1].State != bootctl.Empty || rec.Slots[1].Reason != bootctl.ReasonWriting || rec.Primary != 0 || rec.Slots[0].State != bootctl.Good {
		t.Fatalf("after a power cut mid-write the record holds %+v, want slot b %q and a the good primary", rec, bootctl.ReasonWriting)
	}
	v = vmtest.Boot(t, machine(disk))
	v.WaitEvent(t, event.UpdateCut, bootTimeout, slotB)
	v.WaitEvent(t, event.UpdateRestored, 2*bootTimeout, slotB, kv("version", "1"))
	waitUp(t, v, "tiny", 1, "a", bootTimeout)
	v.Kill(t)
	twoGoodSpines(t, disk)
	bootRestoredSlot(t, disk)
}
