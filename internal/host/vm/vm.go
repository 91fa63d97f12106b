// Package vm runs one QEMU virtual machine and judges how its run ended.
//
// A Machine boots a kernel (optionally with an initramfs and one raw disk) under QEMU with
// the platform's fixed device set: serial console on QEMU's stdio, an i6300esb watchdog
// that resets the machine, a pvpanic device that turns a guest panic into QEMU exit status 1,
// an optional virtio-serial control port and optional user-mode networking with host port
// forwards. Every console line is kept; WaitFor reads them through a cursor.
//
// A run ends in exactly one Outcome. The machine is killed (SIGKILL to QEMU's own process
// group) when the context is cancelled, when Kill is called, when Config.Timeout passes, or
// when the guest boots more often than Config.MaxBoots allows. QEMU is never left running:
// it also receives SIGKILL if the process that started it dies (PR_SET_PDEATHSIG).
//
// Typical use:
//
//	m, err := vm.Start(ctx, vm.Config{Kernel: k, Initrd: i, Disk: d, Timeout: time.Minute})
//	up, err := m.WaitForEvent(event.SlotUp, nil, 30*time.Second)
//	res, err := m.Wait()
package vm

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Defaults applied by Start to zero Config fields.
const (
	DefaultQEMU      = "qemu-system-x86_64"
	DefaultMemoryMiB = 512
	DefaultCPUs      = 1
	DefaultMaxBoots  = 1
)

// BaseCmdline starts every kernel command line: the console on the serial line. Nothing else:
// that a panicking kernel reboots at once (which either ends the run through pvpanic, exit
// status 1, or counts as another boot) is Spine's kernel's own configuration
// (CONFIG_PANIC_TIMEOUT=-1), as on any other boot path.
const BaseCmdline = "console=ttyS0"

// CtlPortName is the virtio-serial port name under which the guest sees the control channel
// (/dev/virtio-ports/bay0.ctl).
const CtlPortName = "bay0.ctl"

// Accelerators accepted in Config.Accel.
const (
	AccelAuto = ""
	AccelKVM  = "kvm"
	AccelTCG  = "tcg"
)

// maxSocketPath is the longest path that fits sockaddr_un.sun_path with its NUL byte.
const maxSocketPath = 107

// bannerPrefix starts the first line every Linux boot prints; seeing it again means the
// machine rebooted inside the same QEMU process.
const bannerPrefix = "Linux version "

// Outcome is how a run ended.
type Outcome int

// The zero Outcome is deliberately invalid so an unset Result never reads as a power-off.
const (
	// PoweredOff: QEMU exited with status 0 (the guest powered the machine off).
	PoweredOff Outcome = iota + 1
	// Panicked: QEMU exited with status 1 after the guest booted, which is what
	// "-action panic=exit-failure" does when the guest's pvpanic driver reports a panic.
	Panicked
	// TooManyBoots: the guest started booting more than Config.MaxBoots times; killed.
	TooManyBoots
	// TimedOut: Config.Timeout passed; killed.
	TimedOut
	// Killed: Kill was called or the context was cancelled.
	Killed
	// Failed: QEMU ended any other way (bad arguments, a crash, a foreign signal).
	Failed
)

var outcomeNames = [...]string{
	PoweredOff:   "powered-off",
	Panicked:     "panicked",
	TooManyBoots: "too-many-boots",
	TimedOut:     "timed-out",
	Killed:       "killed",
	Failed:       "failed",
}

// String returns a short lower-case name such as "powered-off".
func (o Outcome) String() string {
	if o >= PoweredOff && int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "Outcome(" + strconv.Itoa(int(o)) + ")"
}

// Forward forwards a TCP port on the host's 127.0.0.1 to a port of the guest.
type Forward struct {
	HostPort  int
	GuestPort int
	// GuestAddr is the guest's IPv4 address on the user-mode network (10.0.2.0/24), e.g. a
	// persona's uplink; "" is QEMU's default, DefaultGuestAddr.
	GuestAddr string
}

// DefaultGuestAddr is the guest address a Forward without GuestAddr reaches: the first address
// QEMU's user-mode network hands out.
const DefaultGuestAddr = "10.0.2.15"

// Config describes one machine. Zero fields take the defaults named on each field.
type Config struct {
	// QEMU is the emulator binary, looked up in PATH; default DefaultQEMU.
	QEMU string
	// Kernel is required unless Firmware is set. Initrd and Disk are optional; Disk is a raw
	// image attached as a virtio-blk device (/dev/vda).
	Kernel, Initrd, Disk string
	// Firmware, if set, boots the machine as hardware boots: UEFI firmware finds the boot
	// program on Disk's EFI system partition. Kernel, Initrd and Cmdline must then be empty:
	// nothing reaches the machine but the disk.
	Firmware *Firmware
	// Cmdline is appended to BaseCmdline. Linux lets a later parameter override an earlier
	// one, so "panic=0" here makes a panic hang instead of reboot.
	Cmdline string
	// MemoryMiB is the guest RAM; default DefaultMemoryMiB.
	MemoryMiB int
	// CPUs is the number of virtual CPUs; default DefaultCPUs.
	CPUs int
	// SerialBreak multiplexes the console (QEMU's mux chardev) so that the bytes "\x01b" sent
	// to it become a BREAK on the guest's serial line, as a person at a real UART can send: the
	// first half of a serial SysRq. Tests only; other console input is passed through as is.
	SerialBreak bool
	// CtlSocket, if set, exposes the virtio-serial port CtlPortName as a listening unix
	// socket at this path (at most 107 bytes long). QEMU does not wait for a client.
	CtlSocket string
	// Net adds a user-mode network card (virtio-net, restrict=on: the guest reaches nothing
	// outside, and only Forwards come in). Forwards imply it.
	Net bool
	// Forwards are TCP ports of the host's 127.0.0.1 forwarded into the guest.
	Forwards []Forward
	// Outbound lets the guest's network card reach the host's network and beyond (QEMU's
	// user networking without restrict=on, with its DNS at 10.0.2.3). Off, the guest reaches
	// nothing outside and only Forwards come in. It implies Net.
	Outbound bool
	// Console receives every console byte as it arrives, unmodified. May be nil. Its
	// write errors are ignored: a broken log must not change the run.
	Console io.Writer
	// Stdin, if set, is copied to the guest console and Send is refused. It always goes
	// through a pipe, never handed to QEMU as a file, so QEMU never touches a terminal; a
	// caller wanting the guest to control echo (the LUKS prompt) puts its terminal in raw
	// mode itself. If Stdin is nil, only Send writes to the console.
	Stdin io.Reader
	// MaxBoots is how many times the guest may start booting (a guest reboot restarts
	// inside the same QEMU process; boots are counted by the kernel's "Linux version "
	// banner line); default DefaultMaxBoots. The next banner kills the machine with
	// Outcome TooManyBoots.
	MaxBoots int
	// Timeout limits the whole run; past it the machine is killed with Outcome TimedOut.
	// Zero means no limit other than the context's.
	Timeout time.Duration
	// PanicReboots leaves out the pvpanic device, so a guest kernel panic reboots the machine
	// (Spine's kernel has a panic timeout of -1) as it would on hardware, instead of ending
	// QEMU with Outcome Panicked.
	PanicReboots bool
	// Accel is AccelKVM, AccelTCG or AccelAuto (""), which uses KVM only when /dev/kvm
	// opens read-write and a probe guest runs quickly (see DetectAccel).
	Accel string
}

// Firmware is UEFI firmware in two flash chips, as on a PC: the code read-only, the variables
// (the machine's NVRAM, holding its Secure Boot keys) writable. The machine is a q35 with SMM
// and secure flash, so only the firmware's SMM code can write the variables.
type Firmware struct {
	// Code is the firmware image (e.g. ovmf.Code); it is never written.
	Code string
	// Vars is the variable store; the firmware writes to it (boot entries, counters), so a
	// caller that wants the same start every run passes a fresh copy.
	Vars string
}

// Result is the verdict on a finished run.
type Result struct {
	Outcome Outcome
	// Boots counts the kernel banners seen before the machine was killed, including the
	// one past MaxBoots: MaxBoots+1 for Outcome TooManyBoots.
	Boots int
	// ExitCode is QEMU's exit status, or -1 if a signal ended it.
	ExitCode int
	// Duration runs from Start to QEMU's exit.
	Duration time.Duration
}

// Errors returned by this package.
var (
	// ErrWaitTimeout: the awaited console line did not arrive in time.
	ErrWaitTimeout = errors.New("console line did not arrive in time")
	// ErrExited: the machine ended before the awaited console line arrived.
	ErrExited = errors.New("machine exited before the console line arrived")
	// ErrStdinConfigured: Send was called although Config.Stdin feeds the console.
	ErrStdinConfigured = errors.New("console input comes from Config.Stdin")
	// ErrQEMUNotFound: the QEMU binary is not installed.
	ErrQEMUNotFound = errors.New("qemu not found (install the Debian package qemu-system-x86)")
)

// WaitError reports a WaitFor or WaitForAny that did not see its line. It unwraps to
// ErrWaitTimeout or ErrExited.
type WaitError struct {
	Want    []string
	Timeout time.Duration
	Err     error
	// Tail holds the last console lines, oldest first.
	Tail []string
}

// Error names the awaited substrings and quotes the console tail.
func (e *WaitError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "wait for %q (timeout %v): %v", e.Want, e.Timeout, e.Err)
	if len(e.Tail) == 0 {
		b.WriteString("; no console output")
		return b.String()
	}
	fmt.Fprintf(&b, "; last %d console lines:", len(e.Tail))
	for _, l := range e.Tail {
		b.WriteString("\n\t| ")
		b.WriteString(l)
	}
	return b.String()
}

// Unwrap returns ErrWaitTimeout or ErrExited.
func (e *WaitError) Unwrap() error { return e.Err }

// ExitError reports a run whose Outcome is Failed, with the end of QEMU's stderr.
type ExitError struct {
	Result Result
	Stderr string
}

// Error gives the exit status and the end of QEMU's stderr.
func (e *ExitError) Error() string {
	msg := fmt.Sprintf("qemu exited with status %d after %d boots", e.Result.ExitCode, e.Result.Boots)
	if s := strings.TrimSpace(e.Stderr); s != "" {
		msg += ": " + s
	}
	return msg
}

// withDefaults returns cfg with zero fields replaced by their defaults.
func withDefaults(cfg Config) Config {
	if cfg.QEMU == "" {
		cfg.QEMU = DefaultQEMU
	}
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = DefaultMemoryMiB
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = DefaultCPUs
	}
	if cfg.MaxBoots == 0 {
		cfg.MaxBoots = DefaultMaxBoots
	}
	return cfg
}

// validate checks the fields that need no file system. Precondition: withDefaults ran.
func validate(cfg Config) error {
	if cfg.Firmware != nil {
		if cfg.Kernel != "" || cfg.Initrd != "" || cfg.Cmdline != "" {
			return errors.New("config: a firmware boot takes no kernel, initrd or command line from the host")
		}
		if cfg.Firmware.Code == "" || cfg.Firmware.Vars == "" || cfg.Disk == "" {
			return errors.New("config: a firmware boot needs the firmware code, its variable store and a disk")
		}
	} else if cfg.Kernel == "" {
		return errors.New("config: no kernel")
	}
	if cfg.MemoryMiB < 0 || cfg.CPUs < 0 || cfg.MaxBoots < 0 || cfg.Timeout < 0 {
		return errors.New("config: negative MemoryMiB, CPUs, MaxBoots or Timeout")
	}
	switch cfg.Accel {
	case AccelAuto, AccelKVM, AccelTCG:
	default:
		return fmt.Errorf("config: unknown accelerator %q", cfg.Accel)
	}
	if len(cfg.CtlSocket) > maxSocketPath {
		return fmt.Errorf("config: control socket path %q is longer than %d bytes", cfg.CtlSocket, maxSocketPath)
	}
	for _, f := range cfg.Forwards {
		if f.HostPort < 1 || f.HostPort > 65535 || f.GuestPort < 1 || f.GuestPort > 65535 {
			return fmt.Errorf("config: port forward %d->%d out of range 1-65535", f.HostPort, f.GuestPort)
		}
		if f.GuestAddr != "" {
			if a, err := netip.ParseAddr(f.GuestAddr); err != nil || !a.Is4() {
				return fmt.Errorf("config: port forward %d->%s:%d: guest address is not IPv4", f.HostPort, f.GuestAddr, f.GuestPort)
			}
		}
	}
	// QEMU's option parser splits on commas; a comma in a path would smuggle in options.
	paths := []string{cfg.Kernel, cfg.Initrd, cfg.Disk, cfg.CtlSocket}
	if cfg.Firmware != nil {
		paths = append(paths, cfg.Firmware.Code, cfg.Firmware.Vars)
	}
	for _, p := range paths {
		if strings.Contains(p, ",") {
			return fmt.Errorf("config: path %q contains a comma", p)
		}
	}
	return nil
}

// buildArgs returns the QEMU command line (binary first) for cfg and a resolved accelerator.
// Precondition: withDefaults and validate ran; accel is AccelKVM or AccelTCG.
func buildArgs(qemu string, cfg Config, accel string) []string {
	cpu := "qemu64,+rdrand" // without RDRAND getrandom() blocks ~4 s early in boot under TCG
	if accel == AccelKVM {
		cpu = "host" // qemu64 under KVM warns about every feature the host lacks
	}
	cmdline := BaseCmdline
	if cfg.Cmdline != "" {
		cmdline += " " + cfg.Cmdline
	}
	machine := "pc"
	if cfg.Firmware != nil {
		// SMM and a secure flash keep the variable store (the Secure Boot keys) writable by
		// the firmware's SMM code only.
		machine = "q35,smm=on"
	}
	a := []string{qemu,
		"-M", machine, "-accel", accel, "-cpu", cpu,
		"-m", strconv.Itoa(cfg.MemoryMiB), "-smp", strconv.Itoa(cfg.CPUs),
		"-nodefaults", "-no-user-config", "-display", "none",
		// signal=off: console bytes are never interpreted by QEMU (but see SerialBreak).
		"-chardev", consoleChardev(cfg), "-serial", "chardev:con",
		"-device", "i6300esb", "-action", "watchdog=reset",
	}
	if cfg.Firmware != nil {
		a = append(a,
			"-global", "driver=cfi.pflash01,property=secure,value=on",
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+cfg.Firmware.Code,
			"-drive", "if=pflash,format=raw,unit=1,file="+cfg.Firmware.Vars)
	} else {
		a = append(a, "-kernel", cfg.Kernel)
	}
	if !cfg.PanicReboots {
		a = append(a, "-device", "pvpanic", "-action", "panic=exit-failure")
	}
	if cfg.Initrd != "" {
		a = append(a, "-initrd", cfg.Initrd)
	}
	if cfg.Firmware == nil {
		a = append(a, "-append", cmdline)
	}
	if cfg.Disk != "" {
		// cache=writeback: a write the guest saw complete has reached the host page cache,
		// so it survives a SIGKILL of QEMU (the power-cut tests), and a guest flush becomes
		// fdatasync. cache=unsafe would look the same after a SIGKILL but drops flushes;
		// none/directsync need O_DIRECT, which tmpfs refuses, and are slower.
		a = append(a,
			"-drive", "file="+cfg.Disk+",format=raw,if=none,id=disk0,cache=writeback",
			"-device", "virtio-blk-pci,drive=disk0")
	}
	if cfg.CtlSocket != "" {
		a = append(a,
			"-device", "virtio-serial-pci",
			"-chardev", "socket,id=ctl,path="+cfg.CtlSocket+",server=on,wait=off",
			"-device", "virtserialport,chardev=ctl,name="+CtlPortName)
	}
	if cfg.Net || cfg.Outbound || len(cfg.Forwards) > 0 {
		// restrict=on isolates the guest from the host and the outside; explicit forwards
		// still work. Outbound access is the owner's explicit choice.
		nd := "user,id=net0,restrict=on"
		if cfg.Outbound {
			nd = "user,id=net0,restrict=off"
		}
		for _, f := range cfg.Forwards {
			nd += fmt.Sprintf(",hostfwd=tcp:127.0.0.1:%d-%s:%d", f.HostPort, f.GuestAddr, f.GuestPort)
		}
		a = append(a, "-netdev", nd, "-device", "virtio-net-pci,netdev=net0")
	}
	return a
}

// isBanner reports whether a console line is the kernel's first line of a boot, with or
// without the printk timestamp "[    0.000000] ".
func isBanner(line string) bool {
	if strings.HasPrefix(line, "[") {
		i := strings.IndexByte(line, ']')
		if i < 0 {
			return false
		}
		line = strings.TrimPrefix(line[i+1:], " ")
	}
	return strings.HasPrefix(line, bannerPrefix)
}

// classify turns QEMU's exit into an Outcome. killedBy is the reason this package killed
// QEMU (0 if it did not); it only counts if a signal actually ended QEMU, so a guest that
// powered off just before a kill still reads as PoweredOff.
func classify(exitCode int, signaled bool, killedBy Outcome, boots int) Outcome {
	switch {
	case signaled && killedBy != 0:
		return killedBy
	case signaled:
		return Failed
	case exitCode == 0:
		return PoweredOff
	case exitCode == 1 && boots > 0:
		// QEMU also exits 1 on bad arguments, but then no kernel ever printed its banner.
		return Panicked
	default:
		return Failed
	}
}

// tailWriter keeps the last max bytes written to it.
type tailWriter struct {
	max int
	buf []byte
}

func (w *tailWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	if len(w.buf) > w.max {
		w.buf = append(w.buf[:0], w.buf[len(w.buf)-w.max:]...)
	}
	return len(p), nil
}

func consoleChardev(cfg Config) string {
	if cfg.SerialBreak {
		return "stdio,id=con,signal=off,mux=on"
	}
	return "stdio,id=con,signal=off"
}
