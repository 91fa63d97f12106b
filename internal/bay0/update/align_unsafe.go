package update

import "unsafe"

// alignedBuffer returns a slice of n bytes whose first byte sits at a multiple of align, as
// O_DIRECT needs. Go's collector does not move heap objects, so the alignment holds for the
// slice's life.
//
// Precondition: align is a power of two.
func alignedBuffer(n, align int) []byte {
	b := make([]byte, n+align)
	off := int(uintptr(unsafe.Pointer(&b[0])) & uintptr(align-1))
	if off != 0 {
		off = align - off
	}
	return b[off : off+n : off+n]
}
