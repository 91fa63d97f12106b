package kernel

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"io"

	"github.com/ulikunitz/xz/lzma"
)

// This file decodes one .xz stream (https://tukaani.org/xz/xz-file-format.txt).
// github.com/ulikunitz/xz only accepts blocks with a single LZMA2 filter, but the
// kernel's build (scripts/xz_wrap.sh) compresses x86 kernels with the x86 BCJ
// filter in front of LZMA2. So the container is parsed here and only the LZMA2
// chunks are handed to ulikunitz/xz/lzma; the BCJ filter is in bcj.go.

// Sizes and identifiers of the xz container format.
const (
	xzHeaderSize  = 12 // magic (6), stream flags (2), CRC32 (4)
	xzFooterSize  = 12 // CRC32 (4), backward size (4), stream flags (2), magic (2)
	xzMagic       = "\xfd7zXZ\x00"
	xzFooterMagic = "YZ"

	xzFilterX86   = 0x04
	xzFilterLZMA2 = 0x21

	xzCheckNone   = 0x00
	xzCheckCRC32  = 0x01
	xzCheckCRC64  = 0x04
	xzCheckSHA256 = 0x0a

	// xzMaxDictCap bounds the LZMA2 dictionary, which is allocated up front. The
	// kernel uses 32 MiB; a header asking for more is refused rather than trusted.
	xzMaxDictCap = 64 << 20
	// xzMaxVarint is the longest multibyte integer the format allows.
	xzMaxVarint = 9
)

// Errors returned (wrapped) by the xz decoder.
var (
	// ErrCorrupt means the xz stream breaks the format or fails a checksum.
	ErrCorrupt = errors.New("kernel: corrupt xz stream")
	// ErrUnsupported means the xz stream uses a filter or check this package does not decode.
	ErrUnsupported = errors.New("kernel: unsupported xz feature")
)

// xzIndexRecord is what the index says, and the decoder saw, about one block.
type xzIndexRecord struct {
	unpadded     uint64
	uncompressed uint64
}

// xzBlockHeader holds the fields of a block header this decoder uses.
type xzBlockHeader struct {
	compressed   int64 // -1 when absent
	uncompressed int64 // -1 when absent
	dictCap      int
	x86          bool   // the x86 BCJ filter precedes LZMA2
	x86Start     uint32 // BCJ start offset
}

// validXZHeader reports whether b starts with a well-formed stream header.
func validXZHeader(b []byte) bool {
	if len(b) < xzHeaderSize || string(b[:6]) != xzMagic {
		return false
	}
	if b[6] != 0 || b[7]&0xf0 != 0 {
		return false
	}
	return crc32.ChecksumIEEE(b[6:8]) == binary.LittleEndian.Uint32(b[8:12])
}

// countReader counts the bytes read through it.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// decodeXZ decodes the single xz stream at the start of r into w and stops
// right after its footer: whatever follows the stream is never read as xz.
func decodeXZ(r io.Reader, w io.Writer) error {
	cr := &countReader{r: r}
	br := bufio.NewReaderSize(cr, 64<<10)
	// pos is the offset of the next byte the decoder will consume.
	pos := func() int64 { return cr.n - int64(br.Buffered()) }

	var hdr [xzHeaderSize]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return fmt.Errorf("read stream header: %w", eofIsCorrupt(err))
	}
	if !validXZHeader(hdr[:]) {
		return fmt.Errorf("%w: bad stream header", ErrCorrupt)
	}
	check := hdr[7]

	var records []xzIndexRecord
	for {
		b, err := br.ReadByte()
		if err != nil {
			return fmt.Errorf("read block header: %w", eofIsCorrupt(err))
		}
		if b == 0 { // index indicator: no more blocks
			break
		}
		rec, err := decodeBlock(br, pos, b, check, w)
		if err != nil {
			return fmt.Errorf("block %d: %w", len(records), err)
		}
		records = append(records, rec)
	}
	indexSize, err := readIndex(br, records)
	if err != nil {
		return fmt.Errorf("index: %w", err)
	}
	var ftr [xzFooterSize]byte
	if _, err := io.ReadFull(br, ftr[:]); err != nil {
		return fmt.Errorf("read stream footer: %w", eofIsCorrupt(err))
	}
	switch {
	case string(ftr[10:12]) != xzFooterMagic:
		return fmt.Errorf("%w: bad footer magic", ErrCorrupt)
	case crc32.ChecksumIEEE(ftr[4:10]) != binary.LittleEndian.Uint32(ftr[0:4]):
		return fmt.Errorf("%w: footer checksum", ErrCorrupt)
	case !bytes.Equal(ftr[8:10], hdr[6:8]):
		return fmt.Errorf("%w: footer flags differ from header flags", ErrCorrupt)
	case (int64(binary.LittleEndian.Uint32(ftr[4:8]))+1)*4 != indexSize:
		return fmt.Errorf("%w: footer backward size does not match the index", ErrCorrupt)
	}
	return nil
}

// decodeBlock decodes one block whose header starts with first, writes its
// data to w and returns its index record.
func decodeBlock(br *bufio.Reader, pos func() int64, first, check byte, w io.Writer) (xzIndexRecord, error) {
	hsize := (int(first) + 1) * 4
	hdr := make([]byte, hsize)
	hdr[0] = first
	if _, err := io.ReadFull(br, hdr[1:]); err != nil {
		return xzIndexRecord{}, fmt.Errorf("read block header: %w", eofIsCorrupt(err))
	}
	if crc32.ChecksumIEEE(hdr[:hsize-4]) != binary.LittleEndian.Uint32(hdr[hsize-4:]) {
		return xzIndexRecord{}, fmt.Errorf("%w: block header checksum", ErrCorrupt)
	}
	bh, err := parseBlockHeader(hdr[1 : hsize-4])
	if err != nil {
		return xzIndexRecord{}, err
	}
	sum, checkSize, err := newCheck(check)
	if err != nil {
		return xzIndexRecord{}, err
	}

	start := pos()
	lr, err := lzma.Reader2Config{DictCap: bh.dictCap}.NewReader2(br)
	if err != nil {
		return xzIndexRecord{}, fmt.Errorf("%w: lzma2: %v", ErrCorrupt, err)
	}
	out := &countWriter{w: w}
	var sink io.Writer = out
	if sum != nil {
		sink = io.MultiWriter(out, sum)
	}
	var dst io.Writer = sink
	var bcj *x86Writer
	if bh.x86 {
		bcj = newX86Writer(sink, bh.x86Start)
		dst = bcj
	}
	if _, err := io.Copy(dst, lr); err != nil {
		if errors.Is(err, ErrNotELF) {
			return xzIndexRecord{}, err
		}
		return xzIndexRecord{}, fmt.Errorf("%w: lzma2: %v", ErrCorrupt, err)
	}
	if bcj != nil {
		if err := bcj.Flush(); err != nil {
			return xzIndexRecord{}, err
		}
	}
	if !lr.EOS() {
		return xzIndexRecord{}, fmt.Errorf("%w: lzma2 data ends without an end marker", ErrCorrupt)
	}
	compressed := pos() - start
	if bh.compressed >= 0 && bh.compressed != compressed {
		return xzIndexRecord{}, fmt.Errorf("%w: compressed size %d, header says %d", ErrCorrupt, compressed, bh.compressed)
	}
	if bh.uncompressed >= 0 && bh.uncompressed != out.n {
		return xzIndexRecord{}, fmt.Errorf("%w: uncompressed size %d, header says %d", ErrCorrupt, out.n, bh.uncompressed)
	}
	if err := readZeroPadding(br, int(-compressed&3)); err != nil {
		return xzIndexRecord{}, err
	}
	stored := make([]byte, checkSize)
	if _, err := io.ReadFull(br, stored); err != nil {
		return xzIndexRecord{}, fmt.Errorf("read block check: %w", eofIsCorrupt(err))
	}
	if sum != nil && !checkMatches(check, sum, stored) {
		return xzIndexRecord{}, fmt.Errorf("%w: block check of the decompressed data", ErrCorrupt)
	}
	return xzIndexRecord{
		unpadded:     uint64(hsize) + uint64(compressed) + uint64(checkSize),
		uncompressed: uint64(out.n),
	}, nil
}

// parseBlockHeader parses a block header without its size byte and CRC32.
func parseBlockHeader(b []byte) (xzBlockHeader, error) {
	bh := xzBlockHeader{compressed: -1, uncompressed: -1}
	if len(b) < 1 {
		return bh, fmt.Errorf("%w: empty block header", ErrCorrupt)
	}
	flags := b[0]
	if flags&0x3c != 0 {
		return bh, fmt.Errorf("%w: reserved block flags %#x", ErrUnsupported, flags)
	}
	r := bytes.NewReader(b[1:])
	if flags&0x40 != 0 {
		v, err := readVarint(r)
		if err != nil || v == 0 || v > 1<<62 {
			return bh, fmt.Errorf("%w: block compressed size", ErrCorrupt)
		}
		bh.compressed = int64(v)
	}
	if flags&0x80 != 0 {
		v, err := readVarint(r)
		if err != nil || v > 1<<62 {
			return bh, fmt.Errorf("%w: block uncompressed size", ErrCorrupt)
		}
		bh.uncompressed = int64(v)
	}
	n := int(flags&3) + 1
	for i := range n {
		id, err := readVarint(r)
		if err != nil {
			return bh, fmt.Errorf("%w: filter id", ErrCorrupt)
		}
		size, err := readVarint(r)
		if err != nil || size > uint64(r.Len()) {
			return bh, fmt.Errorf("%w: filter properties size", ErrCorrupt)
		}
		props := make([]byte, size)
		if _, err := io.ReadFull(r, props); err != nil {
			return bh, fmt.Errorf("%w: filter properties", ErrCorrupt)
		}
		last := i == n-1
		switch {
		case id == xzFilterX86 && !last && n == 2:
			switch len(props) {
			case 0:
			case 4:
				bh.x86Start = binary.LittleEndian.Uint32(props)
			default:
				return bh, fmt.Errorf("%w: x86 filter properties size %d", ErrCorrupt, len(props))
			}
			bh.x86 = true
		case id == xzFilterLZMA2 && last:
			if len(props) != 1 || props[0] > 40 {
				return bh, fmt.Errorf("%w: lzma2 properties", ErrCorrupt)
			}
			dc, err := lzma.DecodeDictCap(props[0])
			if err != nil {
				return bh, fmt.Errorf("%w: lzma2 dictionary size: %v", ErrCorrupt, err)
			}
			if dc > xzMaxDictCap {
				return bh, fmt.Errorf("%w: lzma2 dictionary of %d bytes (limit %d)", ErrUnsupported, dc, xzMaxDictCap)
			}
			bh.dictCap = max(int(dc), lzma.MinDictCap)
		default:
			return bh, fmt.Errorf("%w: filter chain (filter %#x at position %d of %d); only [lzma2] and [x86, lzma2] are decoded", ErrUnsupported, id, i, n)
		}
	}
	for r.Len() > 0 {
		if b, _ := r.ReadByte(); b != 0 {
			return bh, fmt.Errorf("%w: non-zero block header padding", ErrCorrupt)
		}
	}
	return bh, nil
}

// readIndex reads the index after its indicator byte, checks it against the
// blocks decoded, and returns its size in bytes (indicator and CRC32 included).
func readIndex(br *bufio.Reader, records []xzIndexRecord) (int64, error) {
	h := crc32.NewIEEE()
	h.Write([]byte{0}) // the indicator, already consumed
	r := &hashByteReader{r: br, h: h, n: 1}
	count, err := readVarint(r)
	if err != nil {
		return 0, fmt.Errorf("%w: record count", eofIsCorrupt(err))
	}
	if count != uint64(len(records)) {
		return 0, fmt.Errorf("%w: index lists %d blocks, stream has %d", ErrCorrupt, count, len(records))
	}
	for i, want := range records {
		unpadded, err := readVarint(r)
		if err != nil {
			return 0, fmt.Errorf("%w: record %d", eofIsCorrupt(err), i)
		}
		uncompressed, err := readVarint(r)
		if err != nil {
			return 0, fmt.Errorf("%w: record %d", eofIsCorrupt(err), i)
		}
		if unpadded != want.unpadded || uncompressed != want.uncompressed {
			return 0, fmt.Errorf("%w: record %d does not match block", ErrCorrupt, i)
		}
	}
	for r.n%4 != 0 {
		b, err := r.ReadByte()
		if err != nil {
			return 0, fmt.Errorf("read index padding: %w", eofIsCorrupt(err))
		}
		if b != 0 {
			return 0, fmt.Errorf("%w: non-zero index padding", ErrCorrupt)
		}
	}
	var stored [4]byte
	if _, err := io.ReadFull(br, stored[:]); err != nil {
		return 0, fmt.Errorf("read index checksum: %w", eofIsCorrupt(err))
	}
	if h.Sum32() != binary.LittleEndian.Uint32(stored[:]) {
		return 0, fmt.Errorf("%w: index checksum", ErrCorrupt)
	}
	return r.n + 4, nil
}

// readVarint reads one xz multibyte integer, refusing non-minimal encodings.
func readVarint(r io.ByteReader) (uint64, error) {
	var v uint64
	for i := range xzMaxVarint {
		b, err := r.ReadByte()
		if err != nil {
			return 0, err
		}
		v |= uint64(b&0x7f) << (7 * i)
		if b&0x80 == 0 {
			if b == 0 && i > 0 {
				return 0, fmt.Errorf("%w: non-minimal integer", ErrCorrupt)
			}
			return v, nil
		}
	}
	return 0, fmt.Errorf("%w: integer longer than %d bytes", ErrCorrupt, xzMaxVarint)
}

// readZeroPadding consumes n bytes that must all be zero.
func readZeroPadding(br *bufio.Reader, n int) error {
	for range n {
		b, err := br.ReadByte()
		if err != nil {
			return fmt.Errorf("read block padding: %w", eofIsCorrupt(err))
		}
		if b != 0 {
			return fmt.Errorf("%w: non-zero block padding", ErrCorrupt)
		}
	}
	return nil
}

// newCheck returns the hash for an xz check type (nil for "none") and the
// size of the stored check.
func newCheck(check byte) (hash.Hash, int, error) {
	switch check {
	case xzCheckNone:
		return nil, 0, nil
	case xzCheckCRC32:
		return crc32.NewIEEE(), 4, nil
	case xzCheckCRC64:
		return crc64.New(crc64.MakeTable(crc64.ECMA)), 8, nil
	case xzCheckSHA256:
		return sha256.New(), 32, nil
	}
	return nil, 0, fmt.Errorf("%w: check type %#x", ErrUnsupported, check)
}

// checkMatches compares a computed check with the stored one; xz stores CRCs
// little-endian, while Go's Sum methods append them big-endian.
func checkMatches(check byte, h hash.Hash, stored []byte) bool {
	switch check {
	case xzCheckCRC32:
		return h.(hash.Hash32).Sum32() == binary.LittleEndian.Uint32(stored)
	case xzCheckCRC64:
		return h.(hash.Hash64).Sum64() == binary.LittleEndian.Uint64(stored)
	}
	return bytes.Equal(h.Sum(nil), stored)
}

// eofIsCorrupt turns a premature end of input into ErrCorrupt.
func eofIsCorrupt(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: truncated", ErrCorrupt)
	}
	return err
}

// hashByteReader feeds every byte it reads to h and counts them.
type hashByteReader struct {
	r io.ByteReader
	h hash.Hash32
	n int64
}

func (r *hashByteReader) ReadByte() (byte, error) {
	b, err := r.r.ReadByte()
	if err == nil {
		r.h.Write([]byte{b})
		r.n++
	}
	return b, err
}

// countWriter counts the bytes written through it.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
