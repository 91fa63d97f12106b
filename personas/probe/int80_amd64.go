package main

// int80 makes the i386 system call number trap through int 0x80.
func int80(trap uintptr) uintptr
