package governor

import (
	"errors"
	"fmt"
	"io"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/bay0/persist"
	"alpinespine.org/spine/internal/format/disk"
)

// linuxPersist is the kernel side of unlocking /persist.
type linuxPersist struct{}

func (linuxPersist) Find() (string, error) { return disk.FindBlockDevice("/sys", persist.Partition) }

// Open allows a key derivation at most half of the machine's memory.
func (linuxPersist) Open(dev string) (unsealer, error) {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return nil, fmt.Errorf("sysinfo: %w", err)
	}
	return persist.Open(dev, persist.DefaultLimits(uint64(si.Totalram)*uint64(si.Unit)))
}

func (linuxPersist) Activate(v *persist.Volume) (string, error) { return persist.Activate(v) }

func (linuxPersist) Mount(dev string) (persist.MountEntry, error) { return persist.Mount(dev) }

func (linuxPersist) CountBoot() (uint64, error) { return persist.CountBoot(persist.Root) }

func (linuxPersist) Terminal(console io.ReadWriter) (persist.Terminal, error) {
	f, ok := console.(interface{ Fd() uintptr })
	if !ok {
		return nil, errors.New("the console is not a terminal: no passphrase can be typed")
	}
	return consoleTerminal{ReadWriter: console, fd: int(f.Fd())}, nil
}

// consoleTerminal is the serial console, with the termios calls the prompt needs.
type consoleTerminal struct {
	io.ReadWriter
	fd int
}

// EchoOff clears ECHO (and its variants) and keeps canonical mode, so the kernel's line
// discipline collects a whole line (with erase and kill) and nothing typed is printed, for
// the rest of the boot.
func (c consoleTerminal) EchoOff() error {
	t, err := unix.IoctlGetTermios(c.fd, unix.TCGETS)
	if err != nil {
		return fmt.Errorf("read console mode: %w", err)
	}
	t.Lflag &^= unix.ECHO | unix.ECHOE | unix.ECHOK | unix.ECHONL
	t.Lflag |= unix.ICANON
	if err := unix.IoctlSetTermios(c.fd, unix.TCSETS, t); err != nil {
		return fmt.Errorf("set console mode: %w", err)
	}
	return nil
}

// Discard flushes input typed before the prompt (tcflush(TCIFLUSH)).
func (c consoleTerminal) Discard() error {
	return unix.IoctlSetInt(c.fd, unix.TCFLSH, unix.TCIFLUSH)
}
