package build

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"alpinespine.org/spine/internal/bay0/launch"
	"alpinespine.org/spine/internal/format/audit"
	"alpinespine.org/spine/internal/format/image"
	"alpinespine.org/spine/internal/format/manifest"
	"alpinespine.org/spine/internal/format/policy"
	"alpinespine.org/spine/internal/host/debtree"
	"alpinespine.org/spine/internal/host/kernel"
	"alpinespine.org/spine/internal/host/ocitree"
	"alpinespine.org/spine/internal/host/squashfs"
	"alpinespine.org/spine/internal/host/tree"
)

// Options are the inputs of Build besides the configuration file.
type Options struct {
	Config string             // path of the TOML configuration
	Key    ed25519.PrivateKey // signing key
	Bay0   string             // static bay0 binary placed at /bin/bay0
	// PersonaInit is the static persona-init binary (cmd/persona-init) placed at
	// /bin/persona-init: bay0 runs it as the init of every persona.
	PersonaInit string
	Out         string // image path
	// Epoch is SOURCE_DATE_EPOCH; when >= 0 the build is reproducible (fixed timestamps, salt
	// and UUID derived from the inputs). When < 0 the salt and UUID are random.
	Epoch int64
	// Version, when not zero, overrides the configuration's version (release pipelines).
	Version uint64
	Kernel  string // kernel release recorded in the manifest
	// KernelImage, if set, is the kernel image (bzImage) the Spine carries at
	// manifest.KernelPath, whose hash the manifest records: the kernel stage 0 starts for this
	// slot, replaced by an update and brought back by a revert like the rest of the Spine.
	KernelImage string
	Workers     int
	// Cache is where downloaded inputs are kept between builds (Debian packages under debs/);
	// "" is kernel.DefaultCacheDir(). It is only looked up when a persona needs it.
	Cache string
	// AllowFaultInjection lets the e2e suite sign a Spine whose bay0 is a fault-injection test
	// build. It is not reachable from the spine command line: a release build never sets it.
	AllowFaultInjection bool
	// ForcePastAudit places these files (path relative to the root, contents) in the tree and
	// signs it whatever the audit says: the e2e proof that stage 1 refuses a Spine that the
	// builder would not have signed. Like AllowFaultInjection, no command line reaches it.
	ForcePastAudit map[string][]byte
}

// maxManifestRest bounds what a manifest holds besides its sources.
const maxManifestRest = 8 << 10

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
	root := filepath.Join(work, "tree")
	staged, err := Stage(ctx, cfg, StageOptions{Bay0: opts.Bay0, PersonaInit: opts.PersonaInit, Dir: root, Cache: opts.Cache})
	if err != nil {
		return manifest.Manifest{}, err
	}
	// bay0 refuses a manifest larger than manifest.MaxSize; the sources are its only part that
	// grows with the inputs (one entry per Debian package). The rest fits in a few KiB.
	if b, err := json.Marshal(staged.Sources); err != nil || len(b) > manifest.MaxSize-maxManifestRest {
		return manifest.Manifest{}, fmt.Errorf("the persona sources take %d bytes of the manifest, more than its %d-byte limit allows: list fewer packages",
			len(b), manifest.MaxSize)
	}
	var kernelSum string
	if opts.KernelImage != "" {
		if kernelSum, err = placeKernel(opts.KernelImage, opts.Kernel, root); err != nil {
			return manifest.Manifest{}, err
		}
	}
	for rel, data := range opts.ForcePastAudit {
		p := filepath.Join(root, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return manifest.Manifest{}, err
		}
		if err := os.WriteFile(p, data, 0o755); err != nil {
			return manifest.Manifest{}, err
		}
	}
	files, err := audit.Dir(root, nil)
	if err != nil {
		return manifest.Manifest{}, err
	}
	var violations []audit.Violation
	for _, v := range audit.Check(files, audit.DirReader(root)) {
		if opts.AllowFaultInjection && v.Rule == audit.RuleFaultInjection || opts.ForcePastAudit != nil {
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
	if err := squashfs.Make(ctx, root, sqfs, fsEpoch); err != nil {
		return manifest.Manifest{}, err
	}
	salt, uuid, err := saltAndUUID(cfg, epoch)
	if err != nil {
		return manifest.Manifest{}, err
	}
	bay0Sum, err := fileSHA256(filepath.Join(root, "bin/bay0"))
	if err != nil {
		return manifest.Manifest{}, err
	}
	m := manifest.Manifest{
		Format:       manifest.FormatVersion,
		Name:         cfg.Name,
		Version:      cfg.Version,
		Constitution: manifest.Constitution,
		Kernel:       opts.Kernel,
		KernelSHA256: kernelSum,
		Bay0SHA256:   bay0Sum,
		BuildTime:    fsEpoch,
		Sources:      staged.Sources,
	}
	for _, p := range cfg.Personas {
		m.Personas = append(m.Personas, p.Name)
	}
	m, err = image.Assemble(opts.Out, sqfs, image.Assembly{Manifest: m, Key: opts.Key, Salt: salt, UUID: uuid, Workers: opts.Workers})
	if err != nil {
		return manifest.Manifest{}, err
	}
	return m, nil
}

// fileSHA256 is the hex sha256 of the file at path.
func fileSHA256(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// placeKernel copies the kernel image into the tree at manifest.KernelPath and returns its
// sha256. The image must be the release the manifest names, which is what stage 0 and
// spine inspect report.
func placeKernel(image, release, root string) (string, error) {
	b, err := os.ReadFile(image)
	if err != nil {
		return "", fmt.Errorf("kernel image: %w", err)
	}
	if len(b) < 1024 || string(b[0x202:0x206]) != "HdrS" {
		return "", fmt.Errorf("kernel image %s is not a bzImage (no x86 boot header)", image)
	}
	if got, err := kernel.ImageRelease(image); err != nil {
		return "", err
	} else if got != release {
		return "", fmt.Errorf("kernel image %s is release %q, the manifest would say %q", image, got, release)
	}
	dst := filepath.Join(root, filepath.FromSlash(manifest.KernelPath))
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		return "", fmt.Errorf("place kernel image: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
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

// StageOptions are the inputs of Stage besides the configuration.
type StageOptions struct {
	Bay0        string // static bay0 binary placed at /bin/bay0
	PersonaInit string // static persona-init binary placed at /bin/persona-init
	Dir         string // the Spine tree to lay out; it may exist (empty)
	// Cache is where downloaded inputs are kept; "" is kernel.DefaultCacheDir().
	Cache string
}

// Staged is what Stage made besides the tree.
type Staged struct {
	// Policy is the validated policy baked into the tree: the configuration's, with the
	// defaults of OCI images merged in.
	Policy policy.Policy
	// Sources records where the persona trees came from (OCI images, Debian packages), in the
	// configuration's order.
	Sources []manifest.Source
}

// Stage lays out the Spine tree in opts.Dir: /bin/bay0, /bin/persona-init, one tree per persona, the baked policy,
// and the empty mount points bay0 needs.
func Stage(ctx context.Context, cfg Config, opts StageOptions) (Staged, error) {
	dir := opts.Dir
	for _, d := range []string{"bin", "etc/spine", policy.TreeRoot, "proc", "sys", "dev", "run", "tmp", "persist"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return Staged{}, fmt.Errorf("stage %s: %w", d, err)
		}
	}
	if err := copyFile(opts.Bay0, filepath.Join(dir, "bin/bay0"), 0o755); err != nil {
		return Staged{}, fmt.Errorf("stage bay0: %w", err)
	}
	if opts.PersonaInit == "" {
		return Staged{}, errors.New("stage persona-init: no persona-init binary given (build ./cmd/persona-init)")
	}
	if err := copyFile(opts.PersonaInit, filepath.Join(dir, strings.TrimPrefix(launch.InitPath, "/")), 0o755); err != nil {
		return Staged{}, fmt.Errorf("stage persona-init: %w", err)
	}
	st := Staged{Policy: policy.Policy{Governor: cfg.Governor}}
	for _, p := range cfg.Personas {
		q, sources, err := stagePersona(ctx, cfg, p, dir, opts.Cache)
		if err != nil {
			return Staged{}, err
		}
		st.Policy.Personas = append(st.Policy.Personas, q)
		st.Sources = append(st.Sources, sources...)
	}
	if err := st.Policy.Validate(); err != nil {
		return Staged{}, err
	}
	pb, err := st.Policy.Marshal()
	if err != nil {
		return Staged{}, err
	}
	if err := os.WriteFile(filepath.Join(dir, policy.Path), pb, 0o644); err != nil {
		return Staged{}, fmt.Errorf("stage policy: %w", err)
	}
	return st, nil
}

// StagePersona lays out the tree of the configuration's persona name under dir (at
// dir/personas/NAME, as in a Spine) and returns its policy entry with its image's defaults
// merged in and validated as spine build would: for spine run.
func StagePersona(ctx context.Context, cfg Config, name, dir, cache string) (policy.Persona, error) {
	for _, p := range cfg.Personas {
		if p.Name != name {
			continue
		}
		q, _, err := stagePersona(ctx, cfg, p, dir, cache)
		if err != nil {
			return q, err
		}
		pol := policy.Policy{Governor: cfg.Governor, Personas: []policy.Persona{q}}
		if err := pol.Validate(); err != nil {
			return q, err
		}
		if err := pol.Vet(); err != nil {
			return q, err
		}
		return pol.Personas[0], nil
	}
	return policy.Persona{}, fmt.Errorf("the configuration has no persona %q", name)
}

// stagePersona fills one persona's tree from its sources, in the order oci, debian, dir, go,
// and returns its policy entry with the image's defaults merged in.
func stagePersona(ctx context.Context, cfg Config, p Persona, spine, cache string) (policy.Persona, []manifest.Source, error) {
	q := p.Persona
	src := p.Source
	dir := filepath.Join(spine, q.Tree())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return q, nil, fmt.Errorf("stage persona %q: %w", q.Name, err)
	}
	t, err := tree.Open(dir)
	if err != nil {
		return q, nil, fmt.Errorf("stage persona %q: %w", q.Name, err)
	}
	defer t.Close()
	var sources []manifest.Source
	imageUser := ""
	if src.OCI != "" {
		img, err := ocitree.Unpack(ctx, cfg.resolve(src.OCI), t, ocitree.Options{Ref: src.Ref, TempDir: filepath.Dir(spine)})
		if err != nil {
			return q, nil, fmt.Errorf("persona %q: source oci %q: %w", q.Name, src.OCI, err)
		}
		if q, err = imageDefaults(q, img, t); err != nil {
			return q, nil, fmt.Errorf("persona %q: source oci %q: %w", q.Name, src.OCI, err)
		}
		imageUser = img.User
		sources = append(sources, manifest.Source{Persona: q.Name, Kind: "oci", Ref: img.Digest})
	}
	if len(src.Debian) > 0 {
		if cache == "" {
			if cache, err = kernel.DefaultCacheDir(); err != nil {
				return q, nil, fmt.Errorf("persona %q: source debian: %w", q.Name, err)
			}
		}
		res, err := debtree.Install(ctx, t, src.Debian, filepath.Join(cache, "debs"))
		if err != nil {
			return q, nil, fmt.Errorf("persona %q: source debian: %w", q.Name, err)
		}
		for _, pkg := range res.Packages {
			sources = append(sources, manifest.Source{Persona: q.Name, Kind: "debian", Ref: pkg.String()})
		}
	}
	if src.OCI != "" || len(src.Debian) > 0 {
		// What the audit would refuse and a persona cannot need. The operator's own files
		// below are not pruned: the audit judges them as they are.
		if _, err := t.Prune(); err != nil {
			return q, nil, fmt.Errorf("persona %q: prune tree: %w", q.Name, err)
		}
	}
	if src.Dir != "" {
		if err := t.CopyDir(cfg.resolve(src.Dir)); err != nil {
			return q, nil, fmt.Errorf("persona %q: source dir %q: %w", q.Name, src.Dir, err)
		}
	}
	if src.Go != "" {
		if err := goBuildInto(ctx, cfg.dir, src.Go, t, filepath.Dir(spine)); err != nil {
			return q, nil, fmt.Errorf("persona %q: source go %q: %w", q.Name, src.Go, err)
		}
	}
	if _, mode, err := t.Lookup(q.Exec[0]); err != nil || !mode.IsRegular() {
		return q, nil, fmt.Errorf("persona %q: exec %q is not in its tree", q.Name, q.Exec[0])
	}
	// An exec health check runs a program of the tree, never one of the Spine's.
	if h := q.Health; h != nil && len(h.Exec) > 0 {
		if _, mode, err := t.Lookup(h.Exec[0]); err != nil || !mode.IsRegular() {
			return q, nil, fmt.Errorf("persona %q: health exec %q is not in its tree", q.Name, h.Exec[0])
		}
	}
	if q, err = applyUser(q, imageUser, t); err != nil {
		return q, nil, fmt.Errorf("persona %q: %w", q.Name, err)
	}
	// bay0 writes /etc/resolv.conf from dns only into a tree that has none: a dns setting
	// that would be ignored is refused.
	if _, _, err := t.Lookup("/etc/resolv.conf"); err == nil && len(q.DNS) > 0 {
		return q, nil, fmt.Errorf("persona %q: dns is set, but its tree has its own /etc/resolv.conf, which wins: remove one", q.Name)
	}
	return q, sources, nil
}

// defaultPath is the PATH a container runtime gives an image that sets none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// imageDefaults merges an image's config into a persona's policy entry: the image's
// Entrypoint+Cmd where the policy sets no exec (a bare command name is looked up on the image's
// PATH, since the policy wants an absolute path), its Env under the policy's (the policy wins
// for a variable both set), its WorkingDir where the policy sets none and its StopSignal where
// the policy sets no stop_signal.
func imageDefaults(q policy.Persona, img ocitree.Image, t *tree.Tree) (policy.Persona, error) {
	env := mergeEnv(img.Env, q.Env)
	if q.StopSignal == "" && img.StopSignal != "" {
		if _, err := policy.ParseSignal(img.StopSignal); err != nil {
			return q, fmt.Errorf("image %s: StopSignal: %w; set stop_signal in the policy", img.Digest, err)
		}
		q.StopSignal = img.StopSignal
	}
	if q.Workdir == "" && img.WorkingDir != "" {
		q.Workdir = path.Join("/", img.WorkingDir)
	}
	if len(q.Exec) == 0 {
		exec := append(append([]string{}, img.Entrypoint...), img.Cmd...)
		if len(exec) == 0 {
			return q, fmt.Errorf("image %s has no entrypoint or cmd, and the policy sets no exec", img.Digest)
		}
		pathEnv := defaultPath
		for _, e := range env {
			if v, ok := strings.CutPrefix(e, "PATH="); ok {
				pathEnv = v
			}
		}
		bin, err := t.LookPath(exec[0], pathEnv, q.Workdir)
		if err != nil {
			return q, fmt.Errorf("image entrypoint: %w", err)
		}
		exec[0] = bin
		q.Exec = exec
	}
	q.Env = env
	return q, nil
}

// mergeEnv returns the image's variables, each replaced by the policy's value when the policy
// sets it, followed by the policy's other variables.
func mergeEnv(image, pol []string) []string {
	set := map[string]string{}
	var order []string
	for _, e := range pol {
		k, _, _ := strings.Cut(e, "=")
		if _, dup := set[k]; !dup {
			order = append(order, k)
		}
		set[k] = e
	}
	var out []string
	used := map[string]bool{}
	for _, e := range image {
		k, _, _ := strings.Cut(e, "=")
		if used[k] {
			continue
		}
		used[k] = true
		if v, ok := set[k]; ok {
			out = append(out, v)
			continue
		}
		out = append(out, e)
	}
	for _, k := range order {
		if !used[k] {
			out = append(out, set[k])
		}
	}
	return out
}

// goBuildInto builds a Go package into /bin/<last path element> of the tree. The binary is
// built beside the tree first: go build would follow a symlink the tree has at that path.
func goBuildInto(ctx context.Context, dir, pkg string, t *tree.Tree, scratch string) error {
	tmp, err := os.MkdirTemp(scratch, "spine-go-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "bin")
	if err := GoStatic(ctx, dir, pkg, bin); err != nil {
		return err
	}
	f, err := os.Open(bin)
	if err != nil {
		return err
	}
	defer f.Close()
	return t.WriteFile("bin/"+filepath.Base(pkg), f, 0o755)
}

// GoStatic builds a static, reproducible binary of a Go package of this module, from dir.
func GoStatic(ctx context.Context, dir, pkg, out string, tags ...string) error {
	return GoStaticVars(ctx, dir, pkg, out, nil, tags...)
}

// GoStaticVars is GoStatic with string variables set at link time (-ldflags -X name=value):
// vars maps a variable's full name (import path.name) to its value.
func GoStaticVars(ctx context.Context, dir, pkg, out string, vars map[string]string, tags ...string) error {
	// go build runs in dir, so a relative output path would land there rather than where the
	// caller meant.
	out, err := filepath.Abs(out)
	if err != nil {
		return fmt.Errorf("resolve %q: %w", out, err)
	}
	ldflags := "-ldflags=-s -w -buildid="
	for _, name := range slices.Sorted(maps.Keys(vars)) {
		// go splits -ldflags at spaces and reads quotes: keep each -X one plain word.
		if strings.ContainsAny(name+vars[name], " \t\n'\"\\") {
			return fmt.Errorf("go build %s: link-time variable %s=%q has a space or a quote", pkg, name, vars[name])
		}
		ldflags += " -X " + name + "=" + vars[name]
	}
	args := []string{"build", "-trimpath", ldflags, "-o", out}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	cmd := exec.CommandContext(ctx, "go", append(args, pkg)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if o, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w: %s", pkg, err, strings.TrimSpace(string(o)))
	}
	return os.Chmod(out, 0o755)
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
