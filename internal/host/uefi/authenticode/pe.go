// Package authenticode signs UEFI boot programs (PE/COFF images) the way UEFI Secure Boot
// checks them: an Authenticode PKCS#7 signature over the image's Authenticode hash, stored in
// the image's attribute certificate table.
//
// The hash is the one the Authenticode specification ("Windows Authenticode Portable
// Executable Signature Format") defines and EDK2's DxeImageVerificationLib computes: the
// headers without the checksum and the certificate table entry, the sections in file order,
// then whatever follows them up to the certificate table. Images whose sections leave gaps or
// overlap are refused, so that every implementation of that algorithm hashes the same bytes
// and no byte of the file escapes the signature except the checksum, the table entry and the
// table itself.
package authenticode

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
)

// Sizes and offsets of the PE/COFF structures (Microsoft PE format specification). All
// integers are little-endian.
const (
	dosLfanewOff    = 0x3c
	coffHeaderSize  = 20
	sectionSize     = 40
	magicPE32       = 0x10b
	magicPE32Plus   = 0x20b
	optChecksumOff  = 64 // same in PE32 and PE32+
	optHeadersOff   = 60 // SizeOfHeaders
	certDirIndex    = 4  // IMAGE_DIRECTORY_ENTRY_SECURITY
	dirEntrySize    = 8
	maxSections     = 96 // the PE format's own limit
	certAlign       = 8  // attribute certificates are quadword aligned
	winCertHeader   = 8  // WIN_CERTIFICATE: dwLength u32, wRevision u16, wCertificateType u16
	winCertRevision = 0x0200
	winCertPKCS7    = 0x0002 // WIN_CERT_TYPE_PKCS_SIGNED_DATA
)

// ErrFormat means the bytes are not a PE image this package can sign.
var ErrFormat = errors.New("not a signable PE/COFF image")

// image is the parsed layout of a PE file: where the fields the hash skips are, and the
// regions it covers.
type image struct {
	checksumOff   int // offset of the optional header's CheckSum
	certDirOff    int // offset of the certificate table's data directory entry
	sizeOfHeaders int
	sections      []region // raw data of the sections, sorted by file offset
	certOff       int      // start of the certificate table; 0 if none
	certSize      int
}

type region struct{ off, size int }

// parse reads the PE headers of b and checks what the hash relies on.
func parse(b []byte) (image, error) {
	if len(b) < dosLfanewOff+4 || b[0] != 'M' || b[1] != 'Z' {
		return image{}, fmt.Errorf("%w: no MZ header", ErrFormat)
	}
	pe := int(binary.LittleEndian.Uint32(b[dosLfanewOff:]))
	if pe < dosLfanewOff+4 || pe > len(b)-4-coffHeaderSize || string(b[pe:pe+4]) != "PE\x00\x00" {
		return image{}, fmt.Errorf("%w: no PE signature", ErrFormat)
	}
	coff := pe + 4
	nsec := int(binary.LittleEndian.Uint16(b[coff+2:]))
	optSize := int(binary.LittleEndian.Uint16(b[coff+16:]))
	opt := coff + coffHeaderSize
	if nsec > maxSections || opt+optSize+nsec*sectionSize > len(b) || optSize < 2 {
		return image{}, fmt.Errorf("%w: %d sections and a %d-byte optional header do not fit", ErrFormat, nsec, optSize)
	}
	var dirs, ndirsOff int
	switch binary.LittleEndian.Uint16(b[opt:]) {
	case magicPE32:
		dirs, ndirsOff = opt+96, opt+92
	case magicPE32Plus:
		dirs, ndirsOff = opt+112, opt+108
	default:
		return image{}, fmt.Errorf("%w: optional header magic %#x", ErrFormat, binary.LittleEndian.Uint16(b[opt:]))
	}
	if ndirsOff+4 > opt+optSize || int(binary.LittleEndian.Uint32(b[ndirsOff:])) <= certDirIndex ||
		dirs+(certDirIndex+1)*dirEntrySize > opt+optSize {
		return image{}, fmt.Errorf("%w: no certificate table entry in the data directory", ErrFormat)
	}
	im := image{
		checksumOff:   opt + optChecksumOff,
		certDirOff:    dirs + certDirIndex*dirEntrySize,
		sizeOfHeaders: int(binary.LittleEndian.Uint32(b[opt+optHeadersOff:])),
		certOff:       int(binary.LittleEndian.Uint32(b[dirs+certDirIndex*dirEntrySize:])),
		certSize:      int(binary.LittleEndian.Uint32(b[dirs+certDirIndex*dirEntrySize+4:])),
	}
	secTable := opt + optSize
	if im.sizeOfHeaders < secTable+nsec*sectionSize || im.sizeOfHeaders > len(b) {
		return image{}, fmt.Errorf("%w: SizeOfHeaders %d does not cover the headers or exceeds the file", ErrFormat, im.sizeOfHeaders)
	}
	end := len(b)
	if im.certOff != 0 || im.certSize != 0 {
		// The table must be the file's last bytes: anything after it would be unsigned.
		if im.certOff < im.sizeOfHeaders || im.certOff%certAlign != 0 || im.certOff+im.certSize != len(b) {
			return image{}, fmt.Errorf("%w: certificate table at %d (%d bytes) is not at the end of the %d-byte file", ErrFormat, im.certOff, im.certSize, len(b))
		}
		end = im.certOff
	}
	for i := 0; i < nsec; i++ {
		s := b[secTable+i*sectionSize:]
		r := region{size: int(binary.LittleEndian.Uint32(s[16:])), off: int(binary.LittleEndian.Uint32(s[20:]))}
		if r.size == 0 {
			continue
		}
		if r.off < im.sizeOfHeaders || r.off > end || r.size > end-r.off {
			return image{}, fmt.Errorf("%w: section %d (%d bytes at %d) lies outside the image data", ErrFormat, i, r.size, r.off)
		}
		im.sections = append(im.sections, r)
	}
	sort.Slice(im.sections, func(i, j int) bool { return im.sections[i].off < im.sections[j].off })
	next := im.sizeOfHeaders
	for _, r := range im.sections {
		if r.off != next {
			return image{}, fmt.Errorf("%w: section data at %d does not follow the previous at %d (gap or overlap)", ErrFormat, r.off, next)
		}
		next += r.size
	}
	return im, nil
}

// hashRegions returns the byte ranges the Authenticode hash covers, in order.
func (im image) hashRegions(fileSize int) []region {
	rs := []region{
		{0, im.checksumOff},
		{im.checksumOff + 4, im.certDirOff - im.checksumOff - 4},
		{im.certDirOff + dirEntrySize, im.sizeOfHeaders - im.certDirOff - dirEntrySize},
	}
	rs = append(rs, im.sections...)
	hashed := im.sizeOfHeaders
	for _, r := range im.sections {
		hashed += r.size
	}
	if rest := fileSize - im.certSize - hashed; rest > 0 {
		rs = append(rs, region{hashed, rest})
	}
	return rs
}

// checksum computes the PE image checksum (the algorithm of imagehlp's CheckSumMappedFile):
// the 16-bit end-around-carry sum of the file plus its length.
// Precondition: the CheckSum field of b is zero.
func checksum(b []byte) uint32 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.LittleEndian.Uint16(b[i:]))
		sum = (sum & 0xffff) + (sum >> 16)
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1])
		sum = (sum & 0xffff) + (sum >> 16)
	}
	return sum + uint32(len(b))
}
