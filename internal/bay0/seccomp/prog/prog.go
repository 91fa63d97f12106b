// Package prog is a compiled seccomp filter on its way from the governor, which compiles it
// (package seccomp), to persona-init, which installs it: its bytes and its installation. It is
// apart from the compiler so that persona-init links neither the compiler nor the system call
// table.
package prog

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

const (
	// MaxInstructions is BPF_MAXINSNS: the kernel refuses longer programs.
	MaxInstructions = 4096
	// instructionSize is the size of one struct sock_filter.
	instructionSize = 8
)

// Program is a classic BPF seccomp filter, in the kernel's struct sock_filter layout.
type Program []unix.SockFilter

// MarshalBinary encodes the program as the kernel lays it out on x86-64: 8 bytes per
// instruction, little-endian.
func (p Program) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, len(p)*instructionSize)
	for _, f := range p {
		b = binary.LittleEndian.AppendUint16(b, f.Code)
		b = append(b, f.Jt, f.Jf)
		b = binary.LittleEndian.AppendUint32(b, f.K)
	}
	return b, nil
}

// Decode is the inverse of MarshalBinary. It checks only the shape (the kernel verifies the
// program itself when it is installed).
func Decode(b []byte) (Program, error) {
	if len(b) == 0 || len(b)%instructionSize != 0 || len(b)/instructionSize > MaxInstructions {
		return nil, fmt.Errorf("seccomp program of %d bytes is not 1..%d instructions of %d bytes", len(b), MaxInstructions, instructionSize)
	}
	p := make(Program, len(b)/instructionSize)
	for i := range p {
		c := b[i*instructionSize:]
		p[i] = unix.SockFilter{Code: binary.LittleEndian.Uint16(c), Jt: c[2], Jf: c[3], K: binary.LittleEndian.Uint32(c[4:])}
	}
	return p, nil
}
