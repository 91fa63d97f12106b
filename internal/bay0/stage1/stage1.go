// Package stage1 is bay0 as PID 1 in the initramfs: it applies the boot law. It mounts the
// pseudo filesystems, reads the boot-control record, tries the primary slot then the other one, verifies
// each (signature, anti-rollback, dm-verity with every block read once), and hands the machine
// to the first Spine that passes, or powers off with every reason printed.
//
// The initramfs's role (see initramfs.Role) decides how the machine is handed over. As stage 1
// of a direct boot, bay0 switches root into the slot under the running kernel. As stage 0, the
// signed boot program that firmware starts, it starts the slot's own kernel with kexec, handing
// it an initramfs with the slot's bay0 and the slot's role; under that kernel, bay0 verifies
// and mounts only that slot (the try is already counted) and switches root.
//
// The decision of what to try next is bootctl.Next, a pure function; this package only carries
// it out against the kernel through the System interface.
package stage1

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"time"

	"alpinespine.org/spine/internal/bay0/fault"
	"alpinespine.org/spine/internal/bay0/halt"
	"alpinespine.org/spine/internal/bay0/health"
	"alpinespine.org/spine/internal/format/bootctl"
	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/format/handoff"
	"alpinespine.org/spine/internal/format/initramfs"
	"alpinespine.org/spine/internal/format/keys"
)

// WatchdogTimeout is the hardware watchdog's timeout from the moment stage 1 arms it until
// the governor sets the policy's; Window is how long stage 1 may go without progress before
// it stops feeding. A hang anywhere in stage 1, or between its exec and the governor's first
// feed, resets the machine within WatchdogTimeout + Window.
const (
	WatchdogTimeout = 10 * time.Second
	Window          = 5 * time.Second
)

// ErrGovernHere is what Run returns when it has handed the machine to the verified Spine and
// the Spine's /bin/bay0 is this very binary (its initramfs's sha256 of it equals the signed
// manifest's bay0_sha256): the caller runs the governor in this process, in the new root,
// instead of paying for a second start of the same program (under TCG, half a second of
// reading it back through dm-verity and SquashFS and starting the Go runtime again).
var ErrGovernHere = errors.New("stage 1 done: this bay0 is the Spine's own, governing here")

// KernelStartTimeout bounds each part of stage 0's handover to the slot's kernel, which takes
// seconds on hardware and far longer under an emulator on a busy host: loading it (read, hash,
// kexec_file_load; the feeder goes on feeding for that long), then, with the watchdog's
// timeout set to it, everything until the slot's stage 1 arms the watchdog again with
// WatchdogTimeout (kexec's purgatory checks the loaded segments' hashes, the kernel
// decompresses and boots, bay0 starts), when nothing can feed it. A hang there still resets
// the machine, only later.
const KernelStartTimeout = 60 * time.Second

// Dog is the armed hardware watchdog.
type Dog interface {
	Feed() error
	SetTimeout(time.Duration) error
	// FD is the descriptor the governor inherits across exec.
	FD() int
}

// System is everything stage 1 asks of the kernel.
type System interface {
	// Setup mounts /proc, /sys and /dev and turns SysRq off (a kernel without SysRq has no
	// switch to turn); TrustedKeys reads the baked keys.
	Setup() error
	TrustedKeys() ([]ed25519.PublicKey, error)
	// ArmWatchdog opens the hardware watchdog, left open across exec, with WatchdogTimeout.
	ArmWatchdog() (Dog, error)
	// OpenState opens the bay0-state partition.
	OpenState() (bootctl.Device, error)
	// Mount opens the slot's image (size bytes), authenticates its manifest with the keys,
	// maps it with dm-verity, reads every block once if eager, and mounts it read-only at the
	// new root, calling progress as it goes. minVersion is the anti-rollback floor. On failure
	// nothing of the attempt is left behind.
	Mount(slot int, size uint64, trusted []ed25519.PublicKey, minVersion uint64, eager bool, progress func()) (handoff.Handoff, error)
	// SwitchRoot hands the machine to the mounted Spine's /bin/bay0; it returns only on error,
	// or with ErrGovernHere when that bay0 is this binary, once the new root is this process's.
	SwitchRoot(h handoff.Handoff) error
	// Role reads what this initramfs is for.
	Role() (initramfs.Role, error)
	// StartKernel (stage 0) starts the mounted slot's own kernel, checked against its manifest,
	// with kexec, handing it an initramfs that holds the slot's bay0, the trusted keys (PEM)
	// and the slot's role. It returns only on error.
	StartKernel(h handoff.Handoff, trusted [][]byte) error
}

// Run applies the boot law. It returns only with an error: a *halt.PowerError when no slot
// can boot, any other error when stage 1 itself cannot work.
//
// Order: the watchdog is armed right after the pseudo filesystems are up and
// before the record is read, and it is fed only while stage 1 progresses (each step, each
// chunk of the eager verification), so a hang after a trial's try is written resets the
// machine and uses the try up.
func Run(sys System, log io.Writer) error {
	role, err := sys.Role()
	if err != nil {
		return &halt.PowerError{Action: halt.PowerOff, Reason: fmt.Sprintf("initramfs role: %v", err)}
	}
	name := string(role)
	if role == initramfs.RoleStage1 {
		name = "stage1"
	}
	fmt.Fprintf(log, "bay0: stage1: start (%s)\n", name)
	fmt.Fprintln(log, event.New(event.Stage1Start).With("role", name))
	var phases []handoff.Phase
	mark := time.Now()
	phase := func(name string) {
		now := time.Now()
		phases = append(phases, handoff.Phase{Name: "stage1: " + name, MS: now.Sub(mark).Milliseconds()})
		mark = now
	}
	if err := sys.Setup(); err != nil {
		return fmt.Errorf("set up early system: %w", err)
	}
	phase("setup")
	fault.CrashAt("stage1", func() { fmt.Fprintln(log, event.New(event.FaultFired).With("kind", "crash-stage1")) })
	dog, err := sys.ArmWatchdog()
	if err != nil {
		return &halt.PowerError{Action: halt.PowerOff, Reason: fmt.Sprintf("no hardware watchdog: %v", err)}
	}
	mon := health.New(time.Now(), "stage1")
	beat := mon.Beater("stage1")
	stopFeeding, fed := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(fed)
		feed(dog, mon, log, stopFeeding)
	}()
	phase("watchdog")
	trusted, err := sys.TrustedKeys()
	if err != nil {
		return fmt.Errorf("read trusted keys: %w", err)
	}
	dev, err := sys.OpenState()
	if err != nil {
		return fmt.Errorf("open boot state: %w", err)
	}
	rec, copyIdx, err := bootctl.Load(dev)
	if err != nil {
		return &halt.PowerError{Action: halt.PowerOff, Reason: fmt.Sprintf("boot-control record unreadable: %v", err)}
	}
	beat()
	phase("record")
	var pems [][]byte
	for _, k := range trusted {
		pem, err := keys.EncodePublic(k)
		if err != nil {
			return err
		}
		pems = append(pems, pem)
	}
	// handOver gives the machine to the verified, mounted slot: under this kernel, or (stage 0)
	// under the slot's own.
	handOver := func(mounted handoff.Handoff) error {
		name := bootctl.SlotName(mounted.Slot)
		if role == initramfs.RoleStage0 {
			phase("start kernel")
			// From here on only the handover progresses, and nothing in it can beat: loading the
			// kernel is a few long calls, and after the kexec nothing of stage 0 runs. It gets
			// KernelStartTimeout, from the feeder and then from the hardware.
			mon.Only("start kernel", KernelStartTimeout, time.Now())
			if err := dog.SetTimeout(KernelStartTimeout); err != nil {
				return &halt.PowerError{Action: halt.PowerOff, Reason: fmt.Sprintf("watchdog timeout for the slot kernel's start: %v", err)}
			}
			if err := sys.StartKernel(mounted, pems); err != nil {
				return fmt.Errorf("start the kernel of slot %s: %w", name, err)
			}
			return errors.New("starting the slot's kernel returned without an error")
		}
		mounted.Keys = pems
		mounted.WatchdogFD = dog.FD()
		phase("switch root")
		mounted.Phases = phases
		fmt.Fprintf(log, "bay0: stage1: switching root to slot %s\n", name)
		fmt.Fprintln(log, event.New(event.SwitchRoot).With("slot", name))
		err := sys.SwitchRoot(mounted)
		if errors.Is(err, ErrGovernHere) {
			// The governor adopts the watchdog and opens the record itself, as after an exec,
			// which would have ended this feeder and closed the state partition.
			close(stopFeeding)
			<-fed
			if c, ok := dev.(io.Closer); ok {
				_ = c.Close()
			}
			return ErrGovernHere
		}
		if err != nil {
			return fmt.Errorf("switch root to slot %s: %w", name, err)
		}
		return errors.New("switch root returned without an error")
	}
	if slotName, ok := role.Slot(); ok {
		return bootChosen(sys, log, dev, rec, copyIdx, slotName, trusted, beat, phase, handOver)
	}
	var (
		outcomes []bootctl.Outcome
		mounted  handoff.Handoff
	)
	for {
		beat()
		act, next := bootctl.Next(rec, outcomes)
		next = bootctl.ExplainReset(next, outcomes)
		if next != rec {
			if rec, copyIdx, err = bootctl.Store(dev, rec, copyIdx, next); err != nil {
				return &halt.PowerError{Action: halt.PowerOff, Reason: fmt.Sprintf("write boot-control record: %v", err)}
			}
		}
		switch act.Kind {
		case bootctl.PowerOff:
			for _, r := range act.Reasons {
				fmt.Fprintf(log, "bay0: stage1: no boot: %s\n", r)
				fmt.Fprintln(log, event.New(event.NoBoot).With("reason", r))
			}
			return &halt.PowerError{Action: halt.PowerOff, Reason: "no bootable Spine slot"}
		case bootctl.Boot:
			return handOver(mounted)
		case bootctl.Try:
			s := rec.Slots[act.Slot]
			name := bootctl.SlotName(act.Slot)
			fmt.Fprintf(log, "bay0: stage1: trying slot %s (state %s, tries left %d)\n", name, s.State, s.TriesLeft)
			fmt.Fprintln(log, event.New(event.SlotTry).With("slot", name).With("state", s.State.String()).Uint("tries_left", uint64(s.TriesLeft)))
			fault.HangAt("stage1-"+name, func() { fmt.Fprintln(log, event.New(event.FaultFired).With("kind", "hang-stage1-"+name)) })
			h, err := sys.Mount(act.Slot, s.ImageSize, trusted, rec.MinVersion, true, beat)
			phase("try " + name)
			if err != nil {
				fmt.Fprintf(log, "bay0: stage1: slot %s failed: %v\n", name, err)
				fmt.Fprintln(log, event.New(event.SlotFailed).With("slot", name).With("reason", err.Error()))
				outcomes = append(outcomes, bootctl.Outcome{Slot: act.Slot, OK: false, Reason: err.Error()})
				continue
			}
			fmt.Fprintf(log, "bay0: stage1: slot %s verified: %s v%d root %s\n", name, h.Manifest.Name, h.Manifest.Version, h.Manifest.RootHash)
			fmt.Fprintln(log, event.New(event.SlotVerified).With("slot", name).With("name", h.Manifest.Name).
				Uint("version", h.Manifest.Version).With("root", h.Manifest.RootHash))
			mounted = h
			outcomes = append(outcomes, bootctl.Outcome{Slot: act.Slot, OK: true})
		default:
			return errors.New("boot decision returned an unknown action")
		}
	}
}

// bootChosen runs under a slot's own kernel, which stage 0 started after it chose, tried and
// verified that slot: the boot law has been applied and the try counted, so only this slot is
// verified and mounted again (its kernel trusts nothing it did not check itself). If it fails,
// the slot is marked bad and the machine reboots into stage 0, which decides again.
func bootChosen(sys System, log io.Writer, dev bootctl.Device, rec bootctl.Record, copyIdx int, name string, trusted []ed25519.PublicKey, beat func(), phase func(string), handOver func(handoff.Handoff) error) error {
	slot := 0
	if name == "b" {
		slot = 1
	}
	// Stage 0 read every block of this slot in this boot; the live mapping still checks each
	// block read and resets on a bad one, so the slot kernel does not read it all again.
	h, err := sys.Mount(slot, rec.Slots[slot].ImageSize, trusted, rec.MinVersion, false, beat)
	phase("mount " + name)
	if err != nil {
		reason := fmt.Sprintf("under its own kernel: %v", err)
		fmt.Fprintf(log, "bay0: stage1: slot %s failed: %s\n", name, reason)
		fmt.Fprintln(log, event.New(event.SlotFailed).With("slot", name).With("reason", reason))
		if _, _, err := bootctl.Store(dev, rec, copyIdx, bootctl.MarkFailed(rec, slot, reason)); err != nil {
			return &halt.PowerError{Action: halt.PowerOff, Reason: fmt.Sprintf("write boot-control record: %v", err)}
		}
		return &halt.PowerError{Action: halt.Reboot, Reason: fmt.Sprintf("slot %s failed under its own kernel", name)}
	}
	fmt.Fprintf(log, "bay0: stage1: slot %s verified: %s v%d root %s\n", name, h.Manifest.Name, h.Manifest.Version, h.Manifest.RootHash)
	fmt.Fprintln(log, event.New(event.SlotVerified).With("slot", name).With("name", h.Manifest.Name).
		Uint("version", h.Manifest.Version).With("root", h.Manifest.RootHash))
	// This kernel is the one stage 0 checked against this manifest before starting it.
	h.KernelSHA256 = h.Manifest.KernelSHA256
	return handOver(h)
}

// feed feeds the watchdog while stage 1 progresses; once it stops (a hang), it says so once
// and never feeds again: the hardware resets the machine. It ends with the process (the
// exec into the governor, or halt), or when stop is closed (the governor runs in this
// process); otherwise it never returns, so a stage 1 blocked forever is reset by the
// watchdog, not ended by the runtime's deadlock detector.
func feed(dog Dog, mon *health.Monitor, log io.Writer, stop <-chan struct{}) {
	for {
		if err := mon.Check(time.Now(), Window); err != nil {
			fmt.Fprintf(log, "bay0: stage1: watchdog: not feeding: %v\n", err)
			fmt.Fprintln(log, event.New(event.WatchdogStarving).With("reason", err.Error()))
			for {
				time.Sleep(time.Hour)
			}
		}
		if err := dog.Feed(); err != nil {
			fmt.Fprintf(log, "bay0: stage1: watchdog: %v\n", err)
		}
		select {
		case <-stop:
			return
		case <-time.After(Window / 6):
		}
	}
}
