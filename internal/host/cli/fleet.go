package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"alpinespine.org/spine/internal/format/courier"
	"alpinespine.org/spine/internal/format/image"
	"alpinespine.org/spine/internal/format/keys"
	"alpinespine.org/spine/internal/host/fleet"
)

func fleetCmd() command {
	return command{name: "fleet", synopsis: "roll a Spine across the machines of an inventory: a canary, then a share, then the rest, each gated on committing the new version; halts at the first failure, resumable", usage: "IMG",
		flags: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			inventory := fs.String("inventory", "", "inventory (TOML): [[machine]] entries with name and control (a socket path, unix://PATH or tcp://HOST:PORT)")
			var pubs multi
			fs.Var(&pubs, "pub", "trusted public key: the image is checked against it before any machine is touched (repeat for several)")
			canary := fs.Int("canary", 1, "machines in the first wave")
			percent := fs.Int("percent", 50, "share of the fleet, in percent, in the second wave; the third takes the rest")
			gate := fs.Duration("gate", 10*time.Minute, "time each machine has, from its reboot, to come back committed on the new version")
			poll := fs.Duration("poll", 2*time.Second, "interval between status checks while a machine comes back")
			statePath := fs.String("state", "", "state file that makes the rollout resumable (default: the inventory's path + .state.json)")
			retry := fs.Bool("retry-failed", false, "on resume, try again the machines that failed before")
			asJSON := fs.Bool("json", false, "print each change as a JSON line and the final states as a JSON list")
			source := fs.String("source", "", "oci://REGISTRY/REPO@sha256:DIGEST of the same image (spine push prints it): each machine's courier persona fetches it instead of the image crossing its control line")
			return func(ctx context.Context, env *Env, args []string) error {
				if len(args) != 1 || *inventory == "" || len(pubs) == 0 {
					return errUsage
				}
				trusted, err := keys.LoadPublic(pubs...)
				if err != nil {
					return err
				}
				m, err := image.CheckFile(args[0], trusted, 0)
				if err != nil {
					return fmt.Errorf("%s is not a valid Spine: %w", args[0], err)
				}
				if *source != "" {
					if _, err := courier.ParseRef(*source); err != nil {
						return err
					}
				}
				inv, err := fleet.LoadInventory(*inventory)
				if err != nil {
					return err
				}
				if *statePath == "" {
					*statePath = *inventory + ".state.json"
				}
				report := liveTable(env.Stdout)
				if *asJSON {
					enc := json.NewEncoder(env.Stdout)
					report = func(p fleet.Progress) { _ = enc.Encode(p) }
				}
				final, err := fleet.Run(ctx, inv, fleet.Options{
					Target: fleet.Target{Image: args[0], Name: m.Name, Version: m.Version, RootHash: m.RootHash},
					Canary: *canary, Percent: *percent, Gate: *gate, Poll: *poll,
					StatePath: *statePath, RetryFailed: *retry, Report: report,
				})
				if final != nil {
					if *asJSON {
						if b, jerr := json.Marshal(final); jerr == nil {
							fmt.Fprintf(env.Stdout, "%s\n", b)
						}
					} else {
						printFleet(env.Stdout, final)
					}
				}
				if errors.Is(err, fleet.ErrHalted) {
					return &ExitError{Code: 1, Err: err}
				}
				return err
			}
		}}
}

// liveTable prints one row per change as the rollout goes.
func liveTable(w io.Writer) func(fleet.Progress) {
	fmt.Fprintf(w, "%-16s %-4s %-9s %-8s %-4s %s\n", "MACHINE", "WAVE", "STATE", "VERSION", "SLOT", "DETAIL")
	return func(p fleet.Progress) { fmt.Fprintln(w, progressRow(p)) }
}

func progressRow(p fleet.Progress) string {
	detail := p.Detail
	if p.Phase == fleet.Updating {
		detail = fmt.Sprintf("%d%% sent", p.Percent)
	}
	return fmt.Sprintf("%-16s %-4d %-9s %-8s %-4s %s", p.Machine, p.Wave, p.Phase, versionOrDash(p.Version), orDash(p.Slot), detail)
}

func versionOrDash(v uint64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("v%d", v)
}

func printFleet(w io.Writer, final []fleet.Progress) {
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "MACHINE\tSTATE\tVERSION\tSLOT\tDETAIL")
	for _, p := range final {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Machine, p.Phase, versionOrDash(p.Version), orDash(p.Slot), orDash(p.Detail))
	}
	tw.Flush()
}
