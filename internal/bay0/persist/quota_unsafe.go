package persist

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// fsxattr is struct fsxattr (include/uapi/linux/fs.h).
type fsxattr struct {
	Xflags     uint32
	Extsize    uint32
	Nextents   uint32
	Projid     uint32
	Cowextsize uint32
	Pad        [8]byte
}

// ifDqblk is struct if_dqblk (include/uapi/linux/quota.h); limits are in 1 KiB blocks.
type ifDqblk struct {
	BHardlimit, BSoftlimit, CurSpace  uint64
	IHardlimit, ISoftlimit, CurInodes uint64
	BTime, ITime                      uint64
	Valid                             uint32
	_                                 uint32
}

// ioctlFsxattr runs FS_IOC_FSGETXATTR or FS_IOC_FSSETXATTR on fd.
//
// Precondition: req is one of those two.
func ioctlFsxattr(fd int, req uintptr, x *fsxattr) error {
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(x))); e != 0 {
		return e
	}
	return nil
}

// quotactlFd is quotactl_fd(2) (Linux 5.14) on the filesystem holding fd.
//
// Precondition: cmd's command takes a struct if_dqblk.
func quotactlFd(fd int, cmd uint32, id uint32, q *ifDqblk) error {
	if _, _, e := unix.Syscall6(unix.SYS_QUOTACTL_FD, uintptr(fd), uintptr(cmd), uintptr(id), uintptr(unsafe.Pointer(q)), 0, 0); e != 0 {
		return e
	}
	return nil
}
