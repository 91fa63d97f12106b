package update

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"time"

	"alpinespine.org/spine/internal/format/bootctl"
	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/format/image"
	"alpinespine.org/spine/internal/format/manifest"
)

// Stager writes one update into the target slot and keeps the record truthful at every step:
//
//	offer checked ─> first body chunk in hand ─> record: target empty ("update being written")
//	  ─> body, manifest, signature, footer written ─> flushed and read back past the cache,
//	  verified ─> record: target trial, primary
//
// Any failure after the record was changed (the body ends early or stalls, the image does not
// verify) restores the target from the running Spine before Stage returns, so the machine keeps
// two bootable Spines; a power cut leaves bootctl.ReasonWriting in the record for the next boot to
// restore (Interrupted, Restore).
type Stager struct {
	// Target is the slot written; Slot is its device.
	Target int
	Slot   Slot
	// Disk reads the target slot past the page cache (OpenDirect). Nil reads Slot itself,
	// for an image file on the host whose cache is the disk as far as anyone will read it.
	Disk io.ReaderAt
	// Running is the running, committed slot's device and RunningSize the size of its image
	// (from the record): the source of a restore.
	Running     io.ReaderAt
	RunningSize uint64
	Trusted     []ed25519.PublicKey
	// Store applies one of bootctl's record changes and writes the result; a change the
	// record's rules refuse is returned and nothing is written.
	Store func(change func(bootctl.Record) (bootctl.Record, error)) error
	// Progress, if not nil, is told the bytes written so far (body or restore).
	Progress func(int64)
	// Logf and Emit, if not nil, report the slot being given up and restored, for people and
	// as events.
	Logf func(format string, args ...any)
	Emit func(event.Event)
}

func (s *Stager) logf(format string, args ...any) {
	if s.Logf != nil {
		s.Logf(format, args...)
	}
}

func (s *Stager) emit(e event.Event) {
	if s.Emit != nil {
		s.Emit(e)
	}
}

// Timing is how long the write and the verification of a staged update took.
type Timing struct {
	Write, Verify time.Duration
}

// Stage writes the update whose offer was checked (footer ft, manifest m) from body and marks
// the target for trial. On failure the target holds the running Spine again, or, if even that
// failed, is empty with the reason; the error says which.
func (s *Stager) Stage(body io.Reader, o Offer, ft image.Footer, m manifest.Manifest) (Timing, error) {
	begun := false
	begin := func() error {
		// A record that could not be written leaves the slot untouched: nothing to restore.
		if err := s.Store(func(r bootctl.Record) (bootctl.Record, error) { return bootctl.BeginUpdate(r, s.Target) }); err != nil {
			return err
		}
		begun = true
		s.logf("update: writing slot %s: the Spine it held is given up", bootctl.SlotName(s.Target))
		s.emit(event.New(event.UpdateWriting).With("slot", bootctl.SlotName(s.Target)))
		return nil
	}
	start := time.Now()
	err := Write(s.Slot, body, ft, o, begin, s.Progress)
	written := time.Since(start)
	if err == nil {
		err = SyncAndVerify(s.Slot, s.disk(), ft, m, s.Trusted, 0)
	}
	t := Timing{Write: written, Verify: time.Since(start) - written}
	if err != nil {
		if !begun {
			return t, err
		}
		if rerr := s.Restore(); rerr != nil {
			return t, fmt.Errorf("%w; restoring slot %s from the running Spine failed too, it stays empty: %v", err, bootctl.SlotName(s.Target), rerr)
		}
		return t, fmt.Errorf("%w (slot %s restored from the running Spine)", err, bootctl.SlotName(s.Target))
	}
	if err := s.Store(func(r bootctl.Record) (bootctl.Record, error) {
		return bootctl.FinishUpdate(r, s.Target, m.Version, ft.ImageSize)
	}); err != nil {
		return t, err
	}
	return t, nil
}

func (s *Stager) disk() io.ReaderAt {
	if s.Disk != nil {
		return s.Disk
	}
	return s.Slot
}

// Restore copies the running Spine into the target slot, verifies the copy from the disk and
// records the target as good with the running version: two bootable Spines again.
func (s *Stager) Restore() error {
	if s.Running == nil || s.RunningSize < image.FooterSize {
		return errors.New("no running Spine to restore from")
	}
	im, err := image.Open(s.Running, int64(s.RunningSize))
	if err != nil {
		return fmt.Errorf("read the running Spine: %w", err)
	}
	m, err := im.Authenticate(s.Trusted)
	if err != nil {
		return fmt.Errorf("authenticate the running Spine: %w", err)
	}
	s.logf("update: restoring slot %s from the running Spine (%s v%d)", bootctl.SlotName(s.Target), m.Name, m.Version)
	if err := copySlot(s.Slot, s.Running, int64(s.RunningSize), s.Progress); err != nil {
		return err
	}
	if err := SyncAndVerify(s.Slot, s.disk(), im.Footer, m, s.Trusted, 0); err != nil {
		return err
	}
	if err := s.Store(func(r bootctl.Record) (bootctl.Record, error) {
		return bootctl.RestoreSlot(r, s.Target, m.Version, s.RunningSize)
	}); err != nil {
		return err
	}
	s.logf("update: slot %s restored: good, %s v%d", bootctl.SlotName(s.Target), m.Name, m.Version)
	s.emit(event.New(event.UpdateRestored).With("slot", bootctl.SlotName(s.Target)).With("name", m.Name).Uint("version", m.Version))
	return nil
}

// copySlot copies size bytes from src to dst in 1 MiB chunks.
func copySlot(dst Slot, src io.ReaderAt, size int64, progress func(int64)) error {
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; {
		n := min(int64(len(buf)), size-off)
		if _, err := src.ReadAt(buf[:n], off); err != nil {
			return fmt.Errorf("read the running slot at %d: %w", off, err)
		}
		if _, err := dst.WriteAt(buf[:n], off); err != nil {
			return fmt.Errorf("write slot at %d: %w", off, err)
		}
		off += n
		if progress != nil {
			progress(off)
		}
	}
	return nil
}
