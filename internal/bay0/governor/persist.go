package governor

import (
	"errors"
	"fmt"
	"io"
	"time"

	"alpinespine.org/spine/internal/bay0/halt"
	"alpinespine.org/spine/internal/bay0/persist"
	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/format/policy"
)

// persistSystem is what unlocking /persist asks of the kernel; tests replace it.
type persistSystem interface {
	// Find returns the persist partition's device node.
	Find() (string, error)
	// Open reads the partition's LUKS2 header.
	Open(dev string) (unsealer, error)
	// Terminal wraps the console for the passphrase prompt.
	Terminal(console io.ReadWriter) (persist.Terminal, error)
	// Activate maps the volume with dm-crypt and wipes its key; Mount mounts the result.
	Activate(v *persist.Volume) (string, error)
	Mount(dev string) (persist.MountEntry, error)
	// CountBoot records one more boot in /persist.
	CountBoot() (uint64, error)
}

// unsealer is an opened container: persist.Container in the real system.
type unsealer interface {
	Unseal(passphrase []byte) (*persist.Volume, error)
	// Notes says what damage was found in the container and worked around.
	Notes() []string
	Close() error
}

// unlockWith asks for the passphrase on the console, opens the container and mounts
// /persist. Every failure is a power off with the reason: a machine without /persist does
// not boot, and a reboot would only bring the operator back to the same prompt.
//
// Progress: the prompt's read counts as waiting for a person (the watchdog is fed however long
// the person takes), every other step must end within the phase's window, and the key
// derivation within KDFBudget: a hung prompt loop or derivation stops the feeding.
func unlockWith(console io.ReadWriter, pol policy.Policy, sys persistSystem, pr progress) (unlocked, error) {
	u, err := unlock(console, pol, sys, pr)
	if err != nil {
		return unlocked{}, &halt.PowerError{Action: halt.PowerOff, Reason: "persist: " + err.Error()}
	}
	return u, nil
}

// unlocked is /persist as the persist phase leaves it.
type unlocked struct {
	// root is where it is mounted; mount is its line of mountinfo.
	root  string
	mount persist.MountEntry
	// boots is how many boots /persist has seen, this one included.
	boots uint64
}

// unlock is unlockWith before a failure is made a power off.
func unlock(console io.ReadWriter, pol policy.Policy, sys persistSystem, pr progress) (unlocked, error) {
	dev, err := sys.Find()
	if err != nil {
		return unlocked{}, fmt.Errorf("%w: there is no /persist to boot with", err)
	}
	c, err := sys.Open(dev)
	if err != nil {
		return unlocked{}, err
	}
	defer c.Close()
	for _, n := range c.Notes() {
		fmt.Fprintf(console, "%s %s\n", persist.DamageLine, n)
		fmt.Fprintln(console, event.New(event.PersistDamage).With("reason", n))
	}
	t, err := sys.Terminal(console)
	if err != nil {
		return unlocked{}, err
	}
	term := waitingTerminal{Terminal: t, pr: pr}
	var vol *persist.Volume
	var derive time.Duration
	err = persist.Ask(term, pol.Governor.PassphraseAttempts, func(pass []byte) error {
		pr.hangAt("unlock")
		start := time.Now()
		pr.allow(KDFBudget)
		v, err := c.Unseal(pass)
		pr.beat()
		derive = time.Since(start)
		vol = v
		return err
	})
	var ae *persist.AttemptsError
	switch {
	case errors.As(err, &ae):
		return unlocked{}, err
	case err != nil:
		return unlocked{}, fmt.Errorf("unlock: %w", err)
	}
	fmt.Fprintf(console, "%s (%s, key derived in %s)\n", persist.UnlockedLine, vol.KDF, derive.Round(time.Millisecond))
	fmt.Fprintln(console, event.New(event.PersistUnlocked).With("kdf", vol.KDF.Type).Int("derive_ms", derive.Milliseconds()))
	mapped, err := sys.Activate(vol) // wipes the key, whatever happens
	vol.Wipe()
	if err != nil {
		return unlocked{}, err
	}
	e, err := sys.Mount(mapped)
	if err != nil {
		return unlocked{}, err
	}
	fmt.Fprintln(console, persist.MountedLine)
	fmt.Fprintf(console, "bay0: persist: mountinfo: %s\n", e.Line)
	fmt.Fprintln(console, event.New(event.PersistMounted).With("mountinfo", e.Line))
	n, err := sys.CountBoot()
	if err != nil {
		return unlocked{}, err
	}
	fmt.Fprintf(console, "bay0: persist: boot %d\n", n)
	fmt.Fprintln(console, event.New(event.PersistBoot).Uint("count", n))
	return unlocked{root: persist.Root, mount: e, boots: n}, nil
}

// KDFBudget bounds one key derivation (argon2id is tuned to about a second on the host that
// formatted /persist; a slow machine or TCG takes a few times that). A derivation that takes
// longer stops the watchdog's feeding.
const KDFBudget = 60 * time.Second

// waitingTerminal marks each read of the prompt's answer as waiting for a person.
type waitingTerminal struct {
	persist.Terminal
	pr progress
}

func (w waitingTerminal) Read(p []byte) (int, error) {
	w.pr.waiting()
	defer w.pr.beat()
	return w.Terminal.Read(p)
}
