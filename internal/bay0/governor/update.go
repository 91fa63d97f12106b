package governor

import (
	"fmt"
	"os"

	"alpinespine.org/spine/internal/bay0/update"
	"alpinespine.org/spine/internal/format/bootctl"
	"alpinespine.org/spine/internal/format/disk"
	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/format/handoff"
)

// stager prepares an update.Stager for the target slot, open read-write as slot (device
// dev): the same device read past the page cache, and the running slot as the source of a
// restore. done closes what it opened.
func (g *Governor) stager(boot handoff.Handoff, rec *records, target int, slot *os.File, dev string) (*update.Stager, func(), error) {
	trusted, err := trustedKeys(boot)
	if err != nil {
		return nil, nil, err
	}
	direct, err := update.OpenDirect(dev)
	if err != nil {
		return nil, nil, err
	}
	runDev, err := disk.FindBlockDevice("/sys", "spine-"+bootctl.SlotName(boot.Slot))
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
		RunningSize: rec.snapshot().Slots[boot.Slot].ImageSize, Trusted: trusted,
		Store: rec.store, Logf: g.logf, Emit: g.emit}
	return st, func() { direct.Close(); running.Close() }, nil
}

// restoreInterruptedUpdate restores the slot beside the running one when a power loss cut an
// update while it was written (update.Interrupted): the machine boots on its committed Spine
// and gets its second bootable Spine back before anything else. A restore that fails is
// logged; the slot stays empty and the next update rewrites it. Each chunk copied is progress
// of the phase (pr).
func (g *Governor) restoreInterruptedUpdate(boot handoff.Handoff, rec *records, pr progress) {
	if !update.Interrupted(rec.snapshot(), boot.Slot) {
		return
	}
	target := 1 - boot.Slot
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
		st, done, err := g.stager(boot, rec, target, slot, dev)
		if err != nil {
			return err
		}
		defer done()
		// The copy takes a while: each chunk is progress of the boot phase.
		st.Progress = func(int64) { pr.beat() }
		return st.Restore()
	}()
	if err != nil {
		g.logf("update: slot %s not restored, it stays empty: %v", bootctl.SlotName(target), err)
	}
}
