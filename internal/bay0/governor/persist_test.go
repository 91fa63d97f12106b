package governor

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"alpinespine.org/spine/internal/bay0/halt"
	"alpinespine.org/spine/internal/bay0/persist"
	"alpinespine.org/spine/internal/format/disk"
	"alpinespine.org/spine/internal/format/policy"
)

// fakePersist is a persist partition, a console and a kernel that only record.
type fakePersist struct {
	findErr, openErr, activateErr, mountErr error
	right                                   string
	input                                   string
	out                                     bytes.Buffer
	keys                                    [][]byte // every volume key handed to Activate
	mounted                                 bool
}

type fakeTerm struct {
	io.Reader
	io.Writer
}

func (fakeTerm) EchoOff() error { return nil }
func (fakeTerm) Discard() error { return nil }

func (f *fakePersist) Find() (string, error) { return "/dev/vda4", f.findErr }
func (f *fakePersist) Open(string) (unsealer, error) {
	if f.openErr != nil {
		return nil, f.openErr
	}
	return f, nil
}
func (f *fakePersist) Terminal(console io.ReadWriter) (persist.Terminal, error) {
	return fakeTerm{strings.NewReader(f.input), console}, nil
}
func (f *fakePersist) Unseal(p []byte) (*persist.Volume, error) {
	if string(p) != f.right {
		return nil, persist.ErrWrongPassphrase
	}
	return &persist.Volume{Key: bytes.Repeat([]byte{0xaa}, 64), KDF: persist.KDF{Type: "argon2id", MemoryKiB: 8 << 10, Iterations: 4, Parallel: 1}}, nil
}
func (f *fakePersist) Close() error { return nil }

func (f *fakePersist) Notes() []string { return nil }
func (f *fakePersist) Activate(v *persist.Volume) (string, error) {
	f.keys = append(f.keys, v.Key)
	return "/dev/dm-1", f.activateErr
}
func (f *fakePersist) Mount(string) (persist.MountEntry, error) {
	if f.mountErr != nil {
		return persist.MountEntry{}, f.mountErr
	}
	f.mounted = true
	return persist.MountEntry{Line: "40 22 253:1 / /persist rw,nosuid,nodev,noexec - ext4 /dev/dm-1 rw"}, nil
}
func (f *fakePersist) CountBoot() (uint64, error) { return 1, nil }

// console is the fake's console output; it is also what unlockWith writes to.
type console struct {
	*bytes.Buffer
}

func (console) Read([]byte) (int, error) { return 0, io.EOF }

func TestUnlockPersist(t *testing.T) {
	pol := policy.Policy{Governor: policy.Governor{PassphraseAttempts: 3}}
	for _, c := range []struct {
		name    string
		f       fakePersist
		off     string // "" means success
		mounted bool
	}{
		{"right", fakePersist{right: "pw", input: "pw\n"}, "", true},
		{"typo then right", fakePersist{right: "pw", input: "pv\npw\n"}, "", true},
		{"three wrong", fakePersist{right: "pw", input: "a\nb\nc\npw\n"}, "persist: 3 wrong passphrases", false},
		{"no partition", fakePersist{findErr: fmt.Errorf("find block device %q: %w", "persist", disk.ErrNoPartition)}, "there is no /persist", false},
		{"empty partition", fakePersist{openErr: fmt.Errorf("partition /dev/vda4: %w: the partition starts with zeros (never formatted?)", persist.ErrNotLUKS)}, "never formatted", false},
		{"mapping fails", fakePersist{right: "pw", input: "pw\n", activateErr: errors.New("create crypt device: EINVAL")}, "EINVAL", false},
		{"mount fails", fakePersist{right: "pw", input: "pw\n", mountErr: errors.New("mount: EUCLEAN")}, "EUCLEAN", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			con := console{&c.f.out}
			u, err := unlockWith(con, pol, &c.f, progress{beat: func() {}, waiting: func() {}, allow: func(time.Duration) {}, hangAt: func(string) {}})
			if c.off == "" {
				if err != nil {
					t.Fatalf("unlock: %v", err)
				}
				if u.root != persist.Root || u.boots != 1 || !strings.Contains(u.mount.Line, " /persist ") {
					t.Errorf("unlocked = %+v, want /persist mounted, boot 1", u)
				}
				for _, want := range []string{persist.UnlockedLine + " (argon2id 8MiB t=4 p=1, key derived in", persist.MountedLine, "mountinfo: 40 22", "bay0: persist: boot 1"} {
					if !strings.Contains(c.f.out.String(), want) {
						t.Errorf("console lacks %q:\n%s", want, c.f.out.String())
					}
				}
			} else {
				var pe *halt.PowerError
				if !errors.As(err, &pe) || pe.Action != halt.PowerOff || !strings.Contains(pe.Reason, c.off) {
					t.Fatalf("unlock = %v, want a power off mentioning %q", err, c.off)
				}
			}
			if c.f.mounted != c.mounted {
				t.Errorf("mounted = %v, want %v", c.f.mounted, c.mounted)
			}
			for _, k := range c.f.keys {
				if !bytes.Equal(k, make([]byte, len(k))) {
					t.Errorf("volume key not wiped after Activate")
				}
			}
		})
	}
}
