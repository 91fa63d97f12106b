package provision

import (
	"crypto/ed25519"
	"fmt"
	"io"
	"os"

	"alpinespine.org/spine/internal/bay0/update"
	"alpinespine.org/spine/internal/format/bootctl"
	"alpinespine.org/spine/internal/format/image"
	"alpinespine.org/spine/internal/format/manifest"
)

// Stage writes an update into a stopped machine's disk the way bay0 does on a running one:
// the offer is checked against the trusted keys and the primary slot's version, the other slot
// is emptied in the record, written, read back and verified, then marked for trial and made
// primary. It returns the staged manifest and the slot written.
func Stage(diskPath, img string, trusted []ed25519.PublicKey) (manifest.Manifest, int, error) {
	im, src, err := image.OpenFile(img)
	if err != nil {
		return manifest.Manifest{}, 0, err
	}
	defer src.Close()
	offer, err := update.OfferFromImage(im)
	if err != nil {
		return manifest.Manifest{}, 0, err
	}
	f, err := os.OpenFile(diskPath, os.O_RDWR, 0)
	if err != nil {
		return manifest.Manifest{}, 0, fmt.Errorf("open disk: %w", err)
	}
	defer f.Close()
	statePart, err := Partition(f, StatePartition)
	if err != nil {
		return manifest.Manifest{}, 0, err
	}
	state := &section{f: f, off: statePart.Start}
	rec, copyIdx, err := bootctl.Load(io.NewSectionReader(f, statePart.Start, statePart.Size))
	if err != nil {
		return manifest.Manifest{}, 0, err
	}
	target, err := update.Target(rec, rec.Primary)
	if err != nil {
		return manifest.Manifest{}, 0, err
	}
	slotPart, err := Partition(f, SlotPartition(target))
	if err != nil {
		return manifest.Manifest{}, 0, err
	}
	m, ft, err := offer.Check(trusted, update.Floor{Running: rec.Slots[rec.Primary].Version, MinVersion: rec.MinVersion, SlotSize: slotPart.Size})
	if err != nil {
		return manifest.Manifest{}, 0, err
	}
	store := func(change func(bootctl.Record) (bootctl.Record, error)) error {
		next, err := change(rec)
		if err != nil {
			return err
		}
		rec, copyIdx, err = bootctl.Store(state, rec, copyIdx, next)
		return err
	}
	primary, err := Partition(f, SlotPartition(rec.Primary))
	if err != nil {
		return manifest.Manifest{}, 0, err
	}
	st := &update.Stager{Target: target, Slot: &section{f: f, off: slotPart.Start}, Running: &section{f: f, off: primary.Start},
		RunningSize: rec.Slots[rec.Primary].ImageSize, Trusted: trusted, Store: store}
	if _, err := st.Stage(io.NewSectionReader(src, 0, update.BodySize(ft)), offer, ft, m); err != nil {
		return manifest.Manifest{}, 0, err
	}
	return m, target, nil
}

// section is a window of the disk file that a partition occupies.
type section struct {
	f   *os.File
	off int64
}

func (s *section) ReadAt(p []byte, off int64) (int, error)  { return s.f.ReadAt(p, s.off+off) }
func (s *section) WriteAt(p []byte, off int64) (int, error) { return s.f.WriteAt(p, s.off+off) }
func (s *section) Sync() error                              { return s.f.Sync() }
