package persist

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
)

// LUKS2 binary header layout (cryptsetup's docs/on-disk-format-luks2.pdf, §2): every field
// is big-endian; the JSON metadata follows the 4096-byte binary header inside hdr_size.
const (
	binHeaderSize   = 4096
	offHdrSize      = 8
	offLabel        = 24
	offCsumAlg      = 72
	offUUID         = 168
	offHdrOffset    = 256
	offCsum         = 448
	minHdrSize      = 16 << 10
	maxHdrSize      = 4 << 20
	afStripes       = 4000
	maxKeyslots     = 32
	maxKeyslotArea  = 1 << 20
	volumeKeyLength = keyBits / 8
)

// Limits bound what a header may make bay0 spend on one key derivation. The header is
// untrusted: without them a crafted partition could make PID 1 run out of memory or derive a
// key for days, with no watchdog armed yet.
type Limits struct {
	MemoryKiB  int // argon2 memory
	Passes     int // argon2 time cost
	Iterations int // pbkdf2 iterations, in a keyslot or a digest
}

// DefaultLimits fit a machine with ram bytes of memory: argon2 may take at most half of it.
func DefaultLimits(ram uint64) Limits {
	return Limits{MemoryKiB: int(min(ram/2/1024, maxArgonMemoryKiB)), Passes: 100, Iterations: 100_000_000}
}

// Header is what bay0 checked of a LUKS2 header before letting luks.go derive any key.
type Header struct {
	UUID, Label string
	Keyslots    []Keyslot // by ID
	// DataOffset is where the single encrypted segment starts, in bytes.
	DataOffset uint64
	SectorSize uint64
}

// Keyslot is one passphrase slot and its key derivation cost.
type Keyslot struct {
	ID  int
	KDF KDF
}

// The parts of the JSON metadata that are checked.
type (
	jsonMeta struct {
		Keyslots map[string]jsonKeyslot `json:"keyslots"`
		Segments map[string]jsonSegment `json:"segments"`
		Digests  map[string]jsonDigest  `json:"digests"`
		Config   struct {
			KeyslotsSize json.Number     `json:"keyslots_size"`
			Requirements json.RawMessage `json:"requirements"`
		} `json:"config"`
	}
	jsonKeyslot struct {
		Type    string `json:"type"`
		KeySize int    `json:"key_size"`
		AF      struct {
			Type    string `json:"type"`
			Stripes int    `json:"stripes"`
			Hash    string `json:"hash"`
		} `json:"af"`
		Area struct {
			Type       string      `json:"type"`
			Offset     json.Number `json:"offset"`
			Size       json.Number `json:"size"`
			Encryption string      `json:"encryption"`
			KeySize    int         `json:"key_size"`
		} `json:"area"`
		KDF struct {
			Type       string `json:"type"`
			Time       int    `json:"time"`
			Memory     int    `json:"memory"`
			CPUs       int    `json:"cpus"`
			Iterations int    `json:"iterations"`
			Hash       string `json:"hash"`
		} `json:"kdf"`
	}
	jsonSegment struct {
		Type       string      `json:"type"`
		Offset     json.Number `json:"offset"`
		Size       string      `json:"size"`
		IVTweak    json.Number `json:"iv_tweak"`
		Encryption string      `json:"encryption"`
		SectorSize uint64      `json:"sector_size"`
		Flags      []string    `json:"flags"`
	}
	jsonDigest struct {
		Type       string `json:"type"`
		Hash       string `json:"hash"`
		Iterations int    `json:"iterations"`
	}
)

// ReadHeader reads and checks the primary LUKS2 header at the start of r: magic, version,
// size, checksum, then the metadata bay0 relies on. It accepts only what Format makes and
// bay0 can open: aes-xts-plain64 keyslots and one aes-xts-plain64 data segment, argon2 or
// pbkdf2 within lim, no mandatory requirement (such as an unfinished reencryption).
func ReadHeader(r io.ReaderAt, lim Limits) (Header, error) {
	if err := Probe(r); err != nil {
		return Header{}, err
	}
	var bin [binHeaderSize]byte
	if _, err := r.ReadAt(bin[:], 0); err != nil {
		return Header{}, fmt.Errorf("read LUKS2 header: %w", err)
	}
	size := binary.BigEndian.Uint64(bin[offHdrSize:])
	if size < minHdrSize || size > maxHdrSize || size&(size-1) != 0 {
		return Header{}, fmt.Errorf("LUKS2 header size %d is not a power of two in %d..%d", size, minHdrSize, maxHdrSize)
	}
	if off := binary.BigEndian.Uint64(bin[offHdrOffset:]); off != 0 {
		return Header{}, fmt.Errorf("LUKS2 header at offset 0 says it is at %d", off)
	}
	if alg := cString(bin[offCsumAlg : offCsumAlg+32]); alg != "sha256" {
		return Header{}, fmt.Errorf("LUKS2 header checksum %q is not sha256", alg)
	}
	hdr := make([]byte, size)
	if _, err := r.ReadAt(hdr, 0); err != nil {
		return Header{}, fmt.Errorf("read LUKS2 header: %w", err)
	}
	want := append([]byte(nil), hdr[offCsum:offCsum+sha256.Size]...)
	clear(hdr[offCsum : offCsum+64])
	if sum := sha256.Sum256(hdr); !bytes.Equal(sum[:], want) {
		return Header{}, errors.New("LUKS2 header checksum mismatch")
	}
	js := hdr[binHeaderSize:]
	if i := bytes.IndexByte(js, 0); i >= 0 {
		js = js[:i]
	}
	var m jsonMeta
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return Header{}, fmt.Errorf("LUKS2 metadata: %w", err)
	}
	h := Header{UUID: cString(bin[offUUID : offUUID+40]), Label: cString(bin[offLabel : offLabel+48])}
	if err := h.check(m, size, lim); err != nil {
		return Header{}, fmt.Errorf("LUKS2 metadata: %w", err)
	}
	return h, nil
}

func (h *Header) check(m jsonMeta, hdrSize uint64, lim Limits) error {
	if r := bytes.TrimSpace(m.Config.Requirements); len(r) > 0 && !bytes.Equal(r, []byte("{}")) && !bytes.Equal(r, []byte("[]")) && !bytes.Equal(r, []byte("null")) {
		return fmt.Errorf("requirements %s are not supported", r)
	}
	if len(m.Segments) != 1 {
		return fmt.Errorf("%d data segments, want 1", len(m.Segments))
	}
	for _, s := range m.Segments {
		off, err := number(s.Offset)
		switch {
		case err != nil:
			return fmt.Errorf("segment offset: %w", err)
		case s.Type != "crypt" || s.Encryption != Cipher:
			return fmt.Errorf("segment %s/%s is not crypt/%s", s.Type, s.Encryption, Cipher)
		case s.SectorSize != 512 && s.SectorSize != SectorSize:
			return fmt.Errorf("segment sector size %d", s.SectorSize)
		case off < 2*hdrSize || off%s.SectorSize != 0:
			return fmt.Errorf("segment offset %d", off)
		case len(s.Flags) > 0:
			return fmt.Errorf("segment flags %q are not supported", s.Flags)
		}
		if s.Size != "dynamic" {
			if _, err := strconv.ParseUint(s.Size, 10, 64); err != nil {
				return fmt.Errorf("segment size %q", s.Size)
			}
		}
		if _, err := number(s.IVTweak); err != nil {
			return fmt.Errorf("segment iv_tweak: %w", err)
		}
		h.DataOffset, h.SectorSize = off, s.SectorSize
	}
	if len(m.Keyslots) == 0 || len(m.Keyslots) > maxKeyslots {
		return fmt.Errorf("%d keyslots", len(m.Keyslots))
	}
	for id, k := range m.Keyslots {
		n, err := strconv.Atoi(id)
		if err != nil || n < 0 || n >= maxKeyslots {
			return fmt.Errorf("keyslot id %q", id)
		}
		kdf, err := checkKeyslot(k, h.DataOffset, lim)
		if err != nil {
			return fmt.Errorf("keyslot %d: %w", n, err)
		}
		h.Keyslots = append(h.Keyslots, Keyslot{ID: n, KDF: kdf})
	}
	sort.Slice(h.Keyslots, func(i, j int) bool { return h.Keyslots[i].ID < h.Keyslots[j].ID })
	for id, d := range m.Digests {
		if d.Type != "pbkdf2" || !knownHash(d.Hash) || d.Iterations < 1 || d.Iterations > lim.Iterations {
			return fmt.Errorf("digest %s: %s/%s with %d iterations", id, d.Type, d.Hash, d.Iterations)
		}
	}
	return nil
}

func checkKeyslot(k jsonKeyslot, dataOffset uint64, lim Limits) (KDF, error) {
	a := k.Area
	off, oerr := number(a.Offset)
	size, serr := number(a.Size)
	switch {
	case k.Type != "luks2" || k.KeySize != volumeKeyLength:
		return KDF{}, fmt.Errorf("type %q with a %d-byte key", k.Type, k.KeySize)
	case k.AF.Type != "luks1" || k.AF.Stripes != afStripes || !knownHash(k.AF.Hash):
		return KDF{}, fmt.Errorf("anti-forensic splitter %s/%d/%s", k.AF.Type, k.AF.Stripes, k.AF.Hash)
	case a.Type != "raw" || a.Encryption != Cipher || a.KeySize != volumeKeyLength:
		return KDF{}, fmt.Errorf("area %s/%s with a %d-byte key", a.Type, a.Encryption, a.KeySize)
	case oerr != nil || serr != nil || size < volumeKeyLength*afStripes || size > maxKeyslotArea || off+size > dataOffset || off%512 != 0:
		return KDF{}, fmt.Errorf("area at %s of %s bytes", a.Offset, a.Size)
	}
	d := k.KDF
	switch d.Type {
	case KDFArgon2id, KDFArgon2i:
		if d.Memory < minArgonMemoryKiB || d.Memory > lim.MemoryKiB || d.Time < 1 || d.Time > lim.Passes || d.CPUs < 1 || d.CPUs > maxParallel {
			return KDF{}, fmt.Errorf("%s with %d KiB, %d passes, %d lanes is beyond this machine's limits (%d KiB, %d passes, %d lanes)",
				d.Type, d.Memory, d.Time, d.CPUs, lim.MemoryKiB, lim.Passes, maxParallel)
		}
		return KDF{Type: d.Type, MemoryKiB: d.Memory, Iterations: d.Time, Parallel: d.CPUs}, nil
	case KDFPBKDF2:
		if d.Iterations < 1 || d.Iterations > lim.Iterations || (d.Hash != "sha256" && d.Hash != "sha512") {
			return KDF{}, fmt.Errorf("pbkdf2/%s with %d iterations", d.Hash, d.Iterations)
		}
		return KDF{Type: d.Type, Iterations: d.Iterations}, nil
	}
	return KDF{}, fmt.Errorf("kdf %q", d.Type)
}

func knownHash(h string) bool { return h == "sha1" || h == "sha256" || h == "sha512" }

// number parses a LUKS2 JSON number string ("8388608") as a uint64.
func number(n json.Number) (uint64, error) {
	return strconv.ParseUint(n.String(), 10, 64)
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// String renders a KDF's cost for the console, e.g. "argon2id 256MiB t=4 p=1".
func (k KDF) String() string {
	if k.Type == KDFPBKDF2 {
		return fmt.Sprintf("pbkdf2 i=%d", k.Iterations)
	}
	mem := fmt.Sprintf("%dKiB", k.MemoryKiB)
	if k.MemoryKiB%1024 == 0 {
		mem = fmt.Sprintf("%dMiB", k.MemoryKiB>>10)
	}
	return fmt.Sprintf("%s %s t=%d p=%d", k.Type, mem, k.Iterations, k.Parallel)
}
