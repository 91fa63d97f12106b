package build

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"alpinespine.org/spine/internal/audit"
	"alpinespine.org/spine/internal/image"
	"alpinespine.org/spine/internal/manifest"
	"alpinespine.org/spine/internal/policy"
	"alpinespine.org/spine/internal/squashfs"
)

// Options are the inputs of Build besides the configuration file.
type Options struct {
	Config string             // path of the TOML configuration
	Key    ed25519.PrivateKey // signing key
	Bay0   string             // static bay0 binary placed at /bin/bay0
	Out    string             // image path
	// Epoch is SOURCE_DATE_EPOCH; when >= 0 the build is reproducible (fixed timestamps, salt
	// and UUID derived from the inputs). When < 0 the salt and UUID are random.
	Epoch int64
	// Version, when not zero, overrides the configuration's version (release pipelines).
	Version uint64
	Kernel  string // kernel release recorded in the manifest
	Workers int
	// AllowFaultInjection lets the e2e suite sign a Spine whose bay0 is a fault-injection test
	// build. It is not reachable from the spine command line: a release build never sets it.
	AllowFaultInjection bool
}

// AuditError lists every violation that made the build refuse to sign.
type AuditError struct{ Violations []audit.Violation }

func (e *AuditError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "the tree breaks the constitution in %d ways; refusing to sign:", len(e.Violations))
	for _, v := range e.Violations {
		b.WriteString("\n  " + v.String())
	}
	return b.String()
}

// Build makes a signed Spine image. Nothing is written at opts.Out unless the whole build
// succeeds.
func Build(ctx context.Context, opts Options) (manifest.Manifest, error) {
	cfg, err := LoadConfig(opts.Config)
	if err != nil {
		return manifest.Manifest{}, err
	}
	if opts.Version != 0 {
		cfg.Version = opts.Version
	}
	work, err := os.MkdirTemp(filepath.Dir(opts.Out), ".spine-build-")
	if err != nil {
		return manifest.Manifest{}, fmt.Errorf("create work dir: %w", err)
	}
	defer os.RemoveAll(work)
	tree := filepath.Join(work, "tree")
	if err := Stage(ctx, cfg, opts.Bay0, tree); err != nil {
		return manifest.Manifest{}, err
	}
	files, err := audit.Dir(tree)
	if err != nil {
		return manifest.Manifest{}, err
	}
	var violations []audit.Violation
	for _, v := range audit.Check(files, audit.DirReader(tree)) {
		if opts.AllowFaultInjection && v.Rule == audit.RuleFaultInjection {
			continue
		}
		violations = append(violations, v)
	}
	if len(violations) > 0 {
		return manifest.Manifest{}, &AuditError{Violations: violations}
	}
	epoch := opts.Epoch
	fsEpoch := epoch
	if fsEpoch < 0 {
		fsEpoch = 0
	}
	sqfs := filepath.Join(work, "root.squashfs")
	if err := squashfs.Make(ctx, tree, sqfs, fsEpoch); err != nil {
		return manifest.Manifest{}, err
	}
	salt, uuid, err := saltAndUUID(cfg, epoch)
	if err != nil {
		return manifest.Manifest{}, err
	}
	m := manifest.Manifest{
		Format:       manifest.FormatVersion,
		Name:         cfg.Name,
		Version:      cfg.Version,
		Constitution: manifest.Constitution,
		Kernel:       opts.Kernel,
		BuildTime:    fsEpoch,
	}
	for _, p := range cfg.Policy().Personas {
		m.Personas = append(m.Personas, p.Name)
	}
	m, err = image.Assemble(opts.Out, sqfs, image.Assembly{Manifest: m, Key: opts.Key, Salt: salt, UUID: uuid, Workers: opts.Workers})
	if err != nil {
		return manifest.Manifest{}, err
	}
	return m, nil
}

// saltAndUUID derives the verity salt and UUID from the inputs when the build is reproducible,
// and draws them at random otherwise.
func saltAndUUID(cfg Config, epoch int64) ([]byte, [16]byte, error) {
	var uuid [16]byte
	salt := make([]byte, 32)
	if epoch < 0 {
		if _, err := io.ReadFull(rand.Reader, salt); err != nil {
			return nil, uuid, fmt.Errorf("draw salt: %w", err)
		}
		if _, err := io.ReadFull(rand.Reader, uuid[:]); err != nil {
			return nil, uuid, fmt.Errorf("draw uuid: %w", err)
		}
	} else {
		seed := cfg.Name + "\x00" + strconv.FormatUint(cfg.Version, 10) + "\x00" + strconv.FormatInt(epoch, 10)
		s := sha256.Sum256([]byte("spine verity salt\x00" + seed))
		copy(salt, s[:])
		u := sha256.Sum256([]byte("spine verity uuid\x00" + seed))
		copy(uuid[:], u[:16])
	}
	uuid[6] = uuid[6]&0x0f | 0x40
	uuid[8] = uuid[8]&0x3f | 0x80
	return salt, uuid, nil
}

// Stage lays out the Spine tree in dir: /bin/bay0, the baked policy, one tree per persona,
// and the empty mount points bay0 needs.
func Stage(ctx context.Context, cfg Config, bay0, dir string) error {
	for _, d := range []string{"bin", "etc/spine", policy.TreeRoot, "proc", "sys", "dev", "run", "tmp", "persist"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return fmt.Errorf("stage %s: %w", d, err)
		}
	}
	if err := copyFile(bay0, filepath.Join(dir, "bin/bay0"), 0o755); err != nil {
		return fmt.Errorf("stage bay0: %w", err)
	}
	pol := cfg.Policy()
	if err := pol.Validate(); err != nil {
		return err
	}
	pb, err := pol.Marshal()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, policy.Path), pb, 0o644); err != nil {
		return fmt.Errorf("stage policy: %w", err)
	}
	for _, p := range cfg.Personas {
		tree := filepath.Join(dir, p.Tree())
		if err := os.MkdirAll(tree, 0o755); err != nil {
			return fmt.Errorf("stage persona %q: %w", p.Name, err)
		}
		if p.Source.Dir != "" {
			if err := copyTree(cfg.resolve(p.Source.Dir), tree); err != nil {
				return fmt.Errorf("persona %q: source dir %q: %w", p.Name, p.Source.Dir, err)
			}
		}
		if p.Source.Go != "" {
			if err := goBuild(ctx, cfg.dir, p.Source.Go, filepath.Join(tree, "bin", filepath.Base(p.Source.Go))); err != nil {
				return fmt.Errorf("persona %q: source go %q: %w", p.Name, p.Source.Go, err)
			}
		}
		if _, err := os.Lstat(filepath.Join(tree, p.Exec[0])); err != nil {
			return fmt.Errorf("persona %q: exec %q is not in its tree", p.Name, p.Exec[0])
		}
	}
	return nil
}

// goBuild builds a static, reproducible binary of a Go package of this module.
func goBuild(ctx context.Context, dir, pkg, out string) error {
	// go build runs in the configuration's directory, so a relative output path would land
	// there rather than in the staged tree.
	out, err := filepath.Abs(out)
	if err != nil {
		return fmt.Errorf("resolve %q: %w", out, err)
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w -buildid=", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if o, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w: %s", err, strings.TrimSpace(string(o)))
	}
	return os.Chmod(out, 0o755)
}

// copyTree copies a directory tree, keeping permission bits (setuid included, so that the
// audit sees them and refuses) and symlinks. Special files cannot be carried into a Spine.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch t := info.Mode().Type(); {
		case t == fs.ModeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
			return os.Chmod(target, info.Mode().Perm()|info.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky))
		case t == fs.ModeSymlink:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case t == 0:
			return copyFile(p, target, info.Mode().Perm()|info.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky))
		default:
			return fmt.Errorf("%s: %s cannot be part of a Spine", rel, describe(t))
		}
	})
}

func describe(t fs.FileMode) string {
	switch {
	case t&fs.ModeDevice != 0:
		return "device node"
	case t&fs.ModeNamedPipe != 0:
		return "named pipe"
	case t&fs.ModeSocket != 0:
		return "socket"
	}
	return "special file"
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	// Chmod after writing: the umask must not decide what lands in the image.
	return os.Chmod(dst, mode)
}
