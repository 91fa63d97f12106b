// Package luks2 reads a LUKS2 container and unseals its volume key: the binary headers (the
// primary and, when the primary is damaged, the secondary copy), the JSON metadata, the key
// derivation (argon2id, argon2i, pbkdf2), the aes-xts-plain64 keyslot area, the anti-forensic
// split and the digest. It follows cryptsetup's on-disk format description
// (docs/on-disk-format-luks2.pdf) and accepts only what bay0 can open: aes-xts-plain64 keyslots
// and one aes-xts-plain64 data segment, within cost limits the caller sets.
//
// The header is untrusted input read by PID 1: it is parsed once, every length and cost is
// bounded before anything is allocated or derived, and a malformed header is an error, never a
// panic. The package makes no system calls: the container is an io.ReaderAt.
package luks2

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
)

// What bay0 opens.
const (
	// Cipher is the data and keyslot cipher (AES-256 in XTS mode: a 512-bit key).
	Cipher = "aes-xts-plain64"
	// KeySize is the volume key's size in bytes.
	KeySize = 64
	// SectorSize is the data segment's encryption sector bay0 prefers (512 is accepted too).
	SectorSize = 4096
)

// Key derivation functions.
const (
	KDFArgon2id = "argon2id"
	KDFArgon2i  = "argon2i"
	KDFPBKDF2   = "pbkdf2"
)

// Binary header layout (§2 of the format description): big-endian fields; the JSON metadata
// follows the 4096-byte binary header inside hdr_size bytes.
const (
	binHeaderSize = 4096
	offVersion    = 6
	offHdrSize    = 8
	offSeqID      = 16
	offLabel      = 24
	offCsumAlg    = 72
	offUUID       = 168
	offHdrOffset  = 256
	offCsum       = 448
	minHdrSize    = 16 << 10
	maxHdrSize    = 4 << 20
	maxKeyslots   = 32
	maxStripes    = 4000
	// maxKeyslotArea bounds what one keyslot makes bay0 read and decrypt.
	maxKeyslotArea = 1 << 20
	// Argon2 limits cryptsetup itself enforces.
	MinArgonMemoryKiB = 32
	MaxArgonMemoryKiB = 4 << 20
	MaxParallel       = 4
)

var (
	magicPrimary   = []byte("LUKS\xba\xbe")
	magicSecondary = []byte("SKUL\xba\xbe")
	// secondaryOffsets are where a secondary header may sit when the primary cannot say
	// (hdr_size is one of these), the same list cryptsetup searches.
	secondaryOffsets = []int64{16 << 10, 32 << 10, 64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20, 2 << 20, 4 << 20}
)

// Errors.
var (
	// ErrNotLUKS: neither header copy is there (a never-formatted partition is zeros).
	ErrNotLUKS = errors.New("no LUKS2 header")
	// ErrWrongPassphrase: the passphrase opens no intact keyslot.
	ErrWrongPassphrase = errors.New("wrong passphrase")
	// ErrDamaged: the container is damaged so that no passphrase can open it.
	ErrDamaged = errors.New("damaged LUKS2 container")
)

// Limits bound what a header may make the machine spend on one key derivation. Without them a
// crafted partition could make PID 1 run out of memory or derive a key for days.
type Limits struct {
	MemoryKiB  int // argon2 memory
	Passes     int // argon2 time cost
	Iterations int // pbkdf2 iterations, in a keyslot or a digest
}

// DefaultLimits fit a machine with ram bytes of memory: argon2 may take at most half of it.
func DefaultLimits(ram uint64) Limits {
	return Limits{MemoryKiB: int(min(ram/2/1024, MaxArgonMemoryKiB)), Passes: 100, Iterations: 100_000_000}
}

// KDF is a keyslot's key derivation and its cost.
type KDF struct {
	Type       string // KDFArgon2id, KDFArgon2i or KDFPBKDF2
	MemoryKiB  int    // argon2 only
	Iterations int    // argon2 passes, or pbkdf2 iterations
	Parallel   int    // argon2 lanes
	Hash       string // pbkdf2 only
	Salt       []byte
}

// String renders a KDF's cost for the console, e.g. "argon2id 256MiB t=4 p=1".
func (k KDF) String() string {
	if k.Type == KDFPBKDF2 {
		return fmt.Sprintf("pbkdf2-%s i=%d", k.Hash, k.Iterations)
	}
	mem := fmt.Sprintf("%dKiB", k.MemoryKiB)
	if k.MemoryKiB%1024 == 0 {
		mem = fmt.Sprintf("%dMiB", k.MemoryKiB>>10)
	}
	return fmt.Sprintf("%s %s t=%d p=%d", k.Type, mem, k.Iterations, k.Parallel)
}

// Keyslot is one passphrase slot.
type Keyslot struct {
	ID  int
	KDF KDF
	// AreaOffset and AreaSize locate the encrypted, split key in the container.
	AreaOffset, AreaSize uint64
	// Stripes and AFHash are the anti-forensic splitter's parameters.
	Stripes int
	AFHash  string
	// Priority 0 means cryptsetup never tries the slot for a passphrase; neither does Unseal.
	Priority int
}

// Digest checks a candidate volume key: pbkdf2 of the key must give Value.
type Digest struct {
	Keyslots   []int
	Hash       string
	Iterations int
	Salt       []byte
	Value      []byte
}

// Segment is the encrypted data.
type Segment struct {
	Offset  uint64 // bytes from the start of the container
	Size    uint64 // bytes; 0 means "dynamic": to the end of the device
	IVTweak uint64
	// SectorSize is the encryption sector: 512 or SectorSize.
	SectorSize uint64
}

// Header is a LUKS2 header, read and checked once.
type Header struct {
	UUID, Label string
	SeqID       uint64
	// Offset is where the header copy in use sits: 0 for the primary, hdr_size for the secondary.
	Offset   int64
	Keyslots []Keyslot // by ID
	Digests  []Digest
	Segment  Segment
	// Notes say what was found damaged and worked around (a bad header copy), for the console.
	Notes []string
}

// The JSON metadata, as written by cryptsetup.
type (
	jsonMeta struct {
		Keyslots map[string]jsonKeyslot `json:"keyslots"`
		Segments map[string]jsonSegment `json:"segments"`
		Digests  map[string]jsonDigest  `json:"digests"`
		Config   struct {
			JSONSize     string          `json:"json_size"`
			KeyslotsSize string          `json:"keyslots_size"`
			Requirements json.RawMessage `json:"requirements"`
		} `json:"config"`
	}
	jsonKeyslot struct {
		Type     string      `json:"type"`
		KeySize  int         `json:"key_size"`
		Priority json.Number `json:"priority"`
		AF       struct {
			Type    string `json:"type"`
			Stripes int    `json:"stripes"`
			Hash    string `json:"hash"`
		} `json:"af"`
		Area struct {
			Type       string `json:"type"`
			Offset     string `json:"offset"`
			Size       string `json:"size"`
			Encryption string `json:"encryption"`
			KeySize    int    `json:"key_size"`
		} `json:"area"`
		KDF struct {
			Type       string `json:"type"`
			Time       int    `json:"time"`
			Memory     int    `json:"memory"`
			CPUs       int    `json:"cpus"`
			Iterations int    `json:"iterations"`
			Hash       string `json:"hash"`
			Salt       string `json:"salt"`
		} `json:"kdf"`
	}
	jsonSegment struct {
		Type       string   `json:"type"`
		Offset     string   `json:"offset"`
		Size       string   `json:"size"`
		IVTweak    string   `json:"iv_tweak"`
		Encryption string   `json:"encryption"`
		SectorSize uint64   `json:"sector_size"`
		Flags      []string `json:"flags"`
	}
	jsonDigest struct {
		Type       string   `json:"type"`
		Keyslots   []string `json:"keyslots"`
		Segments   []string `json:"segments"`
		Hash       string   `json:"hash"`
		Iterations int      `json:"iterations"`
		Salt       string   `json:"salt"`
		Digest     string   `json:"digest"`
	}
)

// ReadHeader reads both header copies of the container r and returns the one to use: the
// newest (highest seqid) of those that are intact. A damaged copy is worked around and named
// in Header.Notes, as cryptsetup does; only when neither copy is intact is it an error. The
// metadata is then checked against what bay0 opens and against lim.
func ReadHeader(r io.ReaderAt, lim Limits) (Header, error) {
	prim, perr := readCopy(r, 0)
	// The primary names where its twin is; when it cannot, try every place one may be.
	offs := secondaryOffsets
	if perr == nil {
		offs = []int64{int64(prim.size)}
	}
	var sec rawHeader
	serr := fmt.Errorf("%w: no secondary header", ErrNotLUKS)
	for _, off := range offs {
		if sec, serr = readCopy(r, off); serr == nil || !errors.Is(serr, ErrNotLUKS) {
			break
		}
	}
	var use rawHeader
	var notes []string
	switch {
	case perr == nil && serr == nil:
		use = prim
		if sec.seqID > prim.seqID {
			use = sec
			notes = append(notes, fmt.Sprintf("the primary LUKS2 header is older (seqid %d) than the secondary (%d): using the secondary", prim.seqID, sec.seqID))
		}
	case perr == nil:
		use = prim
		notes = append(notes, fmt.Sprintf("the secondary LUKS2 header is damaged (%v): using the primary", serr))
	case serr == nil:
		use = sec
		notes = append(notes, fmt.Sprintf("the primary LUKS2 header is damaged (%v): using the secondary", perr))
	case errors.Is(perr, ErrNotLUKS) && errors.Is(serr, ErrNotLUKS):
		return Header{}, perr
	default:
		return Header{}, fmt.Errorf("%w: primary header: %v; secondary header: %v", ErrDamaged, perr, serr)
	}
	var m jsonMeta
	dec := json.NewDecoder(bytes.NewReader(use.json))
	if err := dec.Decode(&m); err != nil {
		return Header{}, fmt.Errorf("LUKS2 metadata: %w", err)
	}
	h := Header{UUID: use.uuid, Label: use.label, SeqID: use.seqID, Offset: use.offset, Notes: notes}
	if err := h.check(m, use.size, lim); err != nil {
		return Header{}, fmt.Errorf("LUKS2 metadata: %w", err)
	}
	return h, nil
}

// rawHeader is one header copy whose binary header and checksum are right.
type rawHeader struct {
	offset      int64
	size, seqID uint64
	uuid, label string
	json        []byte
}

// readCopy reads the header copy at off: the primary at 0, a secondary elsewhere. A copy
// without its magic is ErrNotLUKS (with a hint when it is zeros); any other fault is an error
// naming it.
func readCopy(r io.ReaderAt, off int64) (rawHeader, error) {
	magic := magicPrimary
	if off != 0 {
		magic = magicSecondary
	}
	var bin [binHeaderSize]byte
	if _, err := r.ReadAt(bin[:], off); err != nil {
		if errors.Is(err, io.EOF) {
			return rawHeader{}, fmt.Errorf("%w: the partition is shorter than a header", ErrNotLUKS)
		}
		return rawHeader{}, fmt.Errorf("read header at %d: %w", off, err)
	}
	if !bytes.Equal(bin[:6], magic) {
		if bin == [binHeaderSize]byte{} {
			return rawHeader{}, fmt.Errorf("%w: zeros at %d (never formatted?)", ErrNotLUKS, off)
		}
		return rawHeader{}, fmt.Errorf("%w: unknown magic %x at %d", ErrNotLUKS, bin[:6], off)
	}
	if v := binary.BigEndian.Uint16(bin[offVersion:]); v != 2 {
		return rawHeader{}, fmt.Errorf("LUKS version %d at %d, want 2", v, off)
	}
	size := binary.BigEndian.Uint64(bin[offHdrSize:])
	if size < minHdrSize || size > maxHdrSize || size&(size-1) != 0 {
		return rawHeader{}, fmt.Errorf("header size %d is not a power of two in %d..%d", size, minHdrSize, maxHdrSize)
	}
	if o := binary.BigEndian.Uint64(bin[offHdrOffset:]); o != uint64(off) {
		return rawHeader{}, fmt.Errorf("header at %d says it is at %d", off, o)
	}
	if off != 0 && uint64(off) != size {
		return rawHeader{}, fmt.Errorf("secondary header at %d has size %d", off, size)
	}
	if alg := cString(bin[offCsumAlg : offCsumAlg+32]); alg != "sha256" {
		return rawHeader{}, fmt.Errorf("header checksum %q is not sha256", alg)
	}
	hdr := make([]byte, size)
	if _, err := r.ReadAt(hdr, off); err != nil {
		return rawHeader{}, fmt.Errorf("read header at %d: %w", off, err)
	}
	want := append([]byte(nil), hdr[offCsum:offCsum+sha256.Size]...)
	clear(hdr[offCsum : offCsum+64])
	if sum := sha256.Sum256(hdr); !bytes.Equal(sum[:], want) {
		return rawHeader{}, fmt.Errorf("header checksum mismatch at %d", off)
	}
	js := hdr[binHeaderSize:]
	if i := bytes.IndexByte(js, 0); i >= 0 {
		js = js[:i]
	}
	return rawHeader{offset: off, size: size, seqID: binary.BigEndian.Uint64(bin[offSeqID:]),
		uuid: cString(bin[offUUID : offUUID+40]), label: cString(bin[offLabel : offLabel+48]), json: js}, nil
}

func (h *Header) check(m jsonMeta, hdrSize uint64, lim Limits) error {
	if r := bytes.TrimSpace(m.Config.Requirements); len(r) > 0 && !bytes.Equal(r, []byte("{}")) && !bytes.Equal(r, []byte("[]")) && !bytes.Equal(r, []byte("null")) {
		return fmt.Errorf("requirements %s are not supported", r)
	}
	if len(m.Segments) != 1 {
		return fmt.Errorf("%d data segments, want 1", len(m.Segments))
	}
	var segID string
	for id, s := range m.Segments {
		segID = id
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
		var size uint64
		if s.Size != "dynamic" {
			if size, err = number(s.Size); err != nil || size == 0 || size%s.SectorSize != 0 {
				return fmt.Errorf("segment size %q", s.Size)
			}
		}
		tweak, err := number(s.IVTweak)
		if err != nil {
			return fmt.Errorf("segment iv_tweak: %w", err)
		}
		h.Segment = Segment{Offset: off, Size: size, IVTweak: tweak, SectorSize: s.SectorSize}
	}
	if len(m.Keyslots) == 0 || len(m.Keyslots) > maxKeyslots {
		return fmt.Errorf("%d keyslots", len(m.Keyslots))
	}
	for id, k := range m.Keyslots {
		n, err := slotID(id)
		if err != nil {
			return err
		}
		ks, err := checkKeyslot(k, h.Segment.Offset, lim)
		if err != nil {
			return fmt.Errorf("keyslot %d: %w", n, err)
		}
		ks.ID = n
		h.Keyslots = append(h.Keyslots, ks)
	}
	sort.Slice(h.Keyslots, func(i, j int) bool { return h.Keyslots[i].ID < h.Keyslots[j].ID })
	ids := make([]string, 0, len(m.Digests))
	for id := range m.Digests {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		d, err := checkDigest(m.Digests[id], segID, m.Keyslots, lim)
		if err != nil {
			return fmt.Errorf("digest %s: %w", id, err)
		}
		h.Digests = append(h.Digests, d)
	}
	if len(h.Digests) == 0 {
		return errors.New("no digest covers the data segment")
	}
	return nil
}

func checkKeyslot(k jsonKeyslot, dataOffset uint64, lim Limits) (Keyslot, error) {
	a := k.Area
	off, oerr := number(a.Offset)
	size, serr := number(a.Size)
	switch {
	case k.Type != "luks2" || k.KeySize != KeySize:
		return Keyslot{}, fmt.Errorf("type %q with a %d-byte key", k.Type, k.KeySize)
	case k.AF.Type != "luks1" || k.AF.Stripes < 1 || k.AF.Stripes > maxStripes || !knownHash(k.AF.Hash):
		return Keyslot{}, fmt.Errorf("anti-forensic splitter %s/%d/%s", k.AF.Type, k.AF.Stripes, k.AF.Hash)
	case a.Type != "raw" || a.Encryption != Cipher || a.KeySize != KeySize:
		return Keyslot{}, fmt.Errorf("area %s/%s with a %d-byte key", a.Type, a.Encryption, a.KeySize)
	case oerr != nil || serr != nil || size < areaLength(KeySize, k.AF.Stripes) || size > maxKeyslotArea ||
		off < 2*minHdrSize || off+size > dataOffset || off%512 != 0:
		return Keyslot{}, fmt.Errorf("area at %q of %q bytes", a.Offset, a.Size)
	}
	ks := Keyslot{AreaOffset: off, AreaSize: size, Stripes: k.AF.Stripes, AFHash: k.AF.Hash, Priority: 1}
	if k.Priority != "" {
		p, err := strconv.Atoi(k.Priority.String())
		if err != nil || p < 0 || p > 2 {
			return Keyslot{}, fmt.Errorf("priority %q", k.Priority)
		}
		ks.Priority = p
	}
	d := k.KDF
	salt, err := base64.StdEncoding.DecodeString(d.Salt)
	if err != nil || len(salt) == 0 || len(salt) > 64 {
		return Keyslot{}, fmt.Errorf("kdf salt %q", d.Salt)
	}
	switch d.Type {
	case KDFArgon2id, KDFArgon2i:
		if d.Memory < MinArgonMemoryKiB || d.Memory > lim.MemoryKiB || d.Time < 1 || d.Time > lim.Passes || d.CPUs < 1 || d.CPUs > MaxParallel {
			return Keyslot{}, fmt.Errorf("%s with %d KiB, %d passes, %d lanes is beyond this machine's limits (%d KiB, %d passes, %d lanes)",
				d.Type, d.Memory, d.Time, d.CPUs, lim.MemoryKiB, lim.Passes, MaxParallel)
		}
		ks.KDF = KDF{Type: d.Type, MemoryKiB: d.Memory, Iterations: d.Time, Parallel: d.CPUs, Salt: salt}
	case KDFPBKDF2:
		if d.Iterations < 1 || d.Iterations > lim.Iterations || !knownHash(d.Hash) {
			return Keyslot{}, fmt.Errorf("pbkdf2/%s with %d iterations", d.Hash, d.Iterations)
		}
		ks.KDF = KDF{Type: d.Type, Iterations: d.Iterations, Hash: d.Hash, Salt: salt}
	default:
		return Keyslot{}, fmt.Errorf("kdf %q", d.Type)
	}
	return ks, nil
}

func checkDigest(d jsonDigest, segID string, slots map[string]jsonKeyslot, lim Limits) (Digest, error) {
	if d.Type != "pbkdf2" || !knownHash(d.Hash) || d.Iterations < 1 || d.Iterations > lim.Iterations {
		return Digest{}, fmt.Errorf("%s/%s with %d iterations", d.Type, d.Hash, d.Iterations)
	}
	covers := false
	for _, s := range d.Segments {
		covers = covers || s == segID
	}
	if !covers {
		return Digest{}, fmt.Errorf("does not cover segment %s", segID)
	}
	out := Digest{Hash: d.Hash, Iterations: d.Iterations}
	for _, id := range d.Keyslots {
		n, err := slotID(id)
		if _, ok := slots[id]; err != nil || !ok {
			return Digest{}, fmt.Errorf("names keyslot %q, which does not exist", id)
		}
		out.Keyslots = append(out.Keyslots, n)
	}
	var err error
	if out.Salt, err = base64.StdEncoding.DecodeString(d.Salt); err != nil || len(out.Salt) == 0 || len(out.Salt) > 64 {
		return Digest{}, fmt.Errorf("salt %q", d.Salt)
	}
	if out.Value, err = base64.StdEncoding.DecodeString(d.Digest); err != nil || len(out.Value) < 16 || len(out.Value) > 64 {
		return Digest{}, fmt.Errorf("value %q", d.Digest)
	}
	return out, nil
}

func slotID(id string) (int, error) {
	n, err := strconv.Atoi(id)
	if err != nil || n < 0 || n >= maxKeyslots || strconv.Itoa(n) != id {
		return 0, fmt.Errorf("keyslot id %q", id)
	}
	return n, nil
}

// areaLength is the length of a split key of keyBytes in stripes, in whole 512-byte sectors.
func areaLength(keyBytes, stripes int) uint64 {
	n := uint64(keyBytes) * uint64(stripes)
	return (n + 511) / 512 * 512
}

func knownHash(h string) bool { return h == "sha1" || h == "sha256" || h == "sha512" }

// number parses a LUKS2 JSON number string ("8388608") as a uint64.
func number(s string) (uint64, error) {
	return strconv.ParseUint(s, 10, 64)
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
