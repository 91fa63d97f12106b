package main

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// mqOpen is mq_open(3) without libc: the kernel takes the name without its leading slash.
func mqOpen(name string, flags int) (int, error) {
	b, err := unix.BytePtrFromString(name)
	if err != nil {
		return -1, err
	}
	fd, _, e := unix.Syscall6(unix.SYS_MQ_OPEN, uintptr(unsafe.Pointer(b)), uintptr(flags|unix.O_CLOEXEC), 0o600, 0, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(fd), nil
}
