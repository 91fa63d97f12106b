package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"alpinespine.org/spine/internal/bay0/control"
	"alpinespine.org/spine/internal/format/courier"
	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/host/ctlclient"
)

func ctlCmd() command {
	verbs := make([]string, 0, len(control.Verbs()))
	for _, v := range control.Verbs() {
		verbs = append(verbs, string(v))
	}
	return command{name: "ctl", synopsis: "ask bay0 over its control channel (verbs: " + strings.Join(verbs, ", ") + ")",
		usage: "VERB [NAME] | logs [NAME] [--follow] | update IMG [--reboot]",
		flags: func(fs *flag.FlagSet) func(context.Context, *Env, []string) error {
			socket := fs.String("socket", "", "the machine's control line: the unix socket of its bay0.ctl port (spine vm --ctl), unix://PATH, or tcp://HOST:PORT (a console server or a BMC's serial over LAN)")
			asJSON := fs.Bool("json", false, "print the raw result JSON")
			timeout := fs.Duration("timeout", 10*time.Second, "give up waiting for the answer after this long")
			reboot := fs.Bool("reboot", false, "update: reboot into the new Spine once it is staged")
			events := fs.Bool("events", false, "logs: print only bay0's event lines (bay0: event=...)")
			follow := fs.Bool("follow", false, "logs: keep printing new lines as they come, until interrupted")
			return func(ctx context.Context, env *Env, args []string) error {
				if *socket == "" || len(args) == 0 || len(args) > 2 {
					return errUsage
				}
				if args[0] == string(control.VerbUpdate) {
					if len(args) != 2 {
						return errUsage
					}
					if strings.HasPrefix(args[1], courier.Scheme) {
						// The courier's fetch takes as long as the registry and the network
						// need: the default answer timeout is for quick verbs.
						wait := 30 * time.Minute
						fs.Visit(func(f *flag.Flag) {
							if f.Name == "timeout" {
								wait = *timeout
							}
						})
						return ctlFetch(ctx, env, *socket, args[1], wait, *reboot, *asJSON)
					}
					return ctlUpdate(ctx, env, *socket, args[1], *reboot, *asJSON)
				}
				req := control.Request{V: control.Version, Verb: control.Verb(args[0])}
				if len(args) == 2 {
					req.Name = args[1]
				}
				// Refuse locally what the governor would refuse, with the same words.
				if err := req.Validate(); err != nil {
					return err
				}
				if *follow && req.Verb != control.VerbLogs {
					return errUsage
				}
				c, err := ctlclient.Dial(*socket)
				if err != nil {
					return err
				}
				defer c.Close()
				if *follow {
					return followLogs(ctx, env.Stdout, env.Stderr, c, req, *timeout, *events)
				}
				if *timeout > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, *timeout)
					defer cancel()
				}
				resp, err := c.Call(ctx, req)
				if err != nil {
					return remoteError(err)
				}
				if *asJSON {
					_, err := fmt.Fprintf(env.Stdout, "%s\n", resp.Result)
					return err
				}
				return printResult(env.Stdout, req, resp, *events)
			}
		}}
}

// remoteError makes the governor's refusal an exit status 1 with its words; other errors pass.
func remoteError(err error) error {
	var re *ctlclient.RemoteError
	if errors.As(err, &re) {
		return &ExitError{Code: 1, Err: fmt.Errorf("bay0: %s", re.Message)}
	}
	return err
}

// followEvery is how often spine ctl logs --follow asks for new lines.
const followEvery = 500 * time.Millisecond

// followLogs prints the lines kept, then every new line, asking for those after the last it
// has, until ctx ends (an interrupt); each request has its own timeout. Lines pushed out of the
// ring between two requests are counted on stderr, never silently skipped.
func followLogs(ctx context.Context, out, errOut io.Writer, c *ctlclient.Client, req control.Request, timeout time.Duration, onlyEvents bool) error {
	tick := time.NewTicker(followEvery)
	defer tick.Stop()
	for first := true; ; first = false {
		cctx, cancel := ctx, context.CancelFunc(func() {})
		if timeout > 0 {
			cctx, cancel = context.WithTimeout(ctx, timeout)
		}
		resp, err := c.Call(cctx, req)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return remoteError(err)
		}
		var l control.LogsResult
		if err := resp.Decode(&l); err != nil {
			return err
		}
		switch {
		case l.Next < req.After:
			fmt.Fprintln(errOut, "spine ctl logs: the machine restarted; its lines follow")
		case !first && l.First > req.After+1:
			fmt.Fprintf(errOut, "spine ctl logs: %d lines were pushed out before they could be read\n", l.First-req.After-1)
		}
		if err := printLines(out, l.Lines, onlyEvents); err != nil {
			return err
		}
		req.After = l.Next
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// printLines prints log lines; onlyEvents keeps only bay0's event lines.
func printLines(w io.Writer, lines []string, onlyEvents bool) error {
	for _, line := range lines {
		if _, err := event.Parse(line); onlyEvents && err != nil {
			continue
		}
		if _, err := fmt.Fprintln(w, line); err != nil {
			return err
		}
	}
	return nil
}

// printResult prints an answer for people; onlyEvents keeps only the event lines of logs.
func printResult(w io.Writer, req control.Request, resp control.Response, onlyEvents bool) error {
	switch req.Verb {
	case control.VerbStatus:
		var s control.StatusInfo
		if err := resp.Decode(&s); err != nil {
			return err
		}
		return printStatus(w, s)
	case control.VerbPersonas:
		var p control.PersonasResult
		if err := resp.Decode(&p); err != nil {
			return err
		}
		return printPersonas(w, p.Personas)
	case control.VerbLogs:
		var l control.LogsResult
		if err := resp.Decode(&l); err != nil {
			return err
		}
		return printLines(w, l.Lines, onlyEvents)
	}
	what := string(req.Verb)
	if req.Name != "" {
		what += " " + req.Name
	}
	_, err := fmt.Fprintf(w, "ok: %s\n", what)
	return err
}

func printStatus(w io.Writer, s control.StatusInfo) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "spine:\t%s v%d (slot %s)\n", s.Spine, s.Version, s.Slot)
	fmt.Fprintf(tw, "kernel:\t%s\n", kernelLine(s.Kernel))
	fmt.Fprintf(tw, "uptime:\t%s\n", ms(s.UptimeMS))
	fmt.Fprintf(tw, "persist:\t%s\n", yesNo(s.PersistMounted, "mounted", "not mounted"))
	wd := "disabled"
	if s.Watchdog.Enabled {
		wd = fmt.Sprintf("enabled, timeout %s, not fed yet", ms(s.Watchdog.TimeoutMS))
		if f := s.Watchdog.SinceFeedMS; f != nil {
			wd = fmt.Sprintf("enabled, timeout %s, fed %s ago", ms(s.Watchdog.TimeoutMS), ms(*f))
		}
	}
	fmt.Fprintf(tw, "watchdog:\t%s\n", wd)
	fmt.Fprintf(tw, "min version:\t%d\n", s.MinVersion)
	fmt.Fprintf(tw, "last reset:\t%s\n", orDash(s.LastReset))
	if !s.Committed {
		fmt.Fprintf(tw, "committed:\tno\n")
	}
	for _, m := range s.Missing {
		fmt.Fprintf(tw, "missing:\t%s\n", m)
	}
	if len(s.Boot) > 0 {
		var parts []string
		for _, p := range s.Boot {
			parts = append(parts, fmt.Sprintf("%s %s", p.Name, ms(uint64(max(p.MS, 0)))))
		}
		fmt.Fprintf(tw, "boot:\t%s\n", strings.Join(parts, ", "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tSTATE\tVERSION\tTRIES\tREASON")
	for _, sl := range s.Slots {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", sl.Slot, sl.State, sl.Version, sl.TriesLeft, orDash(sl.Reason))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(s.Personas) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "PERSONA\tSTATE\tRESTARTS\tCPU\tMEMORY\tHEALTH\tLAST EXIT")
		for _, p := range s.Personas {
			cpu, mem := usage(p)
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", p.Name, p.State, p.Restarts, cpu, mem, orDash(p.Health), orDash(p.LastExit))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	for _, d := range s.Denied {
		if _, err := fmt.Fprintln(w, d); err != nil {
			return err
		}
	}
	return nil
}

// kernelLine is the running kernel in one line, with its hash when stage 0 checked it.
func kernelLine(k control.KernelInfo) string {
	line := orDash(k.Release)
	if k.Version != "" {
		line += " (" + k.Version + ")"
	}
	if k.SHA256 == "" {
		return line + ", not the slot's own kernel (direct boot)"
	}
	return line + ", the slot's, sha256 " + k.SHA256
}

func printPersonas(w io.Writer, ps []control.PersonaInfo) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tPID\tRESTARTS\tCPU\tMEMORY\tCPU.MAX\tMEMORY.MAX\tPIDS.MAX\tHEALTH\tLAST EXIT")
	for _, p := range ps {
		pid := "-"
		if p.PID > 0 {
			pid = fmt.Sprint(p.PID)
		}
		cpu, mem := usage(p)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, p.State, pid, p.Restarts, cpu, mem,
			orDash(p.Limits.CPUMax), orDash(p.Limits.MemoryMax), orDash(p.Limits.PidsMax), orDash(p.Health), orDash(p.LastExit))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, p := range ps {
		for _, d := range p.Denied {
			if _, err := fmt.Fprintf(w, "persona %s: denied syscall %s\n", p.Name, d); err != nil {
				return err
			}
		}
	}
	return nil
}

// usage renders a running persona's CPU share and memory use ("-" when it is not running).
func usage(p control.PersonaInfo) (cpu, mem string) {
	if p.PID == 0 {
		return "-", "-"
	}
	return fmt.Sprintf("%.1f%%", p.CPUPercent), fmt.Sprintf("%.1fMiB", float64(p.MemoryBytes)/(1<<20))
}

func ms(v uint64) string { return (time.Duration(v) * time.Millisecond).String() }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(b bool, yes, no string) string {
	if b {
		return yes
	}
	return no
}

// ctlFetch asks bay0 to have its courier persona fetch the Spine named by digest, then
// reboots into it if asked.
func ctlFetch(ctx context.Context, env *Env, socket, source string, wait time.Duration, reboot, asJSON bool) error {
	req := control.Request{V: control.Version, Verb: control.VerbUpdate, Source: source}
	if err := req.Validate(); err != nil {
		return err
	}
	c, err := ctlclient.Dial(socket)
	if err != nil {
		return err
	}
	defer c.Close()
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	fmt.Fprintf(env.Stderr, "update: bay0's courier fetches %s\n", source)
	r, err := c.Fetch(cctx, source)
	if err != nil {
		return remoteError(err)
	}
	return staged(ctx, env, c, r, time.Since(start), reboot, asJSON)
}

// ctlUpdate streams a signed Spine to bay0 with a progress bar, then reboots into it if asked.
func ctlUpdate(ctx context.Context, env *Env, socket, img string, reboot, asJSON bool) error {
	c, err := ctlclient.Dial(socket)
	if err != nil {
		return err
	}
	defer c.Close()
	start := time.Now()
	var bar *progress
	r, err := c.UpdateImage(ctx, img, func(sent, total int64) {
		if bar == nil {
			bar = newProgress(env.Stderr, total)
		}
		bar.set(sent)
	})
	if bar != nil {
		bar.done()
	}
	if err != nil {
		return remoteError(err)
	}
	return staged(ctx, env, c, r, time.Since(start), reboot, asJSON)
}

// staged reports a staged update and reboots into it if asked.
func staged(ctx context.Context, env *Env, c *ctlclient.Client, r control.UpdateResult, el time.Duration, reboot, asJSON bool) error {
	if asJSON {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "%s\n", b)
	} else {
		fmt.Fprintf(env.Stdout, "staged %s v%d in slot %s (%d bytes in %s, %.1f MB/s); it boots as a trial next time\n",
			r.Name, r.Version, r.Slot, r.Bytes, el.Round(time.Millisecond), float64(r.Bytes)/el.Seconds()/1e6)
	}
	if !reboot {
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := c.Call(rctx, control.Request{Verb: control.VerbReboot}); err != nil {
		return fmt.Errorf("reboot after update: %w", err)
	}
	fmt.Fprintln(env.Stdout, "rebooting into the new Spine")
	return nil
}

// progress draws a one-line progress bar on a terminal-ish writer.
type progress struct {
	w     io.Writer
	total int64
	last  int
}

func newProgress(w io.Writer, total int64) *progress { return &progress{w: w, total: total, last: -1} }

func (p *progress) set(n int64) {
	pct := int(n * 100 / max(p.total, 1))
	if pct == p.last {
		return
	}
	p.last = pct
	fill := pct / 4
	fmt.Fprintf(p.w, "\rupdate [%s%s] %3d%% %d/%d bytes", strings.Repeat("#", fill), strings.Repeat(".", 25-fill), pct, n, p.total)
}

func (p *progress) done() { fmt.Fprintln(p.w) }
