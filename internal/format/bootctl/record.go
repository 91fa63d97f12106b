package bootctl

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
	"unicode/utf8"
)

// Sizes of the on-disk record.
const (
	// RecordSize is the size of one copy of the record.
	RecordSize = 4096
	// ReasonSize is the size of a slot's reason field.
	ReasonSize = 256
	// LastResetSize is the size of the last-reset field.
	LastResetSize = 512
	// FormatVersion is the only format version this package reads and writes.
	FormatVersion = 1
	// Magic starts every record.
	Magic = "BAY0BOOT"
)

// Field offsets of a record. All integers are little-endian; every byte not
// covered by a field is reserved and must be zero.
const (
	offMagic      = 0   // [8]byte Magic
	offVersion    = 8   // uint32 FormatVersion
	offIncompat   = 12  // uint32 incompatible feature flags; none defined, any set bit is refused
	offSeq        = 16  // uint64
	offPrimary    = 24  // uint8, 0 = A, 1 = B; 25..31 reserved
	offMinVersion = 32  // uint64
	offSlots      = 40  // NumSlots × slotSize
	offLastReset  = 600 // [LastResetSize]byte NUL-padded UTF-8; then reserved up to offCRC
	offCRC        = RecordSize - 4

	// Offsets inside a slot.
	slotState     = 0  // uint8 State
	slotTries     = 1  // uint8
	slotResets    = 2  // uint8: boots of a good slot since its last clean end
	slotLimit     = 3  // uint8: resets allowed in a row, 0 = DefaultResetLimit; 4..7 reserved
	slotVersion   = 8  // uint64
	slotImageSize = 16 // uint64
	slotReason    = 24 // [ReasonSize]byte NUL-padded UTF-8
	slotSize      = slotReason + ReasonSize
)

// Errors of ParseRecord, Load and MarshalBinary, wrapped with context.
var (
	// ErrBadMagic means the bytes are not a boot record (or were never written).
	ErrBadMagic = errors.New("not a boot record")
	// ErrBadChecksum means the record's CRC does not match: a torn or corrupt write.
	ErrBadChecksum = errors.New("boot record checksum mismatch")
	// ErrUnsupported means a format version or incompatible feature this bay0 does not know.
	ErrUnsupported = errors.New("unsupported boot record format")
	// ErrCorrupt means a field holds a value the format does not allow.
	ErrCorrupt = errors.New("corrupt boot record")
	// ErrInvalid means a Record cannot be encoded.
	ErrInvalid = errors.New("invalid boot record")
	// ErrNoRecord means neither copy on the device is valid.
	ErrNoRecord = errors.New("no valid boot record")
)

// MarshalBinary encodes r into RecordSize bytes with its checksum.
func (r Record) MarshalBinary() ([]byte, error) {
	b := make([]byte, RecordSize)
	copy(b[offMagic:], Magic)
	le := binary.LittleEndian
	le.PutUint32(b[offVersion:], FormatVersion)
	le.PutUint64(b[offSeq:], r.Seq)
	if r.Primary != 0 && r.Primary != 1 {
		return nil, fmt.Errorf("marshal boot record: %w: primary slot %d", ErrInvalid, r.Primary)
	}
	b[offPrimary] = byte(r.Primary)
	le.PutUint64(b[offMinVersion:], r.MinVersion)
	for i, s := range r.Slots {
		sb := b[offSlots+i*slotSize : offSlots+(i+1)*slotSize]
		if s.State > Bad {
			return nil, fmt.Errorf("marshal boot record: %w: slot %s state %d", ErrInvalid, SlotName(i), s.State)
		}
		sb[slotState] = byte(s.State)
		sb[slotTries] = s.TriesLeft
		sb[slotResets] = s.Resets
		sb[slotLimit] = s.ResetLimit
		le.PutUint64(sb[slotVersion:], s.Version)
		le.PutUint64(sb[slotImageSize:], s.ImageSize)
		if err := putString(sb[slotReason:slotReason+ReasonSize], s.Reason); err != nil {
			return nil, fmt.Errorf("marshal boot record: slot %s reason: %w", SlotName(i), err)
		}
	}
	if err := putString(b[offLastReset:offLastReset+LastResetSize], r.LastReset); err != nil {
		return nil, fmt.Errorf("marshal boot record: last reset: %w", err)
	}
	le.PutUint32(b[offCRC:], crc32.Checksum(b[:offCRC], crc32.MakeTable(crc32.Castagnoli)))
	return b, nil
}

func putString(dst []byte, s string) error {
	switch {
	case len(s) > len(dst):
		return fmt.Errorf("%w: %d bytes, at most %d", ErrInvalid, len(s), len(dst))
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: not UTF-8", ErrInvalid)
	case strings.IndexByte(s, 0) >= 0:
		return fmt.Errorf("%w: contains NUL", ErrInvalid)
	}
	copy(dst, s)
	return nil
}

// ParseRecord decodes one copy of the record. It is strict: the length, magic,
// format version, incompatible flags, checksum, every field and every
// reserved byte must be exactly what MarshalBinary writes.
func ParseRecord(b []byte) (Record, error) {
	if len(b) != RecordSize {
		return Record{}, fmt.Errorf("parse boot record: %w: %d bytes, want %d", ErrCorrupt, len(b), RecordSize)
	}
	if string(b[offMagic:offMagic+len(Magic)]) != Magic {
		return Record{}, fmt.Errorf("parse boot record: %w: magic %q", ErrBadMagic, b[offMagic:offMagic+len(Magic)])
	}
	le := binary.LittleEndian
	// The version is checked before the checksum: a newer format may place it elsewhere.
	if v := le.Uint32(b[offVersion:]); v != FormatVersion {
		return Record{}, fmt.Errorf("parse boot record: %w: version %d, want %d", ErrUnsupported, v, FormatVersion)
	}
	if f := le.Uint32(b[offIncompat:]); f != 0 {
		return Record{}, fmt.Errorf("parse boot record: %w: incompatible flags %#x", ErrUnsupported, f)
	}
	if got, want := crc32.Checksum(b[:offCRC], crc32.MakeTable(crc32.Castagnoli)), le.Uint32(b[offCRC:]); got != want {
		return Record{}, fmt.Errorf("parse boot record: %w: crc32c %#08x, stored %#08x", ErrBadChecksum, got, want)
	}

	var r Record
	r.Seq = le.Uint64(b[offSeq:])
	switch p := b[offPrimary]; p {
	case 0, 1:
		r.Primary = int(p)
	default:
		return Record{}, fmt.Errorf("parse boot record: %w: primary slot %d", ErrCorrupt, p)
	}
	if !zero(b[offPrimary+1 : offMinVersion]) {
		return Record{}, fmt.Errorf("parse boot record: %w: reserved bytes after primary", ErrCorrupt)
	}
	r.MinVersion = le.Uint64(b[offMinVersion:])
	for i := range r.Slots {
		sb := b[offSlots+i*slotSize : offSlots+(i+1)*slotSize]
		s := &r.Slots[i]
		s.State = State(sb[slotState])
		if s.State > Bad {
			return Record{}, fmt.Errorf("parse boot record: %w: slot %s state %d", ErrCorrupt, SlotName(i), sb[slotState])
		}
		s.TriesLeft = sb[slotTries]
		s.Resets = sb[slotResets]
		s.ResetLimit = sb[slotLimit]
		if !zero(sb[slotLimit+1 : slotVersion]) {
			return Record{}, fmt.Errorf("parse boot record: %w: slot %s reserved bytes", ErrCorrupt, SlotName(i))
		}
		s.Version = le.Uint64(sb[slotVersion:])
		s.ImageSize = le.Uint64(sb[slotImageSize:])
		var err error
		if s.Reason, err = getString(sb[slotReason : slotReason+ReasonSize]); err != nil {
			return Record{}, fmt.Errorf("parse boot record: slot %s reason: %w", SlotName(i), err)
		}
	}
	var err error
	if r.LastReset, err = getString(b[offLastReset : offLastReset+LastResetSize]); err != nil {
		return Record{}, fmt.Errorf("parse boot record: last reset: %w", err)
	}
	if !zero(b[offLastReset+LastResetSize : offCRC]) {
		return Record{}, fmt.Errorf("parse boot record: %w: reserved bytes before checksum", ErrCorrupt)
	}
	return r, nil
}

// getString decodes a NUL-padded UTF-8 field.
func getString(b []byte) (string, error) {
	n := bytes.IndexByte(b, 0)
	if n < 0 {
		n = len(b)
	}
	if !zero(b[n:]) {
		return "", fmt.Errorf("%w: bytes after the NUL padding starts", ErrCorrupt)
	}
	if !utf8.Valid(b[:n]) {
		return "", fmt.Errorf("%w: not UTF-8", ErrCorrupt)
	}
	return string(b[:n]), nil
}

func zero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Clip makes s fit a string field of size bytes (ReasonSize, LastResetSize):
// invalid UTF-8 becomes U+FFFD, NUL bytes are dropped, and the string is cut
// at a rune boundary. Reasons come from error messages of any length, and a
// reason too long to store must not stop a slot from being marked bad.
func Clip(s string, size int) string {
	s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
	if len(s) <= size {
		return s
	}
	n := max(size, 0)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
