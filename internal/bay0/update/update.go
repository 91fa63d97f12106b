// Package update stages a new Spine into the inactive slot. An update is authenticated before
// a byte is written: the client first offers the image's footer, manifest and signature; only
// an offer signed by a trusted key, newer than the running Spine and not below the
// anti-rollback floor is accepted. The body is then written, read back from the disk itself
// (past the page cache) and verified before the slot is marked for trial (Stager).
//
// Writing a slot destroys the Spine it held: with two slots, the previous Spine in the inactive
// slot is given up at the first byte written, never earlier. An update that fails after that
// (client gone, stalled or tampered body, failed verification) or is cut by a power loss
// leaves the slot restored from the running, committed Spine (Stager.Restore), so the machine
// is back to two bootable Spines.
package update

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"

	"alpinespine.org/spine/internal/format/image"
	"alpinespine.org/spine/internal/format/manifest"
)

// Offer is the small, trailing part of an image, sent ahead of the body.
type Offer struct {
	Footer    []byte `json:"footer"`
	Manifest  []byte `json:"manifest"`
	Signature []byte `json:"signature"`
}

// Floor is what an offer is checked against.
type Floor struct {
	Running    uint64 // version of the running Spine: an update must be newer
	MinVersion uint64 // anti-rollback floor from the boot-control record
	SlotSize   int64  // bytes available in the inactive slot
}

// ErrRefused marks every reason an update is turned down before anything is written.
var ErrRefused = errors.New("update refused")

// OfferFromImage reads the offer of an image file's trailing parts.
func OfferFromImage(im *image.Image) (Offer, error) {
	fb, err := im.Footer.MarshalBinary()
	if err != nil {
		return Offer{}, err
	}
	return Offer{Footer: fb, Manifest: im.ManifestBytes, Signature: im.Signature}, nil
}

// Check authenticates an offer and applies the version rules. It returns the manifest and the
// footer the body must match.
func (o Offer) Check(trusted []ed25519.PublicKey, f Floor) (manifest.Manifest, image.Footer, error) {
	ft, err := image.ParseFooter(o.Footer)
	if err != nil {
		return manifest.Manifest{}, image.Footer{}, fmt.Errorf("%w: %v", ErrRefused, err)
	}
	if int(ft.ManifestSize) != len(o.Manifest) || int(ft.SignatureSize) != len(o.Signature) {
		return manifest.Manifest{}, image.Footer{}, fmt.Errorf("%w: manifest or signature size disagrees with the footer", ErrRefused)
	}
	im := image.FromParts(ft, o.Manifest, o.Signature)
	m, err := im.Authenticate(trusted)
	if err != nil {
		return manifest.Manifest{}, image.Footer{}, fmt.Errorf("%w: %v", ErrRefused, err)
	}
	switch {
	case m.Version <= f.Running:
		return manifest.Manifest{}, image.Footer{}, fmt.Errorf("%w: version %d is not newer than the running version %d", ErrRefused, m.Version, f.Running)
	case m.Version < f.MinVersion:
		return manifest.Manifest{}, image.Footer{}, fmt.Errorf("%w: version %d is below min_version %d", ErrRefused, m.Version, f.MinVersion)
	case int64(ft.ImageSize) > f.SlotSize:
		return manifest.Manifest{}, image.Footer{}, fmt.Errorf("%w: image is %d bytes, the slot holds %d", ErrRefused, ft.ImageSize, f.SlotSize)
	}
	return m, ft, nil
}

// BodySize is how many bytes of body follow an accepted offer: the data and the hash area.
func BodySize(ft image.Footer) int64 { return int64(ft.ManifestOffset) }

// Slot is the inactive slot's device.
type Slot interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
}

// Write copies the body into the slot, then the manifest, signature and footer; SyncAndVerify
// flushes and checks it. begin, if not nil, is called once the first chunk of the body is in
// hand and before the first byte of the slot is overwritten: a client that never sends a byte
// costs the slot nothing. progress, if not nil, is told the bytes written so far.
func Write(dst Slot, body io.Reader, ft image.Footer, o Offer, begin func() error, progress func(int64)) error {
	buf := make([]byte, 1<<20)
	var off int64
	total := BodySize(ft)
	for off < total {
		n := int64(len(buf))
		if total-off < n {
			n = total - off
		}
		k, err := io.ReadFull(body, buf[:n])
		if k > 0 && off == 0 && begin != nil {
			if berr := begin(); berr != nil {
				return berr
			}
		}
		if k > 0 {
			if _, werr := dst.WriteAt(buf[:k], off); werr != nil {
				return fmt.Errorf("write slot at %d: %w", off, werr)
			}
			off += int64(k)
			if progress != nil {
				progress(off)
			}
		}
		if err != nil {
			return fmt.Errorf("read update body at byte %d of %d: %w", off, total, err)
		}
	}
	for _, p := range []struct {
		b   []byte
		off int64
	}{
		{o.Manifest, int64(ft.ManifestOffset)},
		{o.Signature, int64(ft.ManifestOffset) + int64(ft.ManifestSize)},
		{o.Footer, int64(ft.ImageSize) - image.FooterSize},
	} {
		if _, err := dst.WriteAt(p.b, p.off); err != nil {
			return fmt.Errorf("write slot trailer at %d: %w", p.off, err)
		}
	}
	return nil
}

// SyncAndVerify flushes the written slot and, at the same time, reads it back through disk
// and verifies it (Verify): the hashing overlaps the flush instead of waiting for it. disk must
// read what the device holds, not what the page cache holds for dst (an O_DIRECT descriptor,
// OpenDirect: such a read first writes back the cached range, then reads the device), or a
// write that never reached the disk would verify. Both must succeed before the caller may mark
// the slot for trial.
func SyncAndVerify(dst Slot, disk io.ReaderAt, ft image.Footer, want manifest.Manifest, trusted []ed25519.PublicKey, workers int) error {
	synced := make(chan error, 1)
	go func() { synced <- dst.Sync() }()
	verr := Verify(disk, ft, want, trusted, workers)
	if err := <-synced; err != nil {
		return fmt.Errorf("flush slot: %w", err)
	}
	return verr
}

// Verify reads the staged image back from the slot and checks it end to end against the
// offer's root hash: what is on the disk, not what was sent, is what will boot.
func Verify(dst io.ReaderAt, ft image.Footer, want manifest.Manifest, trusted []ed25519.PublicKey, workers int) error {
	m, err := image.Check(dst, int64(ft.ImageSize), trusted, workers)
	if err != nil {
		return fmt.Errorf("verify staged slot: %w", err)
	}
	if m.RootHash != want.RootHash || m.Version != want.Version {
		return fmt.Errorf("verify staged slot: it holds %s v%d, not the offered image", m.Name, m.Version)
	}
	return nil
}
