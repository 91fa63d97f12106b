//go:build e2e

// Package e2e boots real Spines under QEMU: Spine's own kernel, our initramfs and bay0, real
// dm-verity, real SquashFS. Each file proves one part of the constitution; every scenario checks
// the happy path or the attack and fails when the property breaks. A missing QEMU or kernel is
// a failure, never a skip.
package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"alpinespine.org/spine/internal/bay0/fault"
	"alpinespine.org/spine/internal/format/initramfs"
	"alpinespine.org/spine/internal/format/keys"
	"alpinespine.org/spine/internal/host/build"
	"alpinespine.org/spine/internal/host/kernel"
	"alpinespine.org/spine/internal/host/vm"
)

// fixture is built once per run and shared, read-only, by every scenario.
type fixture struct {
	dir    string
	kernel kernel.Kernel
	bay0   string
	// personaInit is /bin/persona-init of every Spine the scenarios build.
	personaInit string
	key         ed25519.PrivateKey
	otherKey    ed25519.PrivateKey // not trusted by the initramfs
	initrd      string
	pub         []byte // the trusted public key (PEM) baked into the initramfs
	accel       string // QEMU accelerator, probed once
	// unusedPattern is a run of bytes found only inside a file of the "tiny" Spine that nothing
	// ever reads, so damage there is invisible to lazy verification.
	unusedPattern []byte
}

var fx fixture

func TestMain(m *testing.M) {
	if err := setup(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e setup failed: %v\n", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(fx.dir)
	os.Exit(code)
}

func repoRoot() string {
	wd, _ := os.Getwd()
	return filepath.Dir(wd)
}

func setup() error {
	ctx := context.Background()
	for _, tool := range []string{"qemu-system-x86_64", "mksquashfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is missing (run scripts/deps.sh): %w", tool, err)
		}
	}
	dir, err := os.MkdirTemp("", "spine-e2e-")
	if err != nil {
		return err
	}
	fx.dir = dir
	if fx.kernel, err = kernel.Default(ctx, os.Stderr); err != nil {
		return fmt.Errorf("build kernel: %w", err)
	}
	fx.accel = vm.DetectAccel(ctx, vm.DefaultQEMU)
	fx.bay0 = filepath.Join(dir, "bay0")
	if err := goBuild(fx.bay0, "./cmd/bay0"); err != nil {
		return err
	}
	fx.personaInit = filepath.Join(dir, "persona-init")
	if err := goBuild(fx.personaInit, "./cmd/persona-init"); err != nil {
		return err
	}
	// Fixed keys: stage 0, which carries the trusted key, is then built once per bay0, not once
	// per run (each build is a relink and 5 MB in the kernel cache).
	for i, p := range []*ed25519.PrivateKey{&fx.key, &fx.otherKey} {
		kd := filepath.Join(dir, fmt.Sprintf("keys%d", i))
		seed := sha256.Sum256([]byte(fmt.Sprintf("alpinespine.org/spine/e2e signing key %d", i)))
		if err := keys.WritePair(kd, ed25519.NewKeyFromSeed(seed[:])); err != nil {
			return err
		}
		if *p, err = keys.LoadPrivate(filepath.Join(kd, keys.PrivateFile)); err != nil {
			return err
		}
	}
	pub, err := os.ReadFile(filepath.Join(dir, "keys0", keys.PublicFile))
	if err != nil {
		return err
	}
	fx.pub = pub
	fx.initrd = filepath.Join(dir, "initrd.gz")
	if err := buildInitrd(fx.initrd, fx.bay0); err != nil {
		return err
	}
	// A file of random bytes in a persona tree: random data does not compress, so SquashFS
	// stores it verbatim and the test can find and damage it in the image.
	unused := make([]byte, 256<<10)
	rand.New(rand.NewSource(7)).Read(unused)
	fx.unusedPattern = unused[100<<10 : 100<<10+64]
	tree := filepath.Join(dir, "tiny-tree", "bin")
	if err := os.MkdirAll(tree, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "tiny-tree", "unused.bin"), unused, 0o644); err != nil {
		return err
	}
	if err := goBuild(filepath.Join(tree, "heartbeat"), "./personas/heartbeat"); err != nil {
		return err
	}
	return setupPersist(ctx)
}

// buildInitrd writes the initramfs with the given bay0 and the shared kernel's modules and key.
func buildInitrd(out, bay0Path string) error {
	bay0, err := os.ReadFile(bay0Path)
	if err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	err = initramfs.Build(f, initramfs.Spec{Bay0: bay0, TrustedKeys: [][]byte{fx.pub}})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("build initramfs: %w", err)
	}
	return nil
}

var faultInitrdOnce struct {
	sync.Once
	path string
	err  error
}

// faultInitrd is the initramfs whose stage 1 is the fault-injection build, once per run.
func faultInitrd(t testing.TB) string {
	bay0 := faultBay0(t)
	faultInitrdOnce.Do(func() {
		faultInitrdOnce.path = filepath.Join(fx.dir, "initrd-faultinject.gz")
		faultInitrdOnce.err = buildInitrd(faultInitrdOnce.path, bay0)
	})
	if faultInitrdOnce.err != nil {
		t.Fatal(faultInitrdOnce.err)
	}
	return faultInitrdOnce.path
}

var faultOnce struct {
	sync.Once
	path string
	err  error
}

// faultBay0 builds bay0 with the test-only fault injection, once per run.
func faultBay0(t testing.TB) string {
	faultOnce.Do(func() {
		faultOnce.path = filepath.Join(fx.dir, "bay0-faultinject")
		faultOnce.err = goBuild(faultOnce.path, "./cmd/bay0", "faultinject")
	})
	if faultOnce.err != nil {
		t.Fatal(faultOnce.err)
	}
	return faultOnce.path
}

// builtinFaults holds one fault-injection bay0 per linked-in fault kind, built once per run.
var builtinFaults sync.Map // kind -> func() (string, error)

// builtinFaultBay0 builds bay0 with the test-only fault injection and the fault kind linked
// in, once per run and kind.
func builtinFaultBay0(t testing.TB, kind string) string {
	once, _ := builtinFaults.LoadOrStore(kind, sync.OnceValues(func() (string, error) {
		p := filepath.Join(fx.dir, "bay0-fault-"+kind)
		return p, build.GoStaticVars(context.Background(), repoRoot(), "./cmd/bay0", p, map[string]string{fault.BuiltinVar: kind}, "faultinject")
	}))
	p, err := once.(func() (string, error))()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// goBuild builds a static binary of a package of this repository, as spine build does.
func goBuild(out, pkg string, tags ...string) error {
	return build.GoStatic(context.Background(), repoRoot(), pkg, out, tags...)
}

// spineOpts shape a test Spine.
type spineOpts struct {
	name    string
	version uint64
	key     ed25519.PrivateKey // default fx.key
	bay0    string             // default fx.bay0
	// governor holds extra lines of the [governor] table.
	governor string
	// faulty builds the Spine with the fault-injection test build of bay0.
	faulty bool
	// force signs these extra files into the Spine whatever the builder's audit says.
	force map[string][]byte
	// personas are more [[persona]] tables, after the idle one.
	personas string
	// kernel has the Spine carry Spine's kernel, as spine build does: what stage 0 starts.
	kernel bool
	// kern, if set, is the kernel the Spine carries instead of Spine's (implies kernel).
	kern *kernel.Kernel
	// fault builds the Spine with a fault-injection bay0 whose fault kind is linked in
	// (fault.BuiltinVar): the disk carries the fault, for boots no command line reaches.
	fault string
}

// buildSpine builds a small signed Spine with one persona and returns its path.
func buildSpine(t testing.TB, o spineOpts) string {
	t.Helper()
	if o.name == "" {
		o.name = "tiny"
	}
	if o.version == 0 {
		o.version = 1
	}
	if o.key == nil {
		o.key = fx.key
	}
	if o.bay0 == "" {
		o.bay0 = fx.bay0
		switch {
		case o.fault != "":
			o.bay0, o.faulty = builtinFaultBay0(t, o.fault), true
		case o.faulty:
			o.bay0 = faultBay0(t)
		}
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "spine.toml")
	conf := fmt.Sprintf(`name = %q
version = %d
[governor]
%s
[[persona]]
name = "idle"
exec = ["/bin/heartbeat"]
cpus = 0.1
memory = "16MiB"
pids = 8
[persona.source]
dir = %q
%s
`, o.name, o.version, o.governor, filepath.Join(fx.dir, "tiny-tree"), o.personas)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, fmt.Sprintf("%s-v%d.spine", o.name, o.version))
	start := time.Now()
	kern, kernelImage := fx.kernel, ""
	if o.kern != nil {
		kern, o.kernel = *o.kern, true
	}
	if o.kernel {
		kernelImage = kern.Image
	}
	if _, err := build.Build(context.Background(), build.Options{Config: cfg, Key: o.key, Bay0: o.bay0, PersonaInit: fx.personaInit, Out: out,
		Epoch: 1767225600, Kernel: kern.Release, KernelImage: kernelImage, AllowFaultInjection: o.faulty, ForcePastAudit: o.force}); err != nil {
		t.Fatalf("build spine: %v", err)
	}
	t.Logf("built %s in %s", filepath.Base(out), time.Since(start).Round(time.Millisecond))
	return out
}
