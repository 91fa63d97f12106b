package fleet

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// state is what a rollout keeps between runs: the Spine it rolls out and each machine that
// reached a final phase.
type state struct {
	Target   Target              `json:"target"`
	Machines map[string]Progress `json:"machines"`
}

// loadState reads the state file at path, or starts an empty one. A state file left by the
// rollout of another Spine is refused rather than mixed with this one.
func loadState(path string, t Target) (*state, error) {
	st := &state{Target: t, Machines: map[string]Progress{}}
	if path == "" {
		return st, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("rollout state: %w", err)
	}
	var prev state
	if err := json.Unmarshal(b, &prev); err != nil {
		return nil, fmt.Errorf("rollout state %s: %w", path, err)
	}
	if prev.Target.Name != t.Name || prev.Target.Version != t.Version || prev.Target.RootHash != t.RootHash {
		return nil, fmt.Errorf("rollout state %s is for %s v%d (root hash %s), not %s v%d (root hash %s): give another --state",
			path, prev.Target.Name, prev.Target.Version, prev.Target.RootHash, t.Name, t.Version, t.RootHash)
	}
	if prev.Machines != nil {
		st.Machines = prev.Machines
	}
	return st, nil
}

// save writes the state beside path and renames it into place, so an interrupted save leaves
// the previous state whole.
func (s *state) save(path string) error {
	if path == "" {
		return nil
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
