package personainit

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/bay0/launch"
)

// Securebits (linux/securebits.h): root inside the namespace gets no capabilities from exec or
// setuid, and nothing can turn that back on.
const (
	secbitNoroot                  = 1 << 0
	secbitNorootLocked            = 1 << 1
	secbitNoSetuidFixup           = 1 << 2
	secbitNoSetuidFixupLocked     = 1 << 3
	secbitKeepCapsLocked          = 1 << 5
	secbitNoCapAmbientRaise       = 1 << 6
	secbitNoCapAmbientRaiseLocked = 1 << 7
)

func setHostname(name string) error {
	if err := unix.Sethostname([]byte(name)); err != nil {
		return fmt.Errorf("set hostname: %w", err)
	}
	return nil
}

// loopbackUp brings up lo, the only interface of a fresh network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring lo up: %w", err)
	}
	return nil
}

// enterWorkdir changes into the workload's working directory and gives it stdin from the
// persona's own /dev/null rather than the governor's.
func enterWorkdir(dir string) error {
	if dir == "" {
		dir = "/"
	}
	if err := unix.Chdir(dir); err != nil {
		return fmt.Errorf("chdir %s: %w", dir, err)
	}
	fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /dev/null: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Dup3(fd, 0, 0); err != nil {
		return fmt.Errorf("stdin: %w", err)
	}
	return nil
}

// dropPrivileges sets no_new_privs, locks the securebits, empties the bounding and ambient
// sets, becomes the policy's user (if any: its gid, then its uid, while CAP_SETGID and
// CAP_SETUID are still effective; SECBIT_NO_SETUID_FIXUP keeps them across the switch), and
// then empties the effective, permitted and inheritable sets.
func dropPrivileges(user *launch.IDs) error {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	bits := secbitNoroot | secbitNorootLocked | secbitNoSetuidFixup | secbitNoSetuidFixupLocked |
		secbitKeepCapsLocked | secbitNoCapAmbientRaise | secbitNoCapAmbientRaiseLocked
	if err := unix.Prctl(unix.PR_SET_SECUREBITS, uintptr(bits), 0, 0, 0); err != nil {
		return fmt.Errorf("securebits: %w", err)
	}
	for c := 0; ; c++ {
		err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0)
		if errors.Is(err, unix.EINVAL) {
			break // past the kernel's last capability
		}
		if err != nil {
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	if user != nil {
		if err := becomeUser(*user); err != nil {
			return err
		}
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("drop capabilities: %w", err)
	}
	return nil
}

// setRlimits sets each limit, soft and hard, for the workload to inherit.
func setRlimits(rs []launch.Rlimit) error {
	for _, r := range rs {
		// unix.Setrlimit goes through the syscall package, which then no longer restores the
		// open files limit the Go runtime found at its start.
		if err := unix.Setrlimit(r.Resource, &unix.Rlimit{Cur: r.Value, Max: r.Value}); err != nil {
			return fmt.Errorf("setrlimit %d to %d: %w", r.Resource, r.Value, err)
		}
	}
	return nil
}

// becomeUser sets the real, effective and saved gid, then uid, of this thread only: it is the
// thread that execs, and execve replaces every other one. Supplementary groups stay empty:
// setgroups is denied in the namespace and the governor has none.
func becomeUser(u launch.IDs) error {
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(u.GID), uintptr(u.GID), uintptr(u.GID)); e != 0 {
		return fmt.Errorf("setresgid %d: %w", u.GID, e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(u.UID), uintptr(u.UID), uintptr(u.UID)); e != 0 {
		return fmt.Errorf("setresuid %d: %w", u.UID, e)
	}
	return nil
}

// closeExtraFDs marks every fd above stderr close-on-exec, the sync pipe included: its EOF
// tells the parent the exec happened.
func closeExtraFDs() error {
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fmt.Errorf("close_range: %w", err)
	}
	return nil
}

// courierChannel gives the workload of the courier persona its channel to bay0 at
// launch.CourierChannelFD (the config's fd, closed by now), open across the exec.
func courierChannel(on bool) error {
	if !on {
		return nil
	}
	if err := unix.Dup3(launch.CourierFD, launch.CourierChannelFD, 0); err != nil {
		return fmt.Errorf("courier channel: %w", err)
	}
	return nil
}

func execWorkload(cfg launch.Config) error {
	err := syscall.Exec(cfg.Exec[0], cfg.Exec, Environ(cfg.Env))
	return fmt.Errorf("exec %s: %w", cfg.Exec[0], err)
}

// pipeFile opens one of the pipes the parent passed for plain blocking reads and writes. The
// parent made them non-blocking (os.Pipe), and os.NewFile would hand a non-blocking fd to Go's
// network poller: an epoll instance, an eventfd and a second thread woken at each read, all
// paid at every launch for a few hundred bytes. The flag belongs to this end's open file
// description alone, so the parent's ends stay as they are.
func pipeFile(fd int, name string) *os.File {
	_ = unix.SetNonblock(fd, false) // an fd it cannot change is read as it is
	return os.NewFile(uintptr(fd), name)
}

// Inside reports whether this process runs in a user namespace other than the initial one,
// as persona-init always does. The real PID 1 can be handed any arguments on the kernel command
// line; it must never take itself for persona-init.
//
// It reads with plain system calls: os.ReadFile would start Go's network poller, which
// persona-init has no other use for.
func Inside() bool {
	fd, err := unix.Open("/proc/self/uid_map", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false // no /proc: the machine's PID 1 in the initramfs
	}
	defer unix.Close(fd)
	var b [512]byte // a few lines of three numbers; more is not the initial map either
	n, err := unix.Read(fd, b[:])
	if err != nil {
		return false
	}
	return !InitialUIDMap(string(b[:n]))
}
