package persist

import (
	"errors"
	"fmt"
	"os"
	"reflect"

	luks "github.com/anatol/luks.go"
)

// Container is the LUKS2 header of a persist partition, read and checked, not yet unsealed.
type Container struct {
	Header Header
	path   string
	dev    luks.Device
}

// Open reads the LUKS2 header of the partition (or image file) at path and checks it with
// ReadHeader before luks.go parses it again to unseal. A partition without one is
// ErrNotLUKS.
func Open(path string, lim Limits) (*Container, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open persist partition: %w", err)
	}
	h, err := ReadHeader(f, lim)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("partition %s: %w", path, err)
	}
	dev, err := guard(func() (luks.Device, error) { return luks.Open(path) })
	if err != nil {
		return nil, fmt.Errorf("partition %s: read LUKS2 header: %w", path, err)
	}
	if len(dev.Slots()) == 0 {
		dev.Close()
		return nil, fmt.Errorf("partition %s: the LUKS2 header has no keyslot", path)
	}
	return &Container{Header: h, path: path, dev: dev}, nil
}

// Close releases the partition.
func (c *Container) Close() error { return c.dev.Close() }

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
// that opens none is ErrWrongPassphrase. Each keyslot tried costs one key derivation.
func (c *Container) Unseal(passphrase []byte) (*Volume, error) {
	for _, slot := range c.dev.Slots() {
		lv, err := guard(func() (*luks.Volume, error) { return c.dev.UnsealVolume(slot, passphrase) })
		if errors.Is(err, luks.ErrPassphraseDoesNotMatch) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("unseal keyslot %d: %w", slot, err)
		}
		key, err := volumeKey(lv)
		if err != nil {
			return nil, err
		}
		v := &Volume{Device: c.path, Offset: lv.StorageOffset, Length: lv.StorageSize, Cipher: lv.StorageEncryption,
			IVTweak: lv.StorageIvTweak, SectorSize: lv.StorageSectorSize, UUID: lv.UUID, Key: key}
		for _, k := range c.Header.Keyslots {
			if k.ID == slot {
				v.KDF = k.KDF
			}
		}
		if err := v.check(); err != nil {
			v.Wipe()
			return nil, fmt.Errorf("unseal keyslot %d: %w", slot, err)
		}
		return v, nil
	}
	return nil, ErrWrongPassphrase
}

// check refuses a data segment bay0 was not built to open: another cipher (only its modules
// are loaded), an odd sector size or key, an empty or misaligned segment.
func (v *Volume) check() error {
	switch {
	case v.Cipher != Cipher:
		return fmt.Errorf("data cipher %q is not %s", v.Cipher, Cipher)
	case len(v.Key) != keyBits/8:
		return fmt.Errorf("volume key is %d bits, want %d", 8*len(v.Key), keyBits)
	case v.SectorSize != 512 && v.SectorSize != SectorSize:
		return fmt.Errorf("sector size %d is neither 512 nor %d", v.SectorSize, SectorSize)
	case v.Length == 0 || v.Length%v.SectorSize != 0 || v.Offset%v.SectorSize != 0:
		return fmt.Errorf("data segment at %d of %d bytes is not aligned to %d-byte sectors", v.Offset, v.Length, v.SectorSize)
	}
	return nil
}

// volumeKey returns the key luks.go keeps in an unexported field. The pinned luks.go has no
// accessor, and its own SetupMapper would put the key in the device-mapper table as hex in
// a Go string, which nobody can wipe. reflect may read (not set) an unexported field, and a
// slice read this way shares its backing array, so wiping the result wipes luks.go's copy.
// TestVolumeKeyMatchesCryptsetup pins this against cryptsetup --dump-volume-key.
func volumeKey(v *luks.Volume) ([]byte, error) {
	f := reflect.ValueOf(v).Elem().FieldByName("key")
	if !f.IsValid() || f.Kind() != reflect.Slice || f.Type().Elem().Kind() != reflect.Uint8 {
		return nil, errors.New("luks.go no longer keeps the volume key in Volume.key")
	}
	return f.Bytes(), nil
}

// guard turns a panic in luks.go, which parses the untrusted header, into an error: a
// crafted partition must end in a clean power off, not in a crash of PID 1.
func guard[T any](f func() (T, error)) (v T, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed LUKS2 header: %v", r)
		}
	}()
	return f()
}
