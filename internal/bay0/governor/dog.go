package governor

import (
	"sync/atomic"
	"time"

	"alpinespine.org/spine/internal/format/bootctl"
	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/format/handoff"
	"alpinespine.org/spine/internal/format/policy"
)

// dog is the hardware watchdog as the watchdog phase leaves it: open, and fed by its own
// goroutine while every supervised loop progresses.
type dog struct {
	dev watchdogDevice
	// lastFeed is when the watchdog was last fed (unix nanoseconds; 0: not yet).
	lastFeed atomic.Int64
	// record is where a starving watchdog writes why: nil until the record phase (the root
	// is checked before anything is written), which hands it over once with recordTo.
	record atomic.Pointer[records]
}

// stage1Timeout is the watchdog's timeout until the policy is read (stage1.WatchdogTimeout).
const stage1Timeout = 10 * time.Second

// adoptWatchdog takes over the watchdog stage 1 armed (or, booted without one, opens it) and
// starts feeding it while the boot progresses.
func (g *Governor) adoptWatchdog(boot handoff.Handoff) (*dog, error) {
	dev, err := g.kernel.Watchdog(boot.WatchdogFD, stage1Timeout)
	if err != nil {
		return nil, err
	}
	d := &dog{dev: dev}
	g.goSafe("watchdog feeder", func() error { return g.feed(d) })
	return d, nil
}

// loadPolicy reads the policy and sets its watchdog timeout.
func (g *Governor) loadPolicy(d *dog) (policy.Policy, error) {
	pol, err := g.kernel.Policy()
	if err != nil {
		return policy.Policy{}, err
	}
	if err := d.dev.SetTimeout(time.Duration(pol.Governor.WatchdogTimeout)); err != nil {
		return policy.Policy{}, err
	}
	g.logf("watchdog: armed, timeout %s", d.dev.Timeout())
	g.emit(event.New(event.WatchdogArmed).Uint("timeout_ms", uint64(d.dev.Timeout().Milliseconds())))
	return pol, nil
}

// recordTo makes rec the record a starving watchdog writes its reason in.
func (d *dog) recordTo(rec *records) { d.record.Store(rec) }

// window is how long a supervised loop may stay silent before the watchdog goes unfed.
func (d *dog) window() time.Duration {
	return max(2*time.Second, d.dev.Timeout()/2)
}

// feed feeds the hardware watchdog only while every supervised loop progresses. When a loop is
// stuck it records why and stops feeding: the hardware resets the machine.
func (g *Governor) feed(d *dog) error {
	starving := false
	for {
		now := time.Now()
		if err := g.health.Check(now, d.window()); err != nil {
			if !starving {
				starving = true
				g.logf("watchdog: not feeding: %v", err)
				g.emit(event.New(event.WatchdogStarving).With("reason", err.Error()))
				if rec := d.record.Load(); rec != nil {
					_ = rec.set(func(r bootctl.Record) bootctl.Record { return bootctl.MarkReset(r, "watchdog: "+err.Error()) })
				}
			}
		} else if !starving {
			if err := d.dev.Feed(); err != nil {
				return err
			}
			d.lastFeed.Store(now.UnixNano())
		}
		// The period follows the timeout, which the policy phase changes.
		time.Sleep(max(250*time.Millisecond, d.dev.Timeout()/4))
	}
}
