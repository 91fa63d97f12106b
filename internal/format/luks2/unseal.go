package luks2

import (
	"bytes"
	"crypto/aes"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"sort"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/pbkdf2"
	"golang.org/x/crypto/xts"
)

// keyslotSector is the encryption sector of a keyslot area: always 512 bytes, IVs from 0.
const keyslotSector = 512

// Container is a LUKS2 container whose header was read and checked, with the encrypted key
// material of every keyslot read once. It holds no secret.
type Container struct {
	Header Header
	// Size is the container's size in bytes (a "dynamic" segment runs to its end).
	Size int64
	// areas holds each usable keyslot's encrypted split key, by keyslot ID.
	areas map[int][]byte
	// damaged says, by keyslot ID, why a keyslot can never open.
	damaged map[int]string
}

// Open reads the header of the container r of size bytes (ReadHeader) and the key material
// of its keyslots. A keyslot whose material cannot be read or is visibly destroyed (a sector
// of one repeated byte, as a wiped or failed sector reads, where the encrypted split key is
// indistinguishable from random) is damaged: Damaged names it and Unseal never tries it. A
// container whose every keyslot is damaged is ErrDamaged at once: no passphrase can open it.
func Open(r io.ReaderAt, size int64, lim Limits) (*Container, error) {
	h, err := ReadHeader(r, lim)
	if err != nil {
		return nil, err
	}
	if h.Segment.Offset >= uint64(size) || h.Segment.Size > uint64(size)-h.Segment.Offset {
		return nil, fmt.Errorf("%w: the data segment (at %d, %d bytes) does not fit the %d-byte partition", ErrDamaged, h.Segment.Offset, h.Segment.Size, size)
	}
	c := &Container{Header: h, Size: size, areas: map[int][]byte{}, damaged: map[int]string{}}
	for _, k := range h.Keyslots {
		area := make([]byte, areaLength(KeySize, k.Stripes))
		if _, err := r.ReadAt(area, int64(k.AreaOffset)); err != nil {
			c.damaged[k.ID] = fmt.Sprintf("its key material at %d cannot be read: %v", k.AreaOffset, err)
			continue
		}
		if off, ok := blankSector(area); ok {
			c.damaged[k.ID] = fmt.Sprintf("its key material is destroyed (the sector at byte %d holds one repeated byte)", k.AreaOffset+uint64(off))
			continue
		}
		c.areas[k.ID] = area
	}
	if len(c.areas) == 0 {
		return nil, fmt.Errorf("%w: no keyslot can open it: %s", ErrDamaged, c.DamageReport())
	}
	return c, nil
}

// blankSector returns the offset of the first 512-byte sector of b that holds one byte
// repeated.
func blankSector(b []byte) (int, bool) {
	for off := 0; off < len(b); off += keyslotSector {
		s := b[off:min(off+keyslotSector, len(b))]
		if len(bytes.Trim(s, string(s[:1]))) == 0 {
			return off, true
		}
	}
	return 0, false
}

// Damaged returns the IDs of the keyslots that can never open, in order.
func (c *Container) Damaged() []int {
	ids := make([]int, 0, len(c.damaged))
	for id := range c.damaged {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	return ids
}

// DamageReport says which keyslots are damaged and why, or "" when none is.
func (c *Container) DamageReport() string {
	var b []byte
	for i, id := range c.Damaged() {
		if i > 0 {
			b = append(b, "; "...)
		}
		b = fmt.Appendf(b, "keyslot %d: %s", id, c.damaged[id])
	}
	return string(b)
}

// Unseal returns the volume key that passphrase opens and the keyslot it opened, trying the
// intact keyslots in cryptsetup's order (high priority first, then by ID; priority 0 never).
// A passphrase that opens none is ErrWrongPassphrase. The caller wipes the key.
func (c *Container) Unseal(passphrase []byte) ([]byte, Keyslot, error) {
	slots := append([]Keyslot(nil), c.Header.Keyslots...)
	sort.SliceStable(slots, func(i, j int) bool { return slots[i].Priority > slots[j].Priority })
	for _, k := range slots {
		area, ok := c.areas[k.ID]
		if !ok || k.Priority == 0 {
			continue
		}
		key, err := c.unsealSlot(k, area, passphrase)
		if errors.Is(err, ErrWrongPassphrase) {
			continue
		}
		if err != nil {
			return nil, Keyslot{}, fmt.Errorf("keyslot %d: %w", k.ID, err)
		}
		return key, k, nil
	}
	return nil, Keyslot{}, ErrWrongPassphrase
}

// unsealSlot derives the keyslot key, decrypts the area, merges the split key and checks it
// against every digest bound to the keyslot. Every intermediate secret is wiped.
func (c *Container) unsealSlot(k Keyslot, area, passphrase []byte) ([]byte, error) {
	slotKey, err := derive(k.KDF, passphrase, KeySize)
	if err != nil {
		return nil, err
	}
	defer clear(slotKey)
	ciph, err := xts.NewCipher(aes.NewCipher, slotKey)
	if err != nil {
		return nil, fmt.Errorf("keyslot cipher: %w", err)
	}
	split := make([]byte, len(area))
	defer clear(split)
	for s := 0; s < len(area)/keyslotSector; s++ {
		off := s * keyslotSector
		ciph.Decrypt(split[off:off+keyslotSector], area[off:off+keyslotSector], uint64(s))
	}
	key, err := afMerge(split[:KeySize*k.Stripes], KeySize, k.Stripes, k.AFHash)
	if err != nil {
		return nil, err
	}
	for _, d := range c.Header.Digests {
		bound := false
		for _, id := range d.Keyslots {
			bound = bound || id == k.ID
		}
		if !bound {
			continue
		}
		h, _ := hashFunc(d.Hash)
		got := pbkdf2.Key(key, d.Salt, d.Iterations, len(d.Value), h)
		if subtle.ConstantTimeCompare(got, d.Value) == 1 {
			return key, nil
		}
	}
	clear(key)
	return nil, ErrWrongPassphrase
}

// derive runs the keyslot's key derivation.
func derive(k KDF, passphrase []byte, n int) ([]byte, error) {
	switch k.Type {
	case KDFArgon2id:
		return argon2.IDKey(passphrase, k.Salt, uint32(k.Iterations), uint32(k.MemoryKiB), uint8(k.Parallel), uint32(n)), nil
	case KDFArgon2i:
		return argon2.Key(passphrase, k.Salt, uint32(k.Iterations), uint32(k.MemoryKiB), uint8(k.Parallel), uint32(n)), nil
	case KDFPBKDF2:
		h, err := hashFunc(k.Hash)
		if err != nil {
			return nil, err
		}
		return pbkdf2.Key(passphrase, k.Salt, k.Iterations, n, h), nil
	}
	return nil, fmt.Errorf("kdf %q", k.Type)
}

func hashFunc(name string) (func() hash.Hash, error) {
	switch name {
	case "sha1":
		return sha1.New, nil
	case "sha256":
		return sha256.New, nil
	case "sha512":
		return sha512.New, nil
	}
	return nil, fmt.Errorf("hash %q", name)
}

// afMerge undoes the anti-forensic split (LUKS1's AF, cryptsetup lib/luks1/af.c): the key is
// the last stripe XOR the diffusion chain of all the stripes before it.
func afMerge(split []byte, keyLen, stripes int, hashName string) ([]byte, error) {
	newHash, err := hashFunc(hashName)
	if err != nil {
		return nil, err
	}
	if len(split) != keyLen*stripes {
		return nil, fmt.Errorf("split key of %d bytes for %d stripes of %d", len(split), stripes, keyLen)
	}
	buf := make([]byte, keyLen)
	for i := 0; i < stripes-1; i++ {
		subtle.XORBytes(buf, buf, split[i*keyLen:(i+1)*keyLen])
		diffuse(buf, newHash)
	}
	key := make([]byte, keyLen)
	subtle.XORBytes(key, buf, split[(stripes-1)*keyLen:])
	clear(buf)
	return key, nil
}

// diffuse replaces each digest-sized block i of b (the last one possibly shorter) with the
// hash of the big-endian block number followed by the block, cut to the block's length.
func diffuse(b []byte, newHash func() hash.Hash) {
	h := newHash()
	ds := h.Size()
	var iv [4]byte
	sum := make([]byte, 0, ds)
	for i, off := 0, 0; off < len(b); i, off = i+1, off+ds {
		blk := b[off:min(off+ds, len(b))]
		h.Reset()
		binary.BigEndian.PutUint32(iv[:], uint32(i))
		h.Write(iv[:])
		h.Write(blk)
		sum = h.Sum(sum[:0])
		copy(blk, sum)
	}
	clear(sum)
}
