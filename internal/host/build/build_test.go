package build

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/format/audit"
	"alpinespine.org/spine/internal/format/image"
	"alpinespine.org/spine/internal/format/manifest"
	"alpinespine.org/spine/internal/format/policy"
	"alpinespine.org/spine/internal/host/squashfs"
)

const testConfig = `name = "test"
version = 4

[governor]
passphrase_attempts = 2

[[persona]]
name = "app"
exec = ["/bin/app"]
cpus = 0.5
memory = "16MiB"
pids = 8
[persona.source]
dir = "app"
`

var time0 = time.Unix(1, 0)

func mkfifo(t *testing.T, p string) {
	t.Helper()
	if err := unix.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
}

var testKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, ed25519.SeedSize))

// project writes a configuration, a persona source tree and stand-ins for bay0 and
// persona-init (the builder copies them, it never runs them) into a fresh directory.
func project(t *testing.T, config string) (dir string, opts Options) {
	t.Helper()
	dir = t.TempDir()
	write(t, filepath.Join(dir, "spine.toml"), config, 0o644)
	write(t, filepath.Join(dir, "app/bin/app"), "#!app\n", 0o755)
	write(t, filepath.Join(dir, "bay0"), "\x7fELF stand-in bay0", 0o755)
	write(t, filepath.Join(dir, "persona-init"), "\x7fELF stand-in persona-init", 0o755)
	if err := os.Mkdir(filepath.Join(dir, "out"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, Options{Config: filepath.Join(dir, "spine.toml"), Key: testKey, Bay0: filepath.Join(dir, "bay0"),
		PersonaInit: filepath.Join(dir, "persona-init"), Out: filepath.Join(dir, "out", "spine.img"), Epoch: 1700000000, Kernel: "6.1.0-test", Workers: 1}
}

func write(t *testing.T, p, data string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func TestLoadConfigStrict(t *testing.T) {
	for _, tc := range []struct {
		name, old, new, want string
	}{
		{"top level", "version = 4\n", "version = 4\nsigning = \"yes\"\n", `line 3: unknown key "signing"`},
		{"governor", "passphrase_attempts = 2\n", "passphrase_attempts = 2\nwatchdog = \"1s\"\n", `line 6: unknown key "governor.watchdog"`},
		{"persona", "pids = 8\n", "pids = 8\nmemroy = \"1GiB\"\n", `line 13: unknown key "persona.memroy"`},
		{"persona source", "dir = \"app\"\n", "dir = \"app\"\ndocker = \"alpine\"\n", `line 15: unknown key "persona.source.docker"`},
		{"no cpus", "cpus = 0.5\n", "", "cpus is mandatory"},
		{"no memory", "memory = \"16MiB\"\n", "", "memory is mandatory"},
		{"no pids", "pids = 8\n", "", "pids is mandatory"},
		{"no name", "name = \"test\"\n", "", "name is missing"},
		{"no version", "version = 4\n", "", "version is missing"},
		{"no source", "dir = \"app\"\n", "", "source needs one of oci, debian, dir or go"},
		{"syntax", "version = 4\n", "version = \n", "line 2"},
		{"misspelt syscall", "pids = 8\n", "pids = 8\nsyscalls = [\"epoll_create2\"]\n",
			`persona "app": syscalls: "epoll_create2": unknown system call (did you mean epoll_create, epoll_create1`},
		{"syscall below the floor", "pids = 8\n", "pids = 8\nsyscalls = [\"accept4\", \"io_uring_setup\"]\n",
			`persona "app": syscalls: "io_uring_setup" bypasses the system call filter (io_uring): system call below the floor`},
		{"unknown protocol", "pids = 8\n", "pids = 8\nprotocols = [\"dccp\"]\n", `protocols: "dccp" is not one of`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(testConfig, tc.old) {
				t.Fatalf("config has no %q", tc.old)
			}
			p := filepath.Join(t.TempDir(), "spine.toml")
			write(t, p, strings.Replace(testConfig, tc.old, tc.new, 1), 0o644)
			_, err := LoadConfig(p)
			if err == nil {
				t.Fatal("LoadConfig accepted it")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
				t.Errorf("error %q does not name %q and the file", err, tc.want)
			}
		})
	}
}

func TestLoadDemoConfig(t *testing.T) {
	c, err := LoadConfig("../../../demo/spine.toml")
	if err != nil {
		t.Fatal(err)
	}
	pol := c.Policy()
	if err := pol.Validate(); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range pol.Personas {
		names = append(names, p.Name)
	}
	if c.Name != "demo" || !reflect.DeepEqual(names, []string{"heartbeat", "web"}) {
		t.Errorf("demo config: name %q personas %v", c.Name, names)
	}
}

func TestBuild(t *testing.T) {
	ctx := context.Background()
	_, opts := project(t, testConfig)
	m, err := Build(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "test" || m.Version != 4 || m.BuildTime != 1700000000 || m.Kernel != "6.1.0-test" || !reflect.DeepEqual(m.Personas, []string{"app"}) {
		t.Errorf("manifest %+v", m)
	}
	got, err := image.CheckFile(opts.Out, []ed25519.PublicKey{testKey.Public().(ed25519.PublicKey)}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got.RootHash != m.RootHash {
		t.Errorf("image root hash %s, Build said %s", got.RootHash, m.RootHash)
	}
	entries, err := squashfs.List(ctx, opts.Out)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, e := range entries {
		paths = append(paths, e.Path)
	}
	want := []string{"", "bin", "bin/bay0", "bin/persona-init", "dev", "etc", "etc/spine", "etc/spine/policy.json", "persist",
		"personas", "personas/app", "personas/app/bin", "personas/app/bin/app", "proc", "run", "sys", "tmp"}
	if !reflect.DeepEqual(paths, want) {
		t.Errorf("image holds %q\nwant %q", paths, want)
	}
	pb, err := squashfs.Cat(ctx, opts.Out, policy.Path)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Parse(bytes.NewReader(pb))
	if err != nil {
		t.Fatalf("baked policy: %v\n%s", err, pb)
	}
	if pol.Governor.PassphraseAttempts != 2 || len(pol.Personas) != 1 || pol.Personas[0].CPUMax() != "50000 100000" {
		t.Errorf("baked policy %+v", pol)
	}
	if ents, _ := os.ReadDir(filepath.Dir(opts.Out)); len(ents) != 1 {
		t.Errorf("build left more than the image behind: %v", ents)
	}
}

// TestBuildCarriesKernel: the kernel image lands at manifest.KernelPath (checked with
// unsquashfs) and the signed manifest records its hash; something that is not a bzImage is
// refused before anything is written.
func TestBuildCarriesKernel(t *testing.T) {
	ctx := context.Background()
	dir, opts := project(t, testConfig)
	kern := make([]byte, 4096)
	copy(kern[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(kern[0x20e:], 1024-0x200) // the version string's offset
	copy(kern[1024:], opts.Kernel+" (not really a kernel) #1\x00")
	opts.KernelImage = filepath.Join(dir, "bzImage")
	if err := os.WriteFile(opts.KernelImage, kern, 0o644); err != nil {
		t.Fatal(err)
	}
	// The manifest names the release the image is, or nothing is built.
	named := opts.Kernel
	opts.Kernel = "6.1.0-other"
	if _, err := Build(ctx, opts); err == nil || !strings.Contains(err.Error(), `release "6.1.0-test"`) {
		t.Errorf("a kernel image of another release: %v", err)
	}
	opts.Kernel = named
	m, err := Build(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(kern)
	if m.KernelSHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("manifest kernel_sha256 %q, want %x", m.KernelSHA256, sum)
	}
	got, err := squashfs.Cat(ctx, opts.Out, manifest.KernelPath)
	if err != nil || !bytes.Equal(got, kern) {
		t.Errorf("image's %s: %d bytes, %v", manifest.KernelPath, len(got), err)
	}

	if err := os.WriteFile(opts.KernelImage, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	opts.Out = filepath.Join(dir, "other.spine")
	if _, err := Build(ctx, opts); err == nil || !strings.Contains(err.Error(), "not a bzImage") {
		t.Errorf("a shell script as kernel: %v", err)
	}
	if _, err := os.Stat(opts.Out); !os.IsNotExist(err) {
		t.Errorf("a refused build left %s: %v", opts.Out, err)
	}
}

func TestBuildReproducible(t *testing.T) {
	ctx := context.Background()
	_, opts := project(t, testConfig)
	if _, err := Build(ctx, opts); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(opts.Out)
	// The same inputs in another directory, with other host timestamps.
	dir2, opts2 := project(t, testConfig)
	for _, p := range []string{"app/bin/app", "app/bin", "bay0"} {
		if err := os.Chtimes(filepath.Join(dir2, p), time0, time0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Build(ctx, opts2); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(opts2.Out)
	if !bytes.Equal(a, b) {
		t.Error("same inputs and epoch, different images")
	}

	// Without an epoch the salt and UUID are drawn at random.
	opts.Epoch, opts2.Epoch = -1, -1
	m1, err := Build(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := Build(ctx, opts2)
	if err != nil {
		t.Fatal(err)
	}
	if m1.Salt == m2.Salt || m1.UUID == m2.UUID || m1.RootHash == m2.RootHash {
		t.Errorf("without SOURCE_DATE_EPOCH two builds share salt %s / uuid %s", m1.Salt, m1.UUID)
	}
	// The version is part of the derived salt: another release, another tree.
	opts.Epoch, opts.Version = 1700000000, 9
	m3, err := Build(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if m3.Version != 9 {
		t.Errorf("version override: %d", m3.Version)
	}
}

// TestBuildNeedsPersonaInit: a Spine without /bin/persona-init could start no persona, so the
// builder refuses to make one, naming what is missing, and leaves no image.
func TestBuildNeedsPersonaInit(t *testing.T) {
	_, opts := project(t, testConfig)
	opts.PersonaInit = ""
	if _, err := Build(context.Background(), opts); err == nil || !strings.Contains(err.Error(), "persona-init") {
		t.Fatalf("Build without persona-init = %v", err)
	}
	if _, err := os.Stat(opts.Out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an image was left at %s: %v", opts.Out, err)
	}
}

// TestBuildRefusesAudit: every violation is listed, and no image or scratch file is left.
func TestBuildRefusesAudit(t *testing.T) {
	dir, opts := project(t, testConfig)
	write(t, filepath.Join(dir, "app/usr/bin/dpkg"), "dpkg", 0o755)
	write(t, filepath.Join(dir, "app/bin/su"), "su", 0o755|os.ModeSetuid)
	write(t, filepath.Join(dir, "app/etc/shadow"), "open", 0o666)
	write(t, filepath.Join(dir, "app/bin/wall"), "wall", 0o755|os.ModeSetgid)
	_, err := Build(context.Background(), opts)
	var ae *AuditError
	if !errors.As(err, &ae) {
		t.Fatalf("Build = %v, want an AuditError", err)
	}
	want := []audit.Violation{
		{Path: "personas/app/bin/su", Rule: "setuid"},
		{Path: "personas/app/bin/wall", Rule: "setgid"},
		{Path: "personas/app/etc/shadow", Rule: "world-writable"},
		{Path: "personas/app/usr/bin/dpkg", Rule: "package manager"},
	}
	got := ae.Violations
	sort.Slice(got, func(i, j int) bool { return got[i].Path < got[j].Path })
	if !reflect.DeepEqual(got, want) {
		t.Errorf("violations %v, want %v", got, want)
	}
	for _, v := range want {
		if !strings.Contains(err.Error(), v.String()) {
			t.Errorf("error does not list %s:\n%v", v, err)
		}
	}
	if ents, _ := os.ReadDir(filepath.Dir(opts.Out)); len(ents) != 0 {
		t.Errorf("refused build left %v behind", ents)
	}
}

func TestBuildRefusesFaultInjection(t *testing.T) {
	dir, opts := project(t, testConfig)
	write(t, filepath.Join(dir, "bay0"), "\x7fELF..."+audit.FaultMarker+"...", 0o755)
	_, err := Build(context.Background(), opts)
	if err == nil || !strings.Contains(err.Error(), "fault injection") {
		t.Errorf("Build = %v, want a refusal naming fault injection", err)
	}
	if _, err := os.Stat(opts.Out); err == nil {
		t.Error("image written")
	}
}

func TestBuildErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(dir string, o *Options)
		want string
	}{
		{"exec missing", func(dir string, o *Options) { os.Remove(filepath.Join(dir, "app/bin/app")) }, `exec "/bin/app"`},
		{"health exec missing", func(dir string, o *Options) {
			os.WriteFile(o.Config, []byte(testConfig+"[persona.health]\nexec = [\"/bin/nope\", \"ping\"]\n"), 0o644)
		}, `health exec "/bin/nope" is not in its tree`},
		{"no bay0", func(dir string, o *Options) { o.Bay0 = filepath.Join(dir, "nope") }, "bay0"},
		{"source missing", func(dir string, o *Options) { os.RemoveAll(filepath.Join(dir, "app")) }, "source dir"},
		{"fifo in source", func(dir string, o *Options) { mkfifo(t, filepath.Join(dir, "app/fifo")) }, "named pipe"},
		{"config missing", func(dir string, o *Options) { o.Config = filepath.Join(dir, "nope.toml") }, "read config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, opts := project(t, testConfig)
			tc.edit(dir, &opts)
			_, err := Build(context.Background(), opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Build = %v, want an error about %q", err, tc.want)
			}
			if ents, _ := os.ReadDir(filepath.Dir(opts.Out)); len(ents) != 0 {
				t.Errorf("failed build left %v behind", ents)
			}
		})
	}
}

// TestBuildDemo builds the demo configuration (its personas are Go packages of this module)
// with a relative output path: go build runs in the configuration's directory, and the
// binary must still land in the staged tree.
func TestBuildDemo(t *testing.T) {
	demo, err := filepath.Abs("../../../demo/spine.toml")
	if err != nil {
		t.Fatal(err)
	}
	_, opts := project(t, testConfig)
	t.Chdir(filepath.Dir(opts.Out))
	opts.Config, opts.Out = demo, "demo.img"
	m, err := Build(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := image.CheckFile("demo.img", []ed25519.PublicKey{testKey.Public().(ed25519.PublicKey)}, 0); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m.Personas, []string{"heartbeat", "web"}) {
		t.Errorf("personas %v", m.Personas)
	}
}

// TestFaultKindLinksOnlyIntoTestBuilds: GoStaticVars links a fault kind into a fault-injection
// build of bay0 (how the e2e suite makes a disk carry its fault); a release build has no such
// variable, so the same flag leaves no trace in it. A value go would split is refused.
func TestFaultKindLinksOnlyIntoTestBuilds(t *testing.T) {
	const kind = "crash-linkcheck-7f3a9c"
	vars := map[string]string{"alpinespine.org/spine/internal/bay0/fault.builtin": kind}
	dir := t.TempDir()
	for _, c := range []struct {
		tags []string
		want bool
	}{{[]string{"faultinject"}, true}, {nil, false}} {
		out := filepath.Join(dir, "bay0-"+strings.Join(c.tags, ""))
		if err := GoStaticVars(context.Background(), "../../..", "./cmd/bay0", out, vars, c.tags...); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if got := bytes.Contains(b, []byte(kind)); got != c.want {
			t.Errorf("bay0 built with tags %v carries the linked fault kind: %v, want %v", c.tags, got, c.want)
		}
	}
	err := GoStaticVars(context.Background(), "../../..", "./cmd/bay0", filepath.Join(dir, "x"), map[string]string{"a.b": "two words"})
	if err == nil || !strings.Contains(err.Error(), "space or a quote") {
		t.Errorf("a value with a space: %v", err)
	}
}
