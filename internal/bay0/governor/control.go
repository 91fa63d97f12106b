package governor

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"alpinespine.org/spine/internal/bay0/control"
	bay0courier "alpinespine.org/spine/internal/bay0/courier"
	"alpinespine.org/spine/internal/bay0/halt"
	"alpinespine.org/spine/internal/bay0/persist"
	"alpinespine.org/spine/internal/bay0/supervise"
	"alpinespine.org/spine/internal/bay0/update"
	"alpinespine.org/spine/internal/format/bootctl"
	"alpinespine.org/spine/internal/format/courier"
	"alpinespine.org/spine/internal/format/disk"
	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/format/handoff"
	"alpinespine.org/spine/internal/format/keys"
)

// ctlHandler carries out the control channel's verbs. Its methods run on the channel's own
// goroutine, one at a time.
type ctlHandler struct {
	g *Governor
	r *running
}

// serveControl is the control phase: it serves the bay0.ctl port on the running system until
// it fails; a machine without the port has no control channel, which is a property of the
// machine, not a degraded mode.
func (g *Governor) serveControl(r *running) error {
	port, name, err := g.kernel.ControlPort()
	if err != nil {
		g.logf("control: no channel: %v", err)
		g.emit(event.New(event.ControlAbsent).With("reason", err.Error()))
		return nil
	}
	g.health.Beat(LoopControl, time.Now())
	g.logf("control: serving on %s", name)
	g.emit(event.New(event.ControlServing).With("port", name))
	// The channel's progress comes right after each answer is written: a reboot or power
	// off asked for on it is carried out from there, once its answer has left.
	progress := func() {
		g.health.Beat(LoopControl, time.Now())
		if pe := g.pending.Swap(nil); pe != nil {
			g.request(pe)
		}
	}
	g.goSafe("control channel", func() error {
		return control.Serve(context.Background(), port, &ctlHandler{g: g, r: r}, progress)
	})
	return nil
}

func (h *ctlHandler) Status() (control.StatusInfo, error) {
	g, r := h.g, h.r
	g.hangAt("control")
	rec := r.record.snapshot()
	st := control.StatusInfo{
		Spine: r.boot.Manifest.Name, Version: r.boot.Manifest.Version, Slot: bootctl.SlotName(r.boot.Slot),
		MinVersion: rec.MinVersion, UptimeMS: uint64(time.Since(g.started).Milliseconds()),
		PersistMounted: persist.Mounted(), LastReset: r.lastReset, RSSKiB: int64(selfRSS()),
		Watchdog: control.WatchdogInfo{Enabled: true, TimeoutMS: uint64(r.dog.dev.Timeout().Milliseconds())},
		Kernel:   runningKernel(r.boot),
	}
	if fed := r.dog.lastFeed.Load(); fed != 0 {
		since := uint64(time.Since(time.Unix(0, fed)).Milliseconds())
		st.Watchdog.SinceFeedMS = &since
	}
	st.Committed = r.committed.Load()
	if !st.Committed {
		st.Missing = g.missing(r, time.Now())
	}
	for _, p := range g.timeline.get() {
		st.Boot = append(st.Boot, control.BootPhase{Name: p.Name, MS: p.MS})
	}
	for i, s := range rec.Slots {
		st.Slots = append(st.Slots, control.SlotInfo{Slot: bootctl.SlotName(i), State: s.State.String(),
			Version: s.Version, TriesLeft: s.TriesLeft, Reason: s.Reason})
	}
	for _, p := range r.personas.sup.Status() {
		if len(p.Denied) > 0 {
			st.Denied = append(st.Denied, "persona "+p.Name+": denied syscall "+strings.Join(p.Denied, "; "))
		}
	}
	st.Personas, _ = h.Personas()
	return st, nil
}

func (h *ctlHandler) Personas() ([]control.PersonaInfo, error) {
	var out []control.PersonaInfo
	for _, s := range h.r.personas.sup.Status() {
		out = append(out, control.PersonaInfo{Name: s.Name, State: string(s.State), PID: s.Pid, Restarts: uint64(s.Restarts),
			LastExit: s.LastExit, Denied: s.Denied, Limits: control.Limits{CPUMax: s.Limits.CPUMax,
				MemoryMax: strconv.FormatInt(s.Limits.MemoryMax, 10), PidsMax: strconv.Itoa(s.Limits.PidsMax)},
			Health: s.Health, HealthOutput: s.HealthOutput, CPUUsec: s.CPUUsec, CPUPercent: math.Round(s.CPUPercent*10) / 10, MemoryBytes: s.MemoryBytes})
	}
	return out, nil
}

// Logs returns bay0's own recent lines, or the named persona's: each from a ring of its own,
// so no persona's flood pushes out bay0's lines or another persona's.
func (h *ctlHandler) Logs(name string, after uint64) (control.LogsResult, error) {
	if name == "" {
		return h.g.ring.Since(after), nil
	}
	return h.r.personas.logs.lines(name, after)
}

// personaStates says each persona's state in a few words, "web healthy, job exited": a
// persona that ended by itself (restart = "never") counts as up, but is never called running.
func personaStates(st []supervise.Status) string {
	parts := make([]string, 0, len(st))
	for _, s := range st {
		parts = append(parts, s.Name+" "+string(s.State))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// verbTimeout bounds a persona verb; it must stay well inside the watchdog window, since the
// control loop reports no progress while a verb runs.
const verbTimeout = 3 * time.Second

func (h *ctlHandler) persona(verb func(context.Context, string) error, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), verbTimeout)
	defer cancel()
	return verb(ctx, name)
}

func (h *ctlHandler) Replace(name string) error { return h.persona(h.r.personas.sup.Replace, name) }
func (h *ctlHandler) Stop(name string) error    { return h.persona(h.r.personas.sup.Stop, name) }
func (h *ctlHandler) Start(name string) error   { return h.persona(h.r.personas.sup.Start, name) }

// Reboot and Poweroff only ask: the main loop ends the machine once the answer is out.
func (h *ctlHandler) Reboot() error {
	h.g.pending.CompareAndSwap(nil, &halt.PowerError{Action: halt.Reboot, Reason: "operator asked (spine ctl reboot)"})
	return nil
}

func (h *ctlHandler) Poweroff() error {
	h.g.pending.CompareAndSwap(nil, &halt.PowerError{Action: halt.PowerOff, Reason: "operator asked (spine ctl poweroff)"})
	return nil
}

// Update stages a new Spine in the inactive slot: the offer is checked before a byte is
// written, then update.Stager writes, reads back and verifies it, and only then marks it for
// trial and makes it primary; a failure restores the slot from the running Spine.
func (h *ctlHandler) Update(req control.Request, ready func() error, body io.Reader, progress func()) (any, error) {
	return h.stage(*req.Offer, req.Size, ready, body, progress)
}

// courierStall bounds how long a courier may go without sending while it hands over a Spine;
// courierStart is the longer wait for its first bytes (it fetches the manifest and the image's
// tail before it sends anything).
const (
	courierStall = control.BodyStall
	courierStart = 60 * time.Second
)

// UpdateFrom stages the Spine the operator named by digest, fetched by the courier persona
// over its network and handed over on a socket made for this transfer. The courier is a
// sender like any other: its bytes must hash to the named artifact and pass every check an
// update streamed on the control line passes.
func (h *ctlHandler) UpdateFrom(req control.Request, progress func()) (any, error) {
	g, p := h.g, h.r.personas
	ref, err := courier.ParseRef(req.Source)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", update.ErrRefused, err)
	}
	if p.courier == nil {
		return nil, fmt.Errorf("%w: this Spine's policy has no courier persona (courier = true)", update.ErrRefused)
	}
	if err := h.takesUpdates(); err != nil {
		return nil, err
	}
	for _, st := range p.sup.Status() {
		if st.Name == p.courierName && st.State != supervise.Running {
			return nil, fmt.Errorf("%w: the courier persona %s is %s", update.ErrRefused, st.Name, st.State)
		}
	}
	g.logf("update: asking courier %s for %s", p.courierName, ref)
	g.emit(event.New(event.CourierAsked).With("name", p.courierName).With("ref", ref.String()))
	f, err := p.courier.Open(ref)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	in := &bay0courier.StallReader{F: f, Stall: courierStart, Progress: progress}
	tr, err := bay0courier.Accept(in, ref)
	if err != nil {
		g.logf("update: courier %s: %v", p.courierName, err)
		g.emit(event.New(event.UpdateFailed).With("slot", "-").With("reason", err.Error()))
		return nil, fmt.Errorf("%w: %v", update.ErrRefused, err)
	}
	in.Stall = courierStall
	body := &reportingReader{r: tr.Body, total: tr.Size, report: func(pct int, n int64) {
		g.logf("update: courier %s: %d%% (%d of %d bytes)", p.courierName, pct, n, tr.Size)
	}}
	return h.stage(tr.Offer, tr.Size, func() error { return nil }, body, progress)
}

// reportingReader tells report each quarter of total it passes, so a transfer that takes a
// while shows on the console how far it got.
type reportingReader struct {
	r      io.Reader
	total  int64
	n      int64
	last   int
	report func(pct int, n int64)
}

func (r *reportingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.n += int64(n)
	if pct := int(r.n * 100 / max(r.total, 1)); pct/25 > r.last/25 {
		r.last = pct
		r.report(pct, r.n)
	}
	return n, err
}

// takesUpdates refuses updates until this boot has committed. UpdateFrom asks it before the
// courier fetches anything; stage asks again, as every update goes through it.
func (h *ctlHandler) takesUpdates() error {
	if !h.r.committed.Load() {
		return fmt.Errorf("%w: this boot has not committed yet (health window %s)", update.ErrRefused, time.Duration(h.r.policy.Governor.HealthWindow))
	}
	return nil
}

// stage checks an offer and, once ready says so, has update.Stager write the body into the
// inactive slot, read it back and verify it, and only then mark it for trial and make it
// primary; a failure restores the slot from the running Spine.
func (h *ctlHandler) stage(offer update.Offer, size int64, ready func() error, body io.Reader, progress func()) (any, error) {
	g, r := h.g, h.r
	if err := h.takesUpdates(); err != nil {
		return nil, err
	}
	target, err := update.Target(r.record.snapshot(), r.boot.Slot)
	if err != nil {
		return nil, err
	}
	trusted, err := trustedKeys(r.boot)
	if err != nil {
		return nil, err
	}
	dev, err := disk.FindBlockDevice("/sys", "spine-"+bootctl.SlotName(target))
	if err != nil {
		return nil, err
	}
	slot, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dev, err)
	}
	defer slot.Close()
	slotSize, err := slot.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, fmt.Errorf("size of %s: %w", dev, err)
	}
	rec := r.record.snapshot()
	m, ft, err := offer.Check(trusted, update.Floor{Running: r.boot.Manifest.Version, MinVersion: rec.MinVersion, SlotSize: slotSize})
	if err != nil {
		return nil, err
	}
	if size != update.BodySize(ft) {
		return nil, fmt.Errorf("%w: body of %d bytes announced, the image needs %d", update.ErrRefused, size, update.BodySize(ft))
	}
	g.logf("update: %s v%d accepted for slot %s", m.Name, m.Version, bootctl.SlotName(target))
	g.emit(event.New(event.UpdateAccepted).With("name", m.Name).Uint("version", m.Version).With("slot", bootctl.SlotName(target)))
	if err := ready(); err != nil {
		return nil, err
	}
	st, done, err := g.stager(r.boot, r.record, target, slot, dev)
	if err != nil {
		return nil, err
	}
	defer done()
	st.Progress = func(int64) { progress() }
	tm, err := st.Stage(body, offer, ft, m)
	if err != nil {
		g.logf("update: slot %s not staged: %v", bootctl.SlotName(target), err)
		g.emit(event.New(event.UpdateFailed).With("slot", bootctl.SlotName(target)).With("reason", err.Error()))
		return nil, err
	}
	written, verified := tm.Write, tm.Verify
	g.logf("update: %s v%d staged in slot %s, trial on next boot (write %s, verify %s)", m.Name, m.Version,
		bootctl.SlotName(target), written.Round(time.Millisecond), verified.Round(time.Millisecond))
	g.emit(event.New(event.UpdateStaged).With("name", m.Name).Uint("version", m.Version).With("slot", bootctl.SlotName(target)).
		Int("write_ms", written.Milliseconds()).Int("verify_ms", verified.Milliseconds()))
	return control.UpdateResult{Name: m.Name, Version: m.Version, Slot: bootctl.SlotName(target), Bytes: size,
		WriteMS: uint64(written.Milliseconds()), VerifyMS: uint64(verified.Milliseconds())}, nil
}

// trustedKeys are the keys stage 1 verified this Spine with.
func trustedKeys(boot handoff.Handoff) ([]ed25519.PublicKey, error) {
	var out []ed25519.PublicKey
	for _, pem := range boot.Keys {
		k, err := keys.ParsePublic(pem)
		if err != nil {
			return nil, fmt.Errorf("trusted key from stage 1: %w", err)
		}
		out = append(out, k)
	}
	if len(out) == 0 {
		return nil, errors.New("stage 1 handed over no trusted keys")
	}
	return out, nil
}
