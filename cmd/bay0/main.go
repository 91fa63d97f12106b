// Command bay0 is the only PID 1 of an Alpine Spine machine. From the initramfs it is stage 1
// (the boot law); re-executed from the verified Spine it is the governor. Whatever happens, it
// ends in exactly one place: a reboot or a power off, never a shell.
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"

	"alpinespine.org/spine/internal/bay0/governor"
	"alpinespine.org/spine/internal/bay0/halt"
	"alpinespine.org/spine/internal/bay0/persist"
	"alpinespine.org/spine/internal/bay0/personainit"
	"alpinespine.org/spine/internal/bay0/stage1"
)

func main() {
	console := os.Stdout
	// A persona's init is persona-init (/bin/persona-init, its own program), never bay0. A bay0
	// started in a persona's user namespace, which kernel command line arguments cannot fake,
	// is neither stage 1 nor the governor: it stops at once.
	if personainit.Inside() {
		fmt.Fprintln(os.Stderr, "bay0: inside a persona, bay0 does not run")
		os.Exit(2)
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "bay0: must run as PID 1")
		os.Exit(2)
	}
	// Kernel command line words reach init as arguments and environment; none of them is
	// obeyed. Only the argument stage 1 itself passes selects the governor.
	booting := len(os.Args) < 2 || os.Args[1] != "governor" || os.Args[0] != "/bin/bay0"
	// hooks are asked for when the machine goes down: the governor's depend on how far its boot
	// got.
	hooks := func() []halt.Hook { return nil }
	defer func() {
		if r := recover(); r != nil {
			action := halt.Reboot
			if booting {
				action = halt.PowerOff
			}
			fmt.Fprintf(console, "bay0: panic: %v\n%s", r, debug.Stack())
			halt.Now(console, action, fmt.Sprintf("panic: %v", r), hooks()...)
		}
	}()
	var err error
	if booting {
		err = stage1.Run(stage1.Linux{Log: console}, console)
		// The Spine's bay0 is this binary: it governs from here, as if it had been exec'd.
		booting = !errors.Is(err, stage1.ErrGovernHere)
	}
	if !booting {
		g := governor.New(console)
		// The reason is recorded first, then /persist is closed.
		hooks = func() []halt.Hook { return append(g.HaltHooks(), persist.CloseHook(console)) }
		err = g.Run()
	}
	action, reason := halt.Decide(err, booting)
	halt.Now(console, action, reason, hooks()...)
}
