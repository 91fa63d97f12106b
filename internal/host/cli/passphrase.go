package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/bay0/persist"
	"alpinespine.org/spine/internal/format/policy"
	"alpinespine.org/spine/internal/host/persistfmt"
)

// kdfTest is the --kdf value that selects persistfmt.TestKDF.
const kdfTest = "test"

// kdfFlags are spine disk's key derivation cost flags.
type kdfFlags struct {
	kind, memory, time string
	parallel           int
}

func addKDFFlags(fs *flag.FlagSet) *kdfFlags {
	d := persistfmt.DefaultKDF()
	k := &kdfFlags{}
	fs.StringVar(&k.kind, "kdf", d.Type, "key derivation: argon2id, argon2i, pbkdf2, or test (argon2id at the lowest cost cryptsetup allows: for tests only)")
	fs.StringVar(&k.memory, "kdf-memory", fmt.Sprintf("%dMiB", d.MemoryKiB>>10), "argon2 memory cost; the target machine derives the key in this much of its own RAM")
	fs.StringVar(&k.time, "kdf-time", strconv.Itoa(d.Iterations), "time cost: a number of argon2 passes (pbkdf2 iterations), or a duration such as 2s that cryptsetup aims for on this host (the target may be slower)")
	fs.IntVar(&k.parallel, "kdf-parallel", d.Parallel, "argon2 lanes")
	return k
}

// kdf turns the flags into a persistfmt.KDF. The test preset refuses other cost flags, so a
// cheap KDF is never chosen by accident.
func (k *kdfFlags) kdf(fs *flag.FlagSet) (persistfmt.KDF, error) {
	if k.kind == kdfTest {
		var bad []string
		fs.Visit(func(f *flag.Flag) {
			if f.Name != "kdf" && len(f.Name) > 4 && f.Name[:4] == "kdf-" {
				bad = append(bad, "--"+f.Name)
			}
		})
		if len(bad) > 0 {
			return persistfmt.KDF{}, fmt.Errorf("--kdf test fixes the cost; drop %v", bad)
		}
		return persistfmt.TestKDF(), nil
	}
	out := persistfmt.KDF{Type: k.kind, Parallel: k.parallel}
	mem, err := policy.ParseSize(k.memory)
	if err != nil {
		return persistfmt.KDF{}, fmt.Errorf("--kdf-memory: %w", err)
	}
	out.MemoryKiB = int(mem >> 10)
	if n, err := strconv.Atoi(k.time); err == nil {
		out.Iterations = n
	} else if d, derr := time.ParseDuration(k.time); derr == nil {
		out.IterTime = d
	} else {
		return persistfmt.KDF{}, fmt.Errorf("--kdf-time %q is neither a number of passes nor a duration", k.time)
	}
	return out, nil
}

// diskPassphrase gets the passphrase for a new persist partition: from the file, or typed
// twice on the terminal with echo off. It is never defaulted and never stored; the caller
// wipes it.
func diskPassphrase(ctx context.Context, env *Env, file string) ([]byte, error) {
	if file != "" {
		return passphraseFile(file)
	}
	in, ok := env.Stdin.(*os.File)
	if !ok || !isTerminal(in) {
		return nil, errors.New("no passphrase: give --passphrase-file, or run spine disk on a terminal to type it")
	}
	first, err := promptNoEcho(ctx, in, env.Stderr, "passphrase for /persist: ")
	if err != nil {
		return nil, err
	}
	second, err := promptNoEcho(ctx, in, env.Stderr, "passphrase again: ")
	if err != nil {
		persist.Wipe(first)
		return nil, err
	}
	defer persist.Wipe(second)
	if !bytes.Equal(first, second) {
		persist.Wipe(first)
		return nil, errors.New("the two passphrases differ")
	}
	return first, nil
}

// passphraseFile reads a passphrase file (one line). The caller wipes the result.
func passphraseFile(file string) ([]byte, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read passphrase file: %w", err)
	}
	p, err := persist.ParsePassphraseFile(b)
	if err != nil {
		persist.Wipe(b)
		return nil, fmt.Errorf("passphrase file %s: %w", file, err)
	}
	return p, nil
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// promptNoEcho prints prompt and reads one line from the terminal in with echo off (the
// newline still echoes). Cancelling ctx (^C) restores the terminal and returns.
func promptNoEcho(ctx context.Context, in *os.File, out io.Writer, prompt string) ([]byte, error) {
	restore, err := echoOff(in, true)
	if err != nil {
		return nil, err
	}
	defer restore()
	fmt.Fprint(out, prompt)
	p, err := persist.ReadPassphrase(&pollReader{ctx: ctx, fd: int(in.Fd())})
	if ctx.Err() != nil {
		fmt.Fprintln(out)
		return nil, ctx.Err()
	}
	return p, err
}

// echoOff turns the terminal's echo off (keeping the newline's echo if keepNewline) and
// returns the function that restores it.
func echoOff(f *os.File, keepNewline bool) (func(), error) {
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, fmt.Errorf("read terminal mode: %w", err)
	}
	t := *old
	t.Lflag &^= unix.ECHO | unix.ECHOE | unix.ECHOK | unix.ECHONL
	if keepNewline {
		t.Lflag |= unix.ECHONL
	}
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &t); err != nil {
		return nil, fmt.Errorf("set terminal mode: %w", err)
	}
	return func() { unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}

// pollReader reads a terminal without blocking past a cancelled context.
type pollReader struct {
	ctx context.Context
	fd  int
}

func (r *pollReader) Read(p []byte) (int, error) {
	for {
		if err := r.ctx.Err(); err != nil {
			return 0, err
		}
		fds := []unix.PollFd{{Fd: int32(r.fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 100)
		if errors.Is(err, unix.EINTR) || err == nil && n == 0 {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("poll terminal: %w", err)
		}
		return unix.Read(r.fd, p)
	}
}
