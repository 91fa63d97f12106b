package kernel

import (
	"encoding/binary"
	"io"
)

// x86Writer undoes the xz x86 BCJ filter on the data written to it and passes
// the result on to w. The filter turns the relative targets of CALL (E8) and
// JMP (E9) instructions into absolute addresses so that LZMA2 finds more
// repeats; decoding turns them back. It follows the public-domain algorithm
// of xz's liblzma (simple/x86.c), including its heuristic for telling real
// instructions from E8/E9 bytes inside other instructions, which the decoder
// must reproduce exactly.
//
// Call Flush after the last Write: up to four trailing bytes are held back
// because an instruction might straddle two writes.
type x86Writer struct {
	w        io.Writer
	pos      uint32 // stream offset of buf[0], as the filter counts it
	prevMask uint32
	prevPos  uint32
	buf      []byte
}

// x86AllowedStatus and x86BitNumber are the filter's lookup tables, indexed by
// the recent E8/E9 history (prevMask >> 1).
var (
	x86AllowedStatus = [8]bool{true, true, true, false, true, false, false, false}
	x86BitNumber     = [8]uint32{0, 1, 2, 2, 3, 3, 3, 3}
)

func newX86Writer(w io.Writer, start uint32) *x86Writer {
	// prevPos starts 5 bytes before the stream so that the first E8/E9 sees no history.
	return &x86Writer{w: w, pos: start, prevPos: start - 5}
}

// Write filters p; it holds back the bytes that might still change.
func (x *x86Writer) Write(p []byte) (int, error) {
	x.buf = append(x.buf, p...)
	n := x.convert(x.buf)
	if n > 0 {
		if _, err := x.w.Write(x.buf[:n]); err != nil {
			return 0, err
		}
	}
	x.pos += uint32(n)
	x.buf = x.buf[:copy(x.buf, x.buf[n:])]
	return len(p), nil
}

// Flush writes the held-back tail unchanged: an instruction cannot start in
// the last four bytes of a block.
func (x *x86Writer) Flush() error {
	if len(x.buf) == 0 {
		return nil
	}
	_, err := x.w.Write(x.buf)
	x.pos += uint32(len(x.buf))
	x.buf = x.buf[:0]
	return err
}

// convert decodes buf in place and returns how many leading bytes are final.
func (x *x86Writer) convert(buf []byte) int {
	if len(buf) < 5 {
		return 0
	}
	if x.pos-x.prevPos > 5 {
		x.prevPos = x.pos - 5
	}
	limit := len(buf) - 5
	i := 0
	for i <= limit {
		b := buf[i]
		if b != 0xe8 && b != 0xe9 {
			i++
			continue
		}
		offset := x.pos + uint32(i) - x.prevPos
		x.prevPos = x.pos + uint32(i)
		if offset > 5 {
			x.prevMask = 0
		} else {
			for range offset {
				x.prevMask &= 0x77
				x.prevMask <<= 1
			}
		}

		b = buf[i+4]
		if isX86MSByte(b) && x86AllowedStatus[(x.prevMask>>1)&7] && x.prevMask>>1 < 0x10 {
			src := binary.LittleEndian.Uint32(buf[i+1:])
			var dest uint32
			for {
				dest = src - (x.pos + uint32(i) + 5)
				if x.prevMask == 0 {
					break
				}
				bit := x86BitNumber[(x.prevMask>>1)&7]
				if !isX86MSByte(byte(dest >> (24 - bit*8))) {
					break
				}
				src = dest ^ (1<<(32-bit*8) - 1)
			}
			// The top byte is the sign extension of bit 24.
			dest &= 0x01ffffff
			if dest&0x01000000 != 0 {
				dest |= 0xff000000
			}
			binary.LittleEndian.PutUint32(buf[i+1:], dest)
			i += 5
			x.prevMask = 0
		} else {
			i++
			x.prevMask |= 1
			if isX86MSByte(b) {
				x.prevMask |= 0x10
			}
		}
	}
	return i
}

// isX86MSByte reports whether b is a plausible top byte of a near call
// target: 0x00 or 0xFF (a small positive or negative displacement).
func isX86MSByte(b byte) bool { return b == 0x00 || b == 0xff }
