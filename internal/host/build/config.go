// Package build turns a declarative Spine configuration into a signed Spine image: it stages
// the tree (bay0, the baked policy, the persona trees), audits it, makes the SquashFS, builds
// the hash tree and signs the manifest.
package build

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"alpinespine.org/spine/internal/host/tomlconf"

	"alpinespine.org/spine/internal/format/policy"
	"alpinespine.org/spine/internal/host/debtree"
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
// the order oci, debian, dir, go, each over what the previous ones made, so that the operator's
// own files (dir, go) can add to or replace files of an image or a package.
type Source struct {
	// OCI is an OCI image layout: a directory or a tar of one (skopeo copy docker://IMAGE
	// oci:DIR:TAG or oci-archive:FILE). Its config's Entrypoint+Cmd, Env and WorkingDir are the
	// persona's defaults where the policy sets no exec, env or workdir; env is merged by key.
	OCI string `toml:"oci"`
	// Ref selects the image when the layout holds several: a tag (ref name) or a digest.
	Ref string `toml:"ref"`
	// Debian lists Debian packages ("name" or "name=version") unpacked with their Depends and
	// Pre-Depends, downloaded into the build cache; no maintainer script runs.
	Debian []string `toml:"debian"`
	// Dir is a directory copied as the tree (modes kept, so the audit sees what is there).
	Dir string `toml:"dir"`
	// Go is a Go package of this module built static into /bin/<last path element>.
	Go string `toml:"go"`
}

// imageExec stands in, during validation, for the exec an OCI persona takes from its image's
// entrypoint at stage time. It never reaches a policy: Stage replaces it or fails.
const imageExec = "/<from the image>"

// LoadConfig reads and validates a build configuration strictly.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	var c Config
	if err := tomlconf.DecodeStrict(data, &c); err != nil {
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
	// An OCI persona may leave exec to its image: check everything else now, and exec once
	// the image is read (Stage).
	pol := c.Policy()
	for i, p := range c.Personas {
		if p.Source.OCI != "" && len(p.Exec) == 0 {
			pol.Personas[i].Exec = []string{imageExec}
		}
	}
	if err := pol.Validate(); err != nil {
		return err
	}
	if err := pol.Vet(); err != nil {
		return err
	}
	for _, p := range c.Personas {
		s := p.Source
		if s.OCI == "" && len(s.Debian) == 0 && s.Dir == "" && s.Go == "" {
			return fmt.Errorf("persona %q: source needs one of oci, debian, dir or go", p.Name)
		}
		if s.Ref != "" && s.OCI == "" {
			return fmt.Errorf("persona %q: source ref selects an image of an oci layout, and there is none", p.Name)
		}
		for _, n := range s.Debian {
			if err := debtree.CheckName(n); err != nil {
				return fmt.Errorf("persona %q: source debian: %w", p.Name, err)
			}
		}
	}
	return nil
}

// Policy is the policy as configured. What gets baked into the Spine is this policy with the
// defaults of OCI images merged in (see Stage and Staged.Policy).
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
