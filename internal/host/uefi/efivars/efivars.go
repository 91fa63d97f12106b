// Package efivars reads and writes the non-volatile variable store of EDK2 firmware (OVMF)
// offline, so that a machine's Secure Boot keys are enrolled without booting it.
//
// An OVMF variable file (OVMF_VARS_4M.fd) is a firmware volume: a firmware volume header, then
// an authenticated variable store (a store header followed by variables, each a fixed header,
// its UTF-16 name and its data, aligned to 4 bytes; erased flash reads 0xFF), then the
// fault-tolerant-write areas, which this package leaves untouched. A variable is changed the
// way the firmware changes it: the old record is marked deleted and a new one is appended.
//
// See the UEFI specification, "Variable Services" and "Secure Boot and Driver Signing", and
// EDK2's MdeModulePkg/Include/Guid/VariableFormat.h and Pi/PiFirmwareVolume.h for the layout.
package efivars

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf16"

	"alpinespine.org/spine/internal/format/disk"
)

// Sizes and values of the on-disk structures. All integers are little-endian.
const (
	fvHeaderMin     = 0x48 // EFI_FIRMWARE_VOLUME_HEADER with one block map entry and its terminator
	fvOffGUID       = 16   // FileSystemGuid
	fvOffLength     = 32   // FvLength, uint64
	fvOffSig        = 40   // "_FVH"
	fvOffHeaderLen  = 48   // HeaderLength, uint16
	fvSignature     = "_FVH"
	storeHeaderSize = 28 // VARIABLE_STORE_HEADER: Signature GUID, Size u32, Format u8, State u8, reserved
	storeFormatted  = 0x5a
	storeHealthy    = 0xfe
	varHeaderSize   = 60 // AUTHENTICATED_VARIABLE_HEADER
	varStartID      = 0x55aa
	maxNameBytes    = 1024 // far beyond any real variable name; bounds a damaged header
)

// Variable record states. A record is live when its state is exactly StateAdded; the firmware
// clears bits (flash can only go from 1 to 0) to move a record on, e.g. to deleted.
const (
	StateAdded   = 0x3f
	stateDeleted = 0xfd // ANDed into the state
)

// Variable attributes (UEFI specification, GetVariable).
const (
	AttrNonVolatile        = 0x01
	AttrBootService        = 0x02
	AttrRuntime            = 0x04
	AttrTimeBasedAuthWrite = 0x20
)

// GUID is an EFI GUID in its on-disk byte order (the first three fields little-endian).
type GUID [16]byte

// Well-known GUIDs (UEFI specification and EDK2).
var (
	// nvDataFV is EFI_SYSTEM_NV_DATA_FV_GUID, the file system of a variable firmware volume.
	nvDataFV = mustGUID("fff12b8d-7696-4c8b-a985-2747075b4f50")
	// authStore is gEfiAuthenticatedVariableGuid, the signature of a store of authenticated
	// variable headers; the plain gEfiVariableGuid store cannot hold Secure Boot keys.
	authStore = mustGUID("aaf32c78-947b-439a-a180-2e144ec37792")
	// GlobalVariable owns PK and KEK (EFI_GLOBAL_VARIABLE).
	GlobalVariable = mustGUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
	// ImageSecurityDatabase owns db and dbx (EFI_IMAGE_SECURITY_DATABASE_GUID).
	ImageSecurityDatabase = mustGUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")
	// SecureBootEnableDisable owns EDK2's SecureBootEnable switch.
	SecureBootEnableDisable = mustGUID("f0a30bc7-af08-4556-99c4-001009c93a44")
	// VendorKeysNv owns EDK2's record of whether the keys are the platform vendor's.
	VendorKeysNv = mustGUID("9073e4e0-60ec-4b6e-9903-4c223c260f3c")
	// CertX509 is EFI_CERT_X509_GUID, the type of a signature list of DER certificates.
	CertX509 = mustGUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072")
)

// ErrFormat means the bytes are not an EDK2 authenticated variable firmware volume.
var ErrFormat = errors.New("not an EDK2 authenticated variable store")

// Variable is one variable record.
type Variable struct {
	Name       string
	Vendor     GUID
	Attributes uint32
	// TimeStamp is the EFI_TIME of a time-based authenticated variable; zero otherwise.
	TimeStamp [16]byte
	Data      []byte
	State     uint8
	off       int // offset of the record's header in the file
}

// Store is a parsed variable firmware volume.
type Store struct {
	raw        []byte
	start, end int // the variable area: after the store header, to the end of the store
	next       int // where the next record goes: after the last record, 4-byte aligned
	records    []Variable
}

// Parse checks the firmware volume and store headers and reads every variable record. It
// keeps its own copy of b.
func Parse(b []byte) (*Store, error) {
	if len(b) < fvHeaderMin+storeHeaderSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrFormat, len(b))
	}
	if string(b[fvOffSig:fvOffSig+4]) != fvSignature || GUID(b[fvOffGUID:fvOffGUID+16]) != nvDataFV {
		return nil, fmt.Errorf("%w: no variable firmware volume header", ErrFormat)
	}
	if n := binary.LittleEndian.Uint64(b[fvOffLength:]); n != uint64(len(b)) {
		return nil, fmt.Errorf("%w: firmware volume says %d bytes, file has %d", ErrFormat, n, len(b))
	}
	hl := int(binary.LittleEndian.Uint16(b[fvOffHeaderLen:]))
	if hl < fvHeaderMin || hl%2 != 0 || hl+storeHeaderSize > len(b) {
		return nil, fmt.Errorf("%w: firmware volume header length %d", ErrFormat, hl)
	}
	var sum uint16
	for i := 0; i < hl; i += 2 {
		sum += binary.LittleEndian.Uint16(b[i:])
	}
	if sum != 0 {
		return nil, fmt.Errorf("%w: firmware volume header checksum", ErrFormat)
	}
	sh := b[hl:]
	if GUID(sh[:16]) != authStore {
		return nil, fmt.Errorf("%w: store signature %s is not the authenticated variable GUID", ErrFormat, GUID(sh[:16]))
	}
	size := int64(binary.LittleEndian.Uint32(sh[16:]))
	if size < storeHeaderSize || int64(hl)+size > int64(len(b)) {
		return nil, fmt.Errorf("%w: store size %d does not fit the file", ErrFormat, size)
	}
	if sh[20] != storeFormatted || sh[21] != storeHealthy {
		return nil, fmt.Errorf("%w: store format %#x state %#x, want formatted and healthy", ErrFormat, sh[20], sh[21])
	}
	s := &Store{raw: bytes.Clone(b), start: hl + storeHeaderSize, end: hl + int(size)}
	if err := s.scan(); err != nil {
		return nil, err
	}
	return s, nil
}

// scan reads the records from the start of the variable area up to the first erased header.
func (s *Store) scan() error {
	off := align4(s.start)
	for off+varHeaderSize <= s.end {
		h := s.raw[off:]
		id := binary.LittleEndian.Uint16(h)
		if id == 0xffff {
			break
		}
		if id != varStartID {
			return fmt.Errorf("%w: variable at %#x: start id %#x", ErrFormat, off, id)
		}
		nameSize := int64(binary.LittleEndian.Uint32(h[36:]))
		dataSize := int64(binary.LittleEndian.Uint32(h[40:]))
		if nameSize < 2 || nameSize%2 != 0 || nameSize > maxNameBytes ||
			int64(off)+varHeaderSize+nameSize+dataSize > int64(s.end) {
			return fmt.Errorf("%w: variable at %#x: name %d and data %d bytes do not fit", ErrFormat, off, nameSize, dataSize)
		}
		nameStart := off + varHeaderSize
		dataStart := nameStart + int(nameSize)
		name, err := decodeName(s.raw[nameStart:dataStart])
		if err != nil {
			return fmt.Errorf("%w: variable at %#x: %w", ErrFormat, off, err)
		}
		v := Variable{
			Name:       name,
			Vendor:     GUID(h[44:60]),
			Attributes: binary.LittleEndian.Uint32(h[4:]),
			Data:       bytes.Clone(s.raw[dataStart : dataStart+int(dataSize)]),
			State:      h[2],
			off:        off,
		}
		copy(v.TimeStamp[:], h[16:32])
		s.records = append(s.records, v)
		off = align4(dataStart + int(dataSize))
	}
	s.next = off
	// Past the last record the store must be erased, or a record we did not see could be
	// resurrected by the firmware.
	if s.next < s.end && !allFF(s.raw[s.next:s.end]) {
		return fmt.Errorf("%w: bytes after the last variable at %#x are not erased", ErrFormat, s.next)
	}
	return nil
}

// Variables returns the live variables, in store order.
func (s *Store) Variables() []Variable {
	var out []Variable
	for _, v := range s.records {
		if v.State == StateAdded {
			out = append(out, v)
		}
	}
	return out
}

// Get returns the live variable name of vendor.
func (s *Store) Get(name string, vendor GUID) (Variable, bool) {
	for _, v := range s.records {
		if v.State == StateAdded && v.Name == name && v.Vendor == vendor {
			return v, true
		}
	}
	return Variable{}, false
}

// Set writes v as a new record and marks any live record of the same name and vendor deleted.
func (s *Store) Set(v Variable) error {
	if v.Name == "" {
		return errors.New("set variable: empty name")
	}
	name := encodeName(v.Name)
	if len(name) > maxNameBytes {
		return fmt.Errorf("set variable %q: name too long", v.Name)
	}
	n := varHeaderSize + len(name) + len(v.Data)
	if s.next+n > s.end {
		return fmt.Errorf("set variable %q: %d bytes do not fit the %d left in the store", v.Name, n, s.end-s.next)
	}
	for i, r := range s.records {
		if r.State == StateAdded && r.Name == v.Name && r.Vendor == v.Vendor {
			s.records[i].State &= stateDeleted
			s.raw[r.off+2] = s.records[i].State
		}
	}
	h := s.raw[s.next:]
	binary.LittleEndian.PutUint16(h, varStartID)
	h[2] = StateAdded
	h[3] = 0
	binary.LittleEndian.PutUint32(h[4:], v.Attributes)
	binary.LittleEndian.PutUint64(h[8:], 0) // MonotonicCount: only for the retired count-based variables
	copy(h[16:32], v.TimeStamp[:])
	binary.LittleEndian.PutUint32(h[32:], 0) // PubKeyIndex: likewise
	binary.LittleEndian.PutUint32(h[36:], uint32(len(name)))
	binary.LittleEndian.PutUint32(h[40:], uint32(len(v.Data)))
	copy(h[44:60], v.Vendor[:])
	copy(h[varHeaderSize:], name)
	copy(h[varHeaderSize+len(name):], v.Data)
	v.State, v.off, v.Data = StateAdded, s.next, bytes.Clone(v.Data)
	s.records = append(s.records, v)
	s.next = align4(s.next + n)
	return nil
}

// Bytes returns the whole firmware volume with the changes made so far.
func (s *Store) Bytes() []byte { return bytes.Clone(s.raw) }

func align4(n int) int { return (n + 3) &^ 3 }

func allFF(b []byte) bool {
	for _, c := range b {
		if c != 0xff {
			return false
		}
	}
	return true
}

// encodeName returns the UTF-16LE name with its terminating NUL.
func encodeName(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u)+2)
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return b
}

// decodeName reads a NUL-terminated UTF-16LE name that fills b exactly.
func decodeName(b []byte) (string, error) {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	if u[len(u)-1] != 0 {
		return "", errors.New("name is not NUL-terminated")
	}
	u = u[:len(u)-1]
	for _, c := range u {
		if c == 0 {
			return "", errors.New("NUL inside the name")
		}
	}
	return string(utf16.Decode(u)), nil
}

// String formats the GUID as canonical text.
func (g GUID) String() string { return disk.FormatGUID(g) }

// mustGUID parses a GUID constant of this package; the tests parse every one.
func mustGUID(s string) GUID {
	g, err := disk.ParseGUID(s)
	if err != nil {
		panic(err)
	}
	return g
}
