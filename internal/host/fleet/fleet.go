// Package fleet rolls a signed Spine across many machines over their control lines: in waves
// (one canary, then a share of the fleet, then the rest), each machine updated, rebooted and
// gated on coming back committed on the new version within a deadline, and the whole rollout
// halted at the first machine that fails or reverts. Authority stays where the constitution
// puts it: every step is the operator's request on a machine's control line; no machine
// updates itself, and each one checks the Spine's signature as it would for a hand-carried one.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"alpinespine.org/spine/internal/bay0/control"
	"alpinespine.org/spine/internal/host/ctlclient"
)

// Line is one machine's control line, as the rollout uses it.
type Line interface {
	Status(ctx context.Context) (control.StatusInfo, error)
	Update(ctx context.Context, image string, progress func(sent, total int64)) (control.UpdateResult, error)
	// Fetch has the machine's courier persona fetch the Spine named by source
	// (oci://REGISTRY/REPO@sha256:DIGEST) and stage it.
	Fetch(ctx context.Context, source string) (control.UpdateResult, error)
	Reboot(ctx context.Context) error
	Close() error
}

// Connect opens a machine's control line.
type Connect func(ctx context.Context, m Machine) (Line, error)

// Target is the Spine being rolled out.
type Target struct {
	Image string `json:"image"`
	// Source, if set, is where each machine's courier fetches the Spine (an oci:// reference
	// by digest, of the same image): the bytes then do not cross the control lines.
	Source   string `json:"source,omitempty"`
	Name     string `json:"name"`
	Version  uint64 `json:"version"`
	RootHash string `json:"root_hash"`
}

// Phase is where one machine is in the rollout.
type Phase string

// The phases of a machine. Done, Skipped and Failed are final.
const (
	Pending   Phase = "pending"
	Updating  Phase = "updating"
	Rebooting Phase = "rebooting"
	Trial     Phase = "trial"
	Done      Phase = "done"
	Skipped   Phase = "skipped"
	Failed    Phase = "failed"
)

// Progress is one machine's state, reported at each change.
type Progress struct {
	Machine string `json:"machine"`
	Wave    int    `json:"wave"`
	Phase   Phase  `json:"phase"`
	Version uint64 `json:"version,omitempty"` // the version it runs, as last seen
	Slot    string `json:"slot,omitempty"`
	Percent int    `json:"percent,omitempty"` // of the update body sent, while updating
	Detail  string `json:"detail,omitempty"`  // why it failed or was skipped
}

// Options steer a rollout.
type Options struct {
	Target  Target
	Canary  int           // machines in the first wave (at least 1)
	Percent int           // share of the fleet in the second wave
	Gate    time.Duration // from the reboot request to committed on the new version
	Poll    time.Duration // between status checks while a machine comes back
	// StatePath keeps each machine's outcome, so a halted or interrupted rollout resumes
	// where it stopped; "" keeps nothing.
	StatePath string
	// RetryFailed lets a resumed rollout try again the machines that failed before.
	RetryFailed bool
	Connect     Connect        // nil: DialLine
	Report      func(Progress) // each change of a machine's state; called from one goroutine at a time
}

// ErrHalted is wrapped by Run's error when a machine failed and the rollout stopped.
var ErrHalted = errors.New("rollout halted")

// Run rolls opts.Target across inv and returns every machine's final state. It returns an
// error wrapping ErrHalted when a machine failed: the machines of later waves are untouched.
func Run(ctx context.Context, inv Inventory, opts Options) ([]Progress, error) {
	if opts.Connect == nil {
		opts.Connect = DialLine
	}
	if opts.Gate <= 0 || opts.Poll <= 0 {
		return nil, fmt.Errorf("rollout: the gate (%s) and the poll interval (%s) must be positive", opts.Gate, opts.Poll)
	}
	st, err := loadState(opts.StatePath, opts.Target)
	if err != nil {
		return nil, err
	}
	r := &rollout{opts: opts, state: st, final: make([]Progress, len(inv.Machines))}
	for i, m := range inv.Machines {
		r.final[i] = Progress{Machine: m.Name, Phase: Pending}
		prev, ok := st.Machines[m.Name]
		switch {
		case !ok:
		case prev.Phase == Done || prev.Phase == Skipped:
			r.final[i] = prev
		case prev.Phase == Failed && !opts.RetryFailed:
			return nil, fmt.Errorf("%w earlier: machine %s failed (%s); look at it, then resume with --retry-failed", ErrHalted, m.Name, prev.Detail)
		}
	}
	for w, wave := range Waves(len(inv.Machines), opts.Canary, opts.Percent) {
		var wg sync.WaitGroup
		for _, i := range wave {
			if p := r.final[i]; p.Phase == Done || p.Phase == Skipped {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.machine(ctx, inv.Machines[i], i, w+1)
			}()
		}
		wg.Wait()
		var failed []string
		for _, i := range wave {
			if p := r.final[i]; p.Phase == Failed {
				failed = append(failed, fmt.Sprintf("%s (%s)", p.Machine, p.Detail))
			}
		}
		if len(failed) > 0 {
			return r.final, fmt.Errorf("%w in wave %d: %v failed; the machines of later waves were not touched", ErrHalted, w+1, failed)
		}
		if err := ctx.Err(); err != nil {
			return r.final, fmt.Errorf("rollout interrupted: %w", err)
		}
	}
	return r.final, nil
}

// rollout is one run's shared state.
type rollout struct {
	opts  Options
	mu    sync.Mutex
	state *state
	final []Progress
}

// set records and reports a machine's new state.
func (r *rollout) set(i int, p Progress) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.final[i] = p
	if p.Phase == Done || p.Phase == Skipped || p.Phase == Failed {
		r.state.Machines[p.Machine] = p
		if err := r.state.save(r.opts.StatePath); err != nil && r.opts.Report != nil {
			r.opts.Report(Progress{Machine: p.Machine, Wave: p.Wave, Phase: p.Phase, Detail: "state file: " + err.Error()})
		}
	}
	if r.opts.Report != nil {
		r.opts.Report(p)
	}
}

// machine takes one machine through update, reboot and the gate.
func (r *rollout) machine(ctx context.Context, m Machine, i, wave int) {
	t := r.opts.Target
	p := Progress{Machine: m.Name, Wave: wave}
	fail := func(format string, args ...any) {
		p.Phase, p.Percent, p.Detail = Failed, 0, fmt.Sprintf(format, args...)
		r.set(i, p)
	}
	line, err := r.opts.Connect(ctx, m)
	if err != nil {
		fail("unreachable: %v", err)
		return
	}
	defer func() { line.Close() }()
	s, err := statusWithin(ctx, line, 10*time.Second)
	if err != nil {
		fail("status: %v", err)
		return
	}
	p.Version, p.Slot = s.Version, s.Slot
	switch {
	case s.Spine != t.Name:
		fail("runs Spine %q, not %q", s.Spine, t.Name)
		return
	case !s.Committed:
		fail("v%d on slot %s is still on trial; wait for it to commit or revert", s.Version, s.Slot)
		return
	case s.Version == t.Version:
		p.Phase, p.Detail = Done, "already committed on this version"
		r.set(i, p)
		return
	case s.Version > t.Version:
		p.Phase, p.Detail = Skipped, fmt.Sprintf("runs v%d, newer than v%d", s.Version, t.Version)
		r.set(i, p)
		return
	}
	p.Phase = Updating
	r.set(i, p)
	var res control.UpdateResult
	if t.Source != "" {
		res, err = line.Fetch(ctx, t.Source)
	} else {
		res, err = line.Update(ctx, t.Image, func(sent, total int64) {
			if pct := int(sent * 100 / max(total, 1)); pct/10 != p.Percent/10 {
				p.Percent = pct
				r.set(i, p)
			}
		})
	}
	if err != nil {
		fail("update: %v", err)
		return
	}
	p.Phase, p.Percent, p.Detail = Rebooting, 0, fmt.Sprintf("v%d staged in slot %s", res.Version, res.Slot)
	r.set(i, p)
	asked := time.Now()
	if err := line.Reboot(ctx); err != nil {
		fail("reboot: %v", err)
		return
	}
	line.Close()
	r.gate(ctx, m, i, p, asked, res.Slot)
}

// gate waits until the machine is back from the reboot asked at `asked` and committed on the
// target version, or has come back on another version (reverted), or the gate's time is up.
func (r *rollout) gate(ctx context.Context, m Machine, i int, p Progress, asked time.Time, slot string) {
	t := r.opts.Target
	deadline := asked.Add(r.opts.Gate)
	last := "no answer since the reboot"
	for {
		if !sleep(ctx, r.opts.Poll) || time.Now().After(deadline) {
			p.Phase, p.Detail = Failed, fmt.Sprintf("not committed on v%d within %s after the reboot (%s)", t.Version, r.opts.Gate, last)
			if ctx.Err() != nil {
				p.Detail = fmt.Sprintf("interrupted while waiting for v%d to commit (%s)", t.Version, last)
			}
			r.set(i, p)
			return
		}
		s, err := r.status(ctx, m)
		if err != nil {
			last = err.Error()
			continue
		}
		// A machine whose uptime is longer than the time since the reboot was asked has not
		// gone down yet: its answer says nothing about the new Spine.
		if time.Duration(s.UptimeMS)*time.Millisecond >= time.Since(asked) {
			last = "not rebooted yet"
			continue
		}
		p.Version, p.Slot = s.Version, s.Slot
		switch {
		case s.Version != t.Version:
			p.Phase, p.Detail = Failed, fmt.Sprintf("came back on v%d (slot %s): the new Spine reverted%s", s.Version, s.Slot, slotReason(s, slot))
			r.set(i, p)
			return
		case s.Committed:
			p.Phase, p.Detail = Done, ""
			r.set(i, p)
			return
		case p.Phase != Trial:
			p.Phase, p.Detail = Trial, ""
			r.set(i, p)
		}
		last = fmt.Sprintf("on trial, missing %v", s.Missing)
	}
}

func (r *rollout) status(ctx context.Context, m Machine) (control.StatusInfo, error) {
	line, err := r.opts.Connect(ctx, m)
	if err != nil {
		return control.StatusInfo{}, err
	}
	defer line.Close()
	return statusWithin(ctx, line, 5*time.Second)
}

func statusWithin(ctx context.Context, line Line, d time.Duration) (control.StatusInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return line.Status(ctx)
}

// slotReason quotes what the boot-control record says about the slot the update went to.
func slotReason(s control.StatusInfo, slot string) string {
	for _, sl := range s.Slots {
		if sl.Slot == slot && sl.Reason != "" {
			return fmt.Sprintf("; slot %s is %s: %s", slot, sl.State, sl.Reason)
		}
	}
	return ""
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// DialLine opens a machine's control line with ctlclient.
func DialLine(_ context.Context, m Machine) (Line, error) {
	c, err := ctlclient.Dial(m.Control)
	if err != nil {
		return nil, err
	}
	return clientLine{c}, nil
}

type clientLine struct{ c *ctlclient.Client }

func (l clientLine) Status(ctx context.Context) (control.StatusInfo, error) {
	resp, err := l.c.Call(ctx, control.Request{Verb: control.VerbStatus})
	if err != nil {
		return control.StatusInfo{}, err
	}
	var s control.StatusInfo
	if err := resp.Decode(&s); err != nil {
		return control.StatusInfo{}, fmt.Errorf("status answer: %w", err)
	}
	return s, nil
}

func (l clientLine) Update(ctx context.Context, image string, progress func(sent, total int64)) (control.UpdateResult, error) {
	return l.c.UpdateImage(ctx, image, progress)
}

func (l clientLine) Fetch(ctx context.Context, source string) (control.UpdateResult, error) {
	return l.c.Fetch(ctx, source)
}

func (l clientLine) Reboot(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := l.c.Call(ctx, control.Request{Verb: control.VerbReboot})
	return err
}

func (l clientLine) Close() error { return l.c.Close() }
