// Package handoff is what stage 1 tells the governor about the boot it chose: a small JSON
// file in the new root's /run, written by stage 1 just before it execs the Spine's bay0 and
// read once by the governor.
package handoff

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"alpinespine.org/spine/internal/format/manifest"
)

// Path is the handoff file, relative to the new root.
const Path = "run/bay0/boot.json"

// Handoff describes the boot stage 1 chose.
type Handoff struct {
	Slot     int               `json:"slot"`
	Manifest manifest.Manifest `json:"manifest"`
	// Keys are the trusted public keys (PEM) of the initramfs, which the governor needs to
	// authenticate updates once the initramfs is gone.
	Keys [][]byte `json:"keys"`
	// WatchdogFD is the hardware watchdog that stage 1 armed and left open across the exec
	// (-1 or absent: none); the governor goes on feeding it.
	WatchdogFD int `json:"watchdog_fd"`
	// KernelSHA256 is set when the running kernel is the slot's own: stage 0 checked its image
	// against this hash (the manifest's kernel_sha256) before it started it. Empty on a direct
	// boot, where the kernel came from elsewhere.
	KernelSHA256 string `json:"kernel_sha256,omitempty"`
	// Phases are stage 1's phases and how long each took, in order.
	Phases []Phase `json:"phases,omitempty"`
}

// Phase is one named, timed step of the boot.
type Phase struct {
	Name string `json:"name"`
	MS   int64  `json:"ms"`
}

// Write stores h under root (the new root, its /run already mounted).
func Write(root string, h Handoff) error {
	b, err := json.Marshal(h)
	if err != nil {
		return fmt.Errorf("encode handoff: %w", err)
	}
	p := filepath.Join(root, Path)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(p), err)
	}
	if err := os.WriteFile(p, b, 0o600); err != nil {
		return fmt.Errorf("write handoff: %w", err)
	}
	return nil
}

// Read loads the handoff under root ("" or "/" for the running system).
func Read(root string) (Handoff, error) {
	b, err := os.ReadFile(filepath.Join("/", root, Path))
	if err != nil {
		return Handoff{}, fmt.Errorf("read boot handoff: %w", err)
	}
	h := Handoff{WatchdogFD: -1}
	if err := json.Unmarshal(b, &h); err != nil {
		return Handoff{}, fmt.Errorf("decode boot handoff: %w", err)
	}
	return h, nil
}
