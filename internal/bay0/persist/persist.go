// Package persist is /persist as bay0 opens it, the machine's only durable storage: a LUKS2
// container (aes-xts-plain64, argon2id) holding ext4 on the GPT partition named "persist".
// bay0 asks for the passphrase on the console (Ask), unseals the volume key (Open, Unseal, with
// internal/format/luks2), hands the key to dm-crypt and mounts the filesystem
// nodev,nosuid,noexec (Activate, Mount), gives each persona its subtree (EnsureSubtree), and
// closes it all again when the machine goes down (Close). The host formats the partition
// (internal/host/persistfmt).
//
// The key material lives in the kernel only. Go gives no guarantee that a secret was never
// copied (the garbage collector moves nothing today, but stacks grow by copying, and
// x/crypto keeps intermediate buffers of its own), so wiping is best effort: every
// slice this package holds a passphrase or a volume key in is overwritten as soon as it is no
// longer needed, and the volume key reaches dm-crypt through the kernel keyring, never as hex
// text in a Go string that could not be wiped.
package persist

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"alpinespine.org/spine/internal/bay0/mountinfo"
	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/format/luks2"
)

// What the container holds, from the LUKS2 package.
type (
	// Limits bound the key derivation a header may ask for.
	Limits = luks2.Limits
	// KDF is a keyslot's key derivation and cost.
	KDF = luks2.KDF
)

// DefaultLimits fit a machine with ram bytes of memory.
func DefaultLimits(ram uint64) Limits { return luks2.DefaultLimits(ram) }

// Cipher and SectorSize are what the container is encrypted with.
const (
	Cipher     = luks2.Cipher
	SectorSize = luks2.SectorSize
)

// Names and paths shared by spine (which formats the partition) and bay0 (which opens it).
const (
	// Partition is the GPT partition name bay0 looks for.
	Partition = "persist"
	// Root is where the filesystem is mounted.
	Root = "/persist"
	// MapperName is the device-mapper name of the opened container (/dev/mapper/persist).
	MapperName = "persist"
	// RootMode is the mode of the filesystem's root: bay0's, traversable (a persona's
	// subtree is bind-mounted from below it) but neither listable nor writable by anyone else.
	RootMode = 0o711
	// BootFile counts the boots that mounted /persist; it lives in bay0's root.
	BootFile = ".bay0-boot"
)

// Console lines. Tests and spine vm --passphrase-file look for Prompt.
const (
	Prompt       = "bay0: enter passphrase for /persist:"
	WrongLine    = "bay0: wrong passphrase"
	UnlockedLine = "bay0: persist: unlocked"
	MountedLine  = "bay0: persist: mounted /persist (nodev,nosuid,noexec)"
	ClosedLine   = "bay0: persist: closed"
	// DamageLine starts a line about damage found in the container and worked around.
	DamageLine = "bay0: persist: damage:"
)

// MaxPassphrase bounds a passphrase in bytes. The console reads a line in canonical mode,
// whose line buffer holds 4095 bytes.
const MaxPassphrase = 512

// Errors.
var (
	// ErrWrongPassphrase: the passphrase opens no keyslot.
	ErrWrongPassphrase = luks2.ErrWrongPassphrase
	// ErrTooManyAttempts: every attempt the policy allows was wrong.
	ErrTooManyAttempts = errors.New("too many wrong passphrases")
	// ErrNotLUKS: the partition holds no LUKS2 header (a never-formatted partition is zeros).
	ErrNotLUKS = luks2.ErrNotLUKS
	// ErrDamaged: the container is damaged so that no passphrase can open it.
	ErrDamaged = luks2.ErrDamaged
	// ErrNotMounted: /proc/self/mountinfo has no entry for the mount point.
	ErrNotMounted = mountinfo.ErrNotMounted
	// ErrBadPassphrase: a passphrase that could never be typed at the console prompt.
	ErrBadPassphrase = errors.New("unusable passphrase")
)

// CheckPassphrase refuses a passphrase that cannot be typed at bay0's prompt: empty, longer
// than MaxPassphrase, not UTF-8, or holding a control character (the console's line
// discipline would act on it: erase, kill, end of file, a new line).
func CheckPassphrase(p []byte) error {
	switch {
	case len(p) == 0:
		return fmt.Errorf("%w: empty", ErrBadPassphrase)
	case len(p) > MaxPassphrase:
		return fmt.Errorf("%w: longer than %d bytes", ErrBadPassphrase, MaxPassphrase)
	case !utf8.Valid(p):
		return fmt.Errorf("%w: not UTF-8", ErrBadPassphrase)
	}
	for _, c := range p {
		if c < 0x20 || c == 0x7f {
			return fmt.Errorf("%w: contains control character %#02x", ErrBadPassphrase, c)
		}
	}
	return nil
}

// ParsePassphraseFile returns the passphrase in the contents of a passphrase file: its one
// line, without the line ending. The result shares b's memory, so wiping b wipes it.
func ParsePassphraseFile(b []byte) ([]byte, error) {
	p := b
	if n := len(p); n > 0 && p[n-1] == '\n' {
		p = p[:n-1]
		if n := len(p); n > 0 && p[n-1] == '\r' {
			p = p[:n-1]
		}
	}
	if bytes.ContainsAny(p, "\r\n") {
		return nil, fmt.Errorf("%w: more than one line", ErrBadPassphrase)
	}
	if err := CheckPassphrase(p); err != nil {
		return nil, err
	}
	return p, nil
}

// Wipe overwrites b with zeros. It is best effort: see the package documentation.
func Wipe(b []byte) {
	clear(b)
}

// Terminal is the console the passphrase is typed on.
type Terminal interface {
	io.ReadWriter
	// EchoOff stops the terminal from echoing what is typed, for good: bay0 never turns
	// echo back on.
	EchoOff() error
	// Discard drops input typed before a prompt was shown, so that an answer always
	// belongs to the prompt it follows.
	Discard() error
}

// AttemptsError ends Ask when every attempt failed. It unwraps to ErrTooManyAttempts.
type AttemptsError struct {
	Attempts int
}

func (e *AttemptsError) Error() string {
	if e.Attempts == 1 {
		return "1 wrong passphrase"
	}
	return fmt.Sprintf("%d wrong passphrases", e.Attempts)
}

func (e *AttemptsError) Unwrap() error { return ErrTooManyAttempts }

// Ask prompts for the passphrase at most attempts times, with echo off, and calls try with
// each answer. try returns nil when the passphrase opened the container, an error wrapping
// ErrWrongPassphrase to ask again, or any other error to stop at once. try must not keep
// the slice: Ask wipes it as soon as try returns. An empty answer or an end of input counts
// as a wrong passphrase, so a console that keeps returning nothing cannot loop forever.
//
// This is the only input bay0 ever reads from its console.
func Ask(term Terminal, attempts int, try func(passphrase []byte) error) error {
	if attempts < 1 {
		return fmt.Errorf("ask for passphrase: %d attempts allowed", attempts)
	}
	// Echo stays off after Ask, for the rest of the boot: bay0 never reads its console
	// again, and whatever is typed at it later (a passphrase typed at a prompt that was not
	// bay0's) must not come back in the console's output, where every log would keep it.
	if err := term.EchoOff(); err != nil {
		return fmt.Errorf("turn console echo off: %w", err)
	}
	// One buffer for every attempt, wiped after each: a passphrase, its newline, and one
	// byte more to notice a line that is too long.
	var buf [MaxPassphrase + 2]byte
	defer Wipe(buf[:])
	for i := 0; i < attempts; i++ {
		if err := term.Discard(); err != nil {
			return fmt.Errorf("discard console input: %w", err)
		}
		fmt.Fprint(term, Prompt+" ")
		n, rerr := readLine(term, buf[:])
		// Echo was off, so the operator's Enter left the cursor on the prompt line.
		fmt.Fprintln(term)
		if rerr != nil && !errors.Is(rerr, io.EOF) {
			return fmt.Errorf("read passphrase: %w", rerr)
		}
		pass := buf[:n]
		var err error
		if CheckPassphrase(pass) != nil {
			// Not even worth a key derivation: spine disk refuses such passphrases.
			err = ErrWrongPassphrase
		} else {
			err = try(pass)
		}
		Wipe(buf[:])
		switch {
		case err == nil:
			return nil
		case errors.Is(err, ErrWrongPassphrase):
			fmt.Fprintln(term, WrongLine)
			fmt.Fprintln(term, event.New(event.PersistWrong).Int("attempt", int64(i+1)))
		default:
			return err
		}
	}
	return &AttemptsError{Attempts: attempts}
}

// ReadPassphrase reads one line from r (a terminal with echo off) and returns it without the
// line ending, checked with CheckPassphrase. The caller wipes the result.
func ReadPassphrase(r io.Reader) ([]byte, error) {
	buf := make([]byte, MaxPassphrase+2)
	n, err := readLine(r, buf)
	if err != nil && (n == 0 || !errors.Is(err, io.EOF)) {
		Wipe(buf)
		return nil, fmt.Errorf("read passphrase: %w", err)
	}
	if err := CheckPassphrase(buf[:n]); err != nil {
		Wipe(buf)
		return nil, err
	}
	return buf[:n], nil
}

// readLine reads up to and including the next newline, one byte at a time so that nothing
// after the line is consumed. It returns the line's length without "\n" (and without a "\r"
// before it). A line that does not fit buf is read to its end and reported as a length of
// len(buf), which no valid passphrase has. A zero-length read is an end of file (^D on a
// terminal).
func readLine(r io.Reader, buf []byte) (int, error) {
	n, overflow := 0, false
	var one [1]byte
	defer Wipe(one[:])
	var err error
	for {
		var k int
		k, err = r.Read(one[:])
		if k == 1 && one[0] == '\n' {
			err = nil
			break
		}
		if k == 1 && n < len(buf) {
			buf[n] = one[0]
			n++
		} else if k == 1 {
			overflow = true
		}
		if err == nil && k == 0 {
			err = io.EOF
		}
		if err != nil {
			break
		}
	}
	if overflow {
		return len(buf), err
	}
	if n > 0 && buf[n-1] == '\r' {
		n--
	}
	return n, err
}

// MountEntry is one line of /proc/self/mountinfo.
type MountEntry = mountinfo.Entry

// FindMount returns the topmost mountinfo entry for mountPoint, or ErrNotMounted.
func FindMount(r io.Reader, mountPoint string) (MountEntry, error) {
	return mountinfo.Find(r, mountPoint)
}
