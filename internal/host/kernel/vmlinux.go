package kernel

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Errors returned (wrapped) by ExtractVmlinux.
var (
	// ErrNoXZ means the input holds no well-formed xz stream header.
	ErrNoXZ = errors.New("kernel: no xz stream in vmlinuz")
	// ErrNotELF means the decompressed kernel does not start with the ELF magic.
	ErrNotELF = errors.New("kernel: decompressed kernel is not an ELF file")
)

// elfMagic starts every ELF file.
const elfMagic = "\x7fELF"

// scanChunk is how much of vmlinuz is searched per read for the xz magic.
const scanChunk = 64 << 10

// ExtractVmlinux writes the uncompressed kernel (an ELF file) found in an x86
// bzImage: it decodes the first well-formed xz stream in vmlinuz, which the
// kernel build places after the real-mode setup code and the decompressor.
// Bytes after the stream (the decompressor's data, the appended size) are
// ignored. A candidate magic whose header fails its checksum is skipped, so an
// "\xfd7zXZ\0" that merely occurs in the decompressor's strings is harmless.
//
// On error, out may have received part of the kernel; write to a temporary
// file and discard it.
func ExtractVmlinux(vmlinuz io.ReaderAt, size int64, out io.Writer) error {
	off, err := findXZ(vmlinuz, size)
	if err != nil {
		return err
	}
	ew := &elfWriter{w: out}
	if err := decodeXZ(io.NewSectionReader(vmlinuz, off, size-off), ew); err != nil {
		return fmt.Errorf("kernel: decompress xz stream at offset %d: %w", off, err)
	}
	if !ew.checked {
		return fmt.Errorf("%w: only %d bytes", ErrNotELF, len(ew.head))
	}
	return nil
}

// findXZ returns the offset of the first valid xz stream header in r.
func findXZ(r io.ReaderAt, size int64) (int64, error) {
	buf := make([]byte, scanChunk+xzHeaderSize)
	for base := int64(0); base < size; base += scanChunk {
		n, err := r.ReadAt(buf[:min(int64(len(buf)), size-base)], base)
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("kernel: read vmlinuz at %d: %w", base, err)
		}
		chunk := buf[:n]
		// Headers that start in this chunk; those starting in the overlap are
		// found again, whole, in the next one.
		for i := 0; i < len(chunk) && i < scanChunk; {
			j := bytes.Index(chunk[i:], []byte(xzMagic))
			if j < 0 || i+j >= scanChunk {
				break
			}
			if validXZHeader(chunk[i+j:]) {
				return base + int64(i+j), nil
			}
			i += j + 1
		}
	}
	return 0, ErrNoXZ
}

// elfWriter passes data on to w once its first four bytes are the ELF magic,
// so a wrong stream fails before anything is written.
type elfWriter struct {
	w       io.Writer
	head    []byte
	checked bool
}

func (e *elfWriter) Write(p []byte) (int, error) {
	if e.checked {
		return e.w.Write(p)
	}
	take := min(len(elfMagic)-len(e.head), len(p))
	e.head = append(e.head, p[:take]...)
	if len(e.head) < len(elfMagic) {
		return len(p), nil
	}
	if string(e.head) != elfMagic {
		return 0, fmt.Errorf("%w: starts with %x", ErrNotELF, e.head)
	}
	e.checked = true
	if _, err := e.w.Write(e.head); err != nil {
		return 0, err
	}
	if _, err := e.w.Write(p[take:]); err != nil {
		return 0, err
	}
	return len(p), nil
}
