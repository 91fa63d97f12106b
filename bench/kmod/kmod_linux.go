package kmod

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Load loads the module file at path with finit_module(2). A module that is
// already loaded (EEXIST) counts as loaded. Compressed modules are not
// supported: the pinned kernel ships plain .ko files.
func Load(path, params string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("kmod: load %s: %w", path, err)
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), params, 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("kmod: load %s: finit_module: %w", path, err)
	}
	return nil
}

// LoadAll loads items in order from modulesDir (/lib/modules/<release>) and
// stops at the first error: a later module may depend on the failed one.
func LoadAll(modulesDir string, items []LoadItem) error {
	for _, it := range items {
		if err := it.Validate(); err != nil {
			return err
		}
		if err := Load(filepath.Join(modulesDir, it.Path), it.Params); err != nil {
			return err
		}
	}
	return nil
}
