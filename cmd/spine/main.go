// Command spine is the operator's tool for Alpine Spine: keys, images, disks, virtual machines
// and the control channel. The logic lives in internal/host/cli.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"alpinespine.org/spine/internal/bay0/launch"
	"alpinespine.org/spine/internal/bay0/personainit"
	"alpinespine.org/spine/internal/host/cli"
)

func main() {
	// spine run re-executes this binary as the persona's init (a Spine has /bin/persona-init).
	if len(os.Args) > 1 && os.Args[1] == launch.InitArg {
		personainit.Main(os.Args[2:])
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], &cli.Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv})
	stop()
	os.Exit(code)
}
