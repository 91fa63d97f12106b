package governor

import (
	"fmt"
	"os"
	"time"

	"alpinespine.org/spine/internal/bay0/update"
	"alpinespine.org/spine/internal/format/bootctl"
	"alpinespine.org/spine/internal/format/disk"
	"alpinespine.org/spine/internal/format/event"
)

// stager prepares an update.Stager for the target slot, open read-write as slot (device
// dev): the same device read past the page cache, and the running slot as the source of a
// restore. done closes what it opened.
func (g *Governor) stager(target int, slot *os.File, dev string) (*update.Stager, func(), error) {
	trusted, err := g.trustedKeys()
	if err != nil {
		return nil, nil, err
	}
	direct, err := update.OpenDirect(dev)
	if err != nil {
		return nil, nil, err
	}
	runDev, err := disk.FindBlockDevice("/sys", "spine-"+bootctl.SlotName(g.boot.Slot))
	if err != nil {
		direct.Close()
		return nil, nil, err
	}
	running, err := os.Open(runDev)
	if err != nil {
		direct.Close()
		return nil, nil, fmt.Errorf("open %s: %w", runDev, err)
	}
	st := &update.Stager{Target: target, Slot: slot, Disk: direct, Running: running,
		RunningSize: g.state.snapshot().Slots[g.boot.Slot].ImageSize, Trusted: trusted,
		Store: g.state.store, Logf: g.logf, Emit: g.emit}
	return st, func() { direct.Close(); running.Close() }, nil
}

// restoreInterruptedUpdate restores the slot beside the running one when a power loss cut an
// update while it was written (update.Interrupted): the machine boots on its committed Spine
// and gets its second bootable Spine back before anything else. A restore that fails is
// logged; the slot stays empty and the next update rewrites it.
func (g *Governor) restoreInterruptedUpdate() {
	if !update.Interrupted(g.state.snapshot(), g.boot.Slot) {
		return
	}
	target := 1 - g.boot.Slot
	g.logf("update: slot %s was left half-written by an interrupted update", bootctl.SlotName(target))
	g.emit(event.New(event.UpdateCut).With("slot", bootctl.SlotName(target)))
	err := func() error {
		dev, err := disk.FindBlockDevice("/sys", "spine-"+bootctl.SlotName(target))
		if err != nil {
			return err
		}
		slot, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("open %s: %w", dev, err)
		}
		defer slot.Close()
		st, done, err := g.stager(target, slot, dev)
		if err != nil {
			return err
		}
		defer done()
		// The copy takes a while: each chunk is progress of the boot phase.
		st.Progress = func(int64) { g.health.Watch(LoopBoot, PhaseWindow, time.Now()) }
		return st.Restore()
	}()
	if err != nil {
		g.logf("update: slot %s not restored, it stays empty: %v", bootctl.SlotName(target), err)
	}
}
