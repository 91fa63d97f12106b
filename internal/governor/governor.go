// Package governor is bay0 as PID 1 of a running Spine: it finishes mounting the system, unlocks
// /persist, launches the personas, and from then on is the only authority on the machine. It
// ends only through the halt package.
package governor

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"alpinespine.org/spine/internal/bootctl"
	"alpinespine.org/spine/internal/policy"
	"alpinespine.org/spine/internal/stage1"
)

// Boot reads the handoff that stage 1 left in /run.
func Boot(root string) (stage1.Handoff, error) {
	b, err := os.ReadFile(root + "/" + stage1.HandoffPath)
	if err != nil {
		return stage1.Handoff{}, fmt.Errorf("read boot handoff: %w", err)
	}
	var h stage1.Handoff
	if err := json.Unmarshal(b, &h); err != nil {
		return stage1.Handoff{}, fmt.Errorf("decode boot handoff: %w", err)
	}
	return h, nil
}

// LoadPolicy reads the policy baked into the running Spine.
func LoadPolicy(root string) (policy.Policy, error) {
	f, err := os.Open(root + "/" + policy.Path)
	if err != nil {
		return policy.Policy{}, fmt.Errorf("open policy: %w", err)
	}
	defer f.Close()
	return policy.Parse(f)
}

// UpLine is the console line that says the Spine is up; tests and operators wait for it.
func UpLine(h stage1.Handoff) string {
	return fmt.Sprintf("bay0: spine %s v%d slot %s up", h.Manifest.Name, h.Manifest.Version, bootctl.SlotName(h.Slot))
}

// Run is the governor's main loop. It returns only with the error that ends the machine.
func Run(console io.ReadWriter) error {
	if err := mountSystem(); err != nil {
		return err
	}
	h, err := Boot("")
	if err != nil {
		return err
	}
	pol, err := LoadPolicy("")
	if err != nil {
		return err
	}
	if err := unlockPersist(console, pol); err != nil {
		return err
	}
	if err := startPersonas(console, pol); err != nil {
		return err
	}
	fmt.Fprintln(console, UpLine(h))
	return reapForever()
}
