// Package build turns a declarative Spine configuration into a signed Spine image: it stages
// the tree (bay0, the baked policy, the persona trees), audits it, makes the SquashFS, builds
// the hash tree and signs the manifest.
package build

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"alpinespine.org/spine/internal/policy"
)

// Config is the operator's build configuration (demo/spine.toml is one). It is the policy that
// gets baked in, plus where each persona's tree comes from.
type Config struct {
	Name     string          `toml:"name"`
	Version  uint64          `toml:"version"`
	Governor policy.Governor `toml:"governor"`
	Personas []Persona       `toml:"persona"`
	// dir is the directory of the config file; relative sources resolve against it.
	dir string
}

// Persona is a policy entry plus the source of its tree.
type Persona struct {
	policy.Persona
	Source Source `toml:"source"`
}

// Source says where a persona's tree comes from. Several may be combined; they are applied in
// the order dir, go.
type Source struct {
	// Dir is a directory copied as the tree (modes kept, so the audit sees what is there).
	Dir string `toml:"dir"`
	// Go is a Go package of this module built static into /bin/<last path element>.
	Go string `toml:"go"`
}

// LoadConfig reads and validates a build configuration strictly.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	var c Config
	if err := policy.DecodeStrict(data, &c); err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	c.dir = filepath.Dir(path)
	if err := c.validate(); err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

func (c *Config) validate() error {
	if c.Name == "" {
		return errors.New("name is missing")
	}
	if c.Version == 0 {
		return errors.New("version is missing (must be at least 1)")
	}
	pol := c.Policy()
	if err := pol.Validate(); err != nil {
		return err
	}
	for _, p := range c.Personas {
		if p.Source.Dir == "" && p.Source.Go == "" {
			return fmt.Errorf("persona %q: source needs dir or go", p.Name)
		}
	}
	return nil
}

// Policy is the policy that gets baked into the Spine.
func (c Config) Policy() policy.Policy {
	p := policy.Policy{Governor: c.Governor}
	for _, q := range c.Personas {
		p.Personas = append(p.Personas, q.Persona)
	}
	return p
}

func (c Config) resolve(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.dir, p)
}
