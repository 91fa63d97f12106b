package persist

import (
	"fmt"
	"io"
	"os"
	"strings"

	"alpinespine.org/spine/internal/format/luks2"
)

// Container is the persist partition's LUKS2 container, its header read and checked once
// (luks2.Open), not yet unsealed.
type Container struct {
	c    *luks2.Container
	path string
}

// Open reads the LUKS2 header and the keyslots' key material of the partition (or image file)
// at path. A partition with neither header copy is ErrNotLUKS; one that no passphrase can open
// (both header copies or every keyslot damaged) is ErrDamaged.
func Open(path string, lim Limits) (*Container, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open persist partition: %w", err)
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, fmt.Errorf("size of persist partition %s: %w", path, err)
	}
	c, err := luks2.Open(f, size, lim)
	if err != nil {
		return nil, fmt.Errorf("partition %s: %w", path, err)
	}
	return &Container{c: c, path: path}, nil
}

// Notes says what damage was found and worked around: a damaged header copy, damaged keyslots.
func (c *Container) Notes() []string {
	notes := append([]string(nil), c.c.Header.Notes...)
	if r := c.c.DamageReport(); r != "" {
		notes = append(notes, "damaged, never tried: "+r)
	}
	return notes
}

// Close releases the container. The partition is not held open; Close is there so that the
// caller's contract stays the same if it ever is.
func (c *Container) Close() error { return nil }

// Volume is an unsealed data segment: everything dm-crypt needs, the volume key included.
// Call Wipe as soon as the key has been handed to the kernel.
type Volume struct {
	Device     string
	Offset     uint64 // bytes from the start of Device to the encrypted data
	Length     uint64 // bytes of encrypted data
	Cipher     string
	IVTweak    uint64
	SectorSize uint64
	UUID       string // the LUKS UUID
	Key        []byte
	// KDF is the cost of the keyslot that opened.
	KDF KDF
}

// Wipe overwrites the volume key.
func (v *Volume) Wipe() {
	Wipe(v.Key)
	v.Key = nil
}

// Unseal derives the volume key from the first keyslot that passphrase opens. A passphrase
// that opens none is ErrWrongPassphrase (its message names damaged keyslots that were not
// tried). Each keyslot tried costs one key derivation.
func (c *Container) Unseal(passphrase []byte) (*Volume, error) {
	key, slot, err := c.c.Unseal(passphrase)
	if err != nil {
		if d := c.c.Damaged(); len(d) > 0 && err == luks2.ErrWrongPassphrase {
			return nil, fmt.Errorf("%w (damaged keyslots %s not tried)", err, strings.Trim(fmt.Sprint(d), "[]"))
		}
		return nil, err
	}
	s := c.c.Header.Segment
	length := s.Size
	if length == 0 {
		length = uint64(c.c.Size) - s.Offset
	}
	v := &Volume{Device: c.path, Offset: s.Offset, Length: length, Cipher: Cipher, IVTweak: s.IVTweak,
		SectorSize: s.SectorSize, UUID: c.c.Header.UUID, Key: key, KDF: slot.KDF}
	if err := v.check(); err != nil {
		v.Wipe()
		return nil, fmt.Errorf("unseal keyslot %d: %w", slot.ID, err)
	}
	return v, nil
}

// check refuses a data segment bay0 was not built to open: an odd sector size or key, an
// empty or misaligned segment.
func (v *Volume) check() error {
	switch {
	case len(v.Key) != luks2.KeySize:
		return fmt.Errorf("volume key is %d bits, want %d", 8*len(v.Key), 8*luks2.KeySize)
	case v.SectorSize != 512 && v.SectorSize != SectorSize:
		return fmt.Errorf("sector size %d is neither 512 nor %d", v.SectorSize, SectorSize)
	case v.Length == 0 || v.Length%v.SectorSize != 0 || v.Offset%v.SectorSize != 0:
		return fmt.Errorf("data segment at %d of %d bytes is not aligned to %d-byte sectors", v.Offset, v.Length, v.SectorSize)
	}
	return nil
}
