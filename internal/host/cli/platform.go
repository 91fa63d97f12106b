package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"alpinespine.org/spine/internal/bay0/persist"
	"alpinespine.org/spine/internal/format/bootctl"
	"alpinespine.org/spine/internal/format/initramfs"
	"alpinespine.org/spine/internal/format/keys"
	"alpinespine.org/spine/internal/format/policy"
	"alpinespine.org/spine/internal/host/kernel"
	"alpinespine.org/spine/internal/host/provision"
	"alpinespine.org/spine/internal/host/vm"
)

// platformCmds are the commands that prepare and boot machines.
func platformCmds() []command {
	return []command{kernelCmd(), initramfsCmd(), diskCmd(), vmCmd()}
}

func kernelCmd() command {
	return command{name: "kernel", synopsis: "build Spine's kernel from Debian's linux-source-6.1 and spine.config, once per machine (cached); print its image",
		flags: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			asJSON := fs.Bool("json", false, `print {"release", "image", "vmlinux", "config", "sha256", "source"}`)
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 0 {
					return errUsage
				}
				k, err := kernel.Default(ctx, env.Stderr)
				if err != nil {
					return err
				}
				if !*asJSON {
					fmt.Fprintln(env.Stdout, k.Image)
					return nil
				}
				b, err := json.MarshalIndent(k, "", "  ")
				if err != nil {
					return err
				}
				fmt.Fprintf(env.Stdout, "%s\n", b)
				return nil
			}
		}}
}

func initramfsCmd() command {
	return command{name: "initramfs", synopsis: "write the initramfs: static bay0 and the trusted keys; nothing else",
		flags: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			var pubs multi
			fs.Var(&pubs, "pub", "trusted public key (PKIX PEM); repeat for several")
			out := fs.String("out", "", "initramfs file to write (gzip newc cpio)")
			bay0 := fs.String("bay0", "", "static bay0 binary (default: bay0 beside the spine executable)")
			return func(ctx context.Context, env *Env, args []string) error {
				if len(pubs) == 0 || *out == "" || len(args) != 0 {
					return errUsage
				}
				var trusted [][]byte
				for _, p := range pubs {
					b, err := os.ReadFile(p)
					if err != nil {
						return fmt.Errorf("read public key: %w", err)
					}
					trusted = append(trusted, b)
				}
				b := *bay0
				var err error
				if b == "" {
					if b, err = besideExecutable("bay0"); err != nil {
						return err
					}
				}
				bin, err := os.ReadFile(b)
				if err != nil {
					return fmt.Errorf("read bay0: %w", err)
				}
				return writeAtomic(*out, func(f *os.File) error {
					return initramfs.Build(f, initramfs.Spec{Bay0: bin, TrustedKeys: trusted})
				})
			}
		}}
}

func diskCmd() command {
	return command{name: "disk", synopsis: "write a GPT machine disk: bay0-state, spine-a, spine-b, persist, and the first boot record; or, with --update DISK IMG, stage an update offline",
		usage: "| --update DISK IMG --pub PUB",
		flags: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			upd := fs.Bool("update", false, "stage IMG into the inactive slot of a stopped machine's DISK, as bay0 would (needs --pub)")
			var pubs multi
			fs.Var(&pubs, "pub", "trusted public key (PKIX PEM), for stage 0 and --update; repeat for several")
			a := fs.String("a", "", "image for slot A (required)")
			b := fs.String("b", "", "image for slot B (empty slot if not given)")
			out := fs.String("out", "", "disk image to write")
			slot := fs.String("size-slot", "", "size of each slot, e.g. 64MiB (default: twice the larger image, at least 16MiB)")
			persistSize := fs.String("persist-size", "64MiB", "size of the persist partition (LUKS2 over ext4, at least 32MiB)")
			passFile := fs.String("passphrase-file", "", "file holding the /persist passphrase on one line (default: ask twice on the terminal, without echo)")
			kdf := addKDFFlags(fs)
			boot := addBootFlags(fs)
			return func(ctx context.Context, env *Env, args []string) error {
				if *upd {
					if len(args) != 2 || len(pubs) == 0 {
						return errUsage
					}
					trusted, err := keys.LoadPublic(pubs...)
					if err != nil {
						return err
					}
					m, slot, err := provision.Stage(args[0], args[1], trusted)
					if err != nil {
						return err
					}
					fmt.Fprintf(env.Stdout, "staged %s v%d in slot %s of %s; it boots as a trial next time\n", m.Name, m.Version, bootctl.SlotName(slot), args[0])
					return nil
				}
				if *a == "" || *out == "" || len(args) != 0 {
					return errUsage
				}
				var slotSize int64
				if *slot != "" {
					s, err := policy.ParseSize(*slot)
					if err != nil {
						return err
					}
					slotSize = int64(s)
				}
				ps, err := policy.ParseSize(*persistSize)
				if err != nil {
					return err
				}
				k, err := kdf.kdf(fs)
				if err != nil {
					return err
				}
				esp, espSize, err := boot.files(ctx, env, pubs)
				if err != nil {
					return err
				}
				epoch, err := sourceDateEpoch(env)
				if err != nil {
					return err
				}
				var stamp time.Time
				if epoch >= 0 {
					stamp = time.Unix(epoch, 0)
				}
				pass, err := diskPassphrase(ctx, env, *passFile)
				if err != nil {
					return err
				}
				defer persist.Wipe(pass)
				if err := provision.Create(provision.Options{Out: *out, A: *a, B: *b, SlotSize: slotSize, PersistSize: int64(ps),
					Seed: *out, Passphrase: pass, KDF: k, ESP: esp, ESPSize: espSize, Time: stamp}); err != nil {
					return err
				}
				fmt.Fprintf(env.Stdout, "wrote %s\n", *out)
				return nil
			}
		}}
}

// doorParams are kernel parameters that open a door on other systems (another init, a rescue
// shell, a single-user mode). bay0 ignores them; spine vm refuses to pass them at all.
var doorParams = []string{"init=", "rdinit=", "rd.break", "rd.shell", "single", "emergency", "rescue",
	"systemd.unit=", "s", "1", "-s", "break=", "rd.emergency", "sulogin"}

// CheckCmdline refuses kernel parameters that would open a door.
func CheckCmdline(cmdline string) error {
	for _, w := range strings.Fields(cmdline) {
		lw := strings.ToLower(w)
		for _, d := range doorParams {
			if lw == d || strings.HasSuffix(d, "=") && strings.HasPrefix(lw, d) {
				return fmt.Errorf("kernel parameter %q is refused: it opens a door bay0 keeps shut", w)
			}
		}
	}
	return nil
}

// vm exit statuses: how the machine ended.
const (
	exitPoweredOff   = 0
	exitPanicked     = 3
	exitTooManyBoots = 4
	exitTimedOut     = 5
)

func vmCmd() command {
	return command{name: "vm", synopsis: "boot a machine disk under QEMU; the exit status says how it ended (0 powered off, 3 panicked, 4 rebooted too often, 5 timed out)",
		flags: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			diskPath := fs.String("disk", "", "machine disk")
			uefiVars := fs.String("uefi-vars", "", "boot through UEFI firmware (OVMF, Secure Boot, q35 with SMM) with this variable store (spine uefi-vars) as the machine's NVRAM: the disk alone boots, no kernel, initramfs or command line from the host")
			initrd := fs.String("initrd", "", "initramfs: boot directly with kernel and initramfs from the host, the fast mode without firmware (tests)")
			kern := fs.String("kernel", "", "kernel (default: Spine's kernel, built on first use)")
			ctl := fs.String("ctl", "", "expose the bay0.ctl control port as this unix socket")
			timeout := fs.Duration("timeout", 0, "stop the machine after this long (0: never)")
			boots := fs.Int("max-boots", 3, "stop the machine when it starts booting more often than this")
			appendArgs := fs.String("append", "", "extra kernel parameters (door-opening ones are refused)")
			mem := fs.Int("memory", 512, "guest memory in MiB")
			passFile := fs.String("passphrase-file", "", "answer the guest's /persist passphrase prompt with this file's passphrase (default: type it; the terminal's echo is off while the machine runs)")
			verbose := fs.Bool("verbose", false, "show the whole console (firmware and kernel boot logs), not only bay0's and the personas' lines")
			outbound := fs.Bool("outbound", false, "let the machine's network card, and so the personas with an uplink, reach the host's network and beyond (QEMU user networking without restrict=on; DNS at 10.0.2.3); off, nothing inside reaches out")
			var fwd multi
			fs.Var(&fwd, "forward", "forward a port of the host's 127.0.0.1 to the guest, HOST:GUEST (guest "+vm.DefaultGuestAddr+") or HOST:GUESTIP:GUEST; repeatable")
			return func(ctx context.Context, env *Env, args []string) error {
				if *diskPath == "" || len(args) != 0 {
					return errUsage
				}
				display := env.Stdout
				if !*verbose {
					display = vm.QuietConsole(env.Stdout)
				}
				cfg := vm.Config{Disk: *diskPath, CtlSocket: *ctl, Timeout: *timeout, Outbound: *outbound,
					MaxBoots: *boots, MemoryMiB: *mem, Console: display, Stdin: env.Stdin}
				if *initrd == "" && *uefiVars == "" {
					return fmt.Errorf("spine vm boots the disk through UEFI firmware, as hardware does: give --uefi-vars VARS (spine uefi-vars --cert uefi.crt --out VARS); --initrd selects the fast direct kernel boot instead")
				}
				if *uefiVars != "" {
					fw, err := firmware(*uefiVars, *kern, *initrd, *appendArgs)
					if err != nil {
						return err
					}
					cfg.Firmware = fw
				} else {
					if *initrd == "" {
						return errUsage
					}
					if err := CheckCmdline(*appendArgs); err != nil {
						return err
					}
					k := *kern
					if k == "" {
						kk, err := kernel.Default(ctx, env.Stderr)
						if err != nil {
							return err
						}
						k = kk.Vmlinux
					}
					cfg.Kernel, cfg.Initrd, cfg.Cmdline = k, *initrd, *appendArgs
				}
				if *passFile != "" {
					pass, err := passphraseFile(*passFile)
					if err != nil {
						return err
					}
					// The console's only input is the answer to the prompt.
					ans := vm.NewAnswerer(pass)
					persist.Wipe(pass)
					defer ans.Close()
					cfg.Console, cfg.Stdin = io.MultiWriter(display, ans), ans
				} else if in, ok := env.Stdin.(*os.File); ok && isTerminal(in) {
					// The guest turns its echo off for the prompt; the host terminal must not
					// echo the passphrase either. Lines still go out on Enter, and ^C still
					// stops the machine.
					restore, err := echoOff(in, false)
					if err != nil {
						return err
					}
					defer restore()
				}
				for _, f := range fwd {
					fw, err := ParseForward(f)
					if err != nil {
						return err
					}
					cfg.Forwards = append(cfg.Forwards, fw)
				}
				m, err := vm.Start(ctx, cfg)
				if err != nil {
					return err
				}
				res, err := m.Wait()
				if err != nil && !errors.Is(err, context.Canceled) {
					return err
				}
				fmt.Fprintf(env.Stderr, "spine vm: machine %s after %d boot(s) in %s\n", res.Outcome, res.Boots, res.Duration.Round(time.Millisecond))
				switch res.Outcome {
				case vm.PoweredOff:
					return nil
				case vm.Panicked:
					return &ExitError{Code: exitPanicked, Err: errors.New("the machine panicked")}
				case vm.TooManyBoots:
					return &ExitError{Code: exitTooManyBoots, Err: errors.New("the machine rebooted too often")}
				case vm.TimedOut:
					return &ExitError{Code: exitTimedOut, Err: errors.New("the machine timed out")}
				}
				return &ExitError{Code: 1, Err: fmt.Errorf("the machine ended: %s", res.Outcome)}
			}
		}}
}

// writeAtomic writes a file beside its final name and renames it into place.
func writeAtomic(path string, write func(*os.File) error) error {
	f, err := os.CreateTemp(dirOf(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := write(f); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("close %s: %w", path, err)
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

func dirOf(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i+1]
	}
	return "."
}

// ParseForward parses a --forward value: HOST:GUEST, which reaches vm.DefaultGuestAddr, or
// HOST:GUESTIP:GUEST, which reaches a persona's uplink address.
func ParseForward(s string) (vm.Forward, error) {
	parts := strings.Split(s, ":")
	var f vm.Forward
	var err1, err2 error
	switch len(parts) {
	case 2:
		f.HostPort, err1 = strconv.Atoi(parts[0])
		f.GuestPort, err2 = strconv.Atoi(parts[1])
	case 3:
		f.HostPort, err1 = strconv.Atoi(parts[0])
		f.GuestAddr = parts[1]
		f.GuestPort, err2 = strconv.Atoi(parts[2])
		if a, err := netip.ParseAddr(f.GuestAddr); err != nil || !a.Is4() {
			return vm.Forward{}, fmt.Errorf("forward %q: %q is not an IPv4 address", s, f.GuestAddr)
		}
	default:
		return vm.Forward{}, fmt.Errorf("forward %q is not HOST:GUEST or HOST:GUESTIP:GUEST", s)
	}
	if err1 != nil || err2 != nil || f.HostPort < 1 || f.HostPort > 65535 || f.GuestPort < 1 || f.GuestPort > 65535 {
		return vm.Forward{}, fmt.Errorf("forward %q: ports must be numbers in 1-65535", s)
	}
	return f, nil
}
