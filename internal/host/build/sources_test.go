package build

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"alpinespine.org/spine/internal/format/image"
	"alpinespine.org/spine/internal/format/manifest"
	"alpinespine.org/spine/internal/format/policy"
	"alpinespine.org/spine/internal/host/ocitree"
	"alpinespine.org/spine/internal/host/ocitree/ocitest"
	"alpinespine.org/spine/internal/host/squashfs"
)

// ociImage is a small image made like a real one: a base layer with things a Spine must not
// carry (setuid, a world-writable file, a device node, a package database, another init), and an
// application layer that deletes a file (whiteout) and replaces a directory (opaque whiteout).
var ociImage = ocitest.Image{
	Layers: [][]ocitest.File{
		{
			{Name: "usr/bin/", Type: tar.TypeDir, Mode: 0o755},
			{Name: "bin", Type: tar.TypeSymlink, Link: "usr/bin"},
			{Name: "usr/bin/sh", Body: "#!shell", Mode: 0o755},
			{Name: "usr/bin/passwd", Body: "suid", Mode: 0o4755},
			{Name: "usr/bin/dpkg", Body: "dpkg", Mode: 0o755},
			{Name: "sbin/init", Type: tar.TypeSymlink, Link: "/lib/systemd/systemd"},
			{Name: "var/lib/dpkg/status", Body: "Package: base"},
			{Name: "tmp/", Type: tar.TypeDir, Mode: 0o1777},
			{Name: "etc/scratch", Body: "rw", Mode: 0o666},
			{Name: "etc/passwd", Body: "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"},
			{Name: "etc/group", Body: "root:x:0:\nnogroup:x:65534:\nwww:x:33:\n"},
			{Name: "dev/null", Type: tar.TypeChar, Mode: 0o666},
			{Name: "etc/old.conf", Body: "old"},
			{Name: "srv/www/old.html", Body: "old"},
		},
		{
			{Name: "usr/bin/server", Body: "#!server", Mode: 0o755},
			{Name: "etc/.wh.old.conf"},
			{Name: "srv/www/.wh..wh..opq"},
			{Name: "srv/www/index.html", Body: "hello from an image"},
		},
	},
	Config: ocitest.Config{Entrypoint: []string{"server"}, Cmd: []string{"--port", "80"},
		Env: []string{"PATH=/usr/bin:/bin", "GREETING=image", "MODE=image"}, WorkingDir: "/srv/www", User: "nobody", StopSignal: "SIGQUIT"},
	Ref: "latest",
}

const ociConfig = `name = "test"
version = 4

[[persona]]
name = "app"
env = ["MODE=policy", "EXTRA=1"]
cpus = 0.5
memory = "16MiB"
pids = 8
[persona.source]
oci = "image"
dir = "app"
`

// TestBuildOCIPersona builds a Spine whose persona comes from an OCI layout (and the
// operator's own files on top): the tree holds the image's files with its whiteouts applied and
// normalised, the baked policy runs the image's entrypoint with its env and workdir, the
// manifest records the image's digest, and the audit accepts it all.
func TestBuildOCIPersona(t *testing.T) {
	ctx := context.Background()
	dir, opts := project(t, ociConfig)
	w, err := ocitest.Write(filepath.Join(dir, "image"), ociImage)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Build(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if want := []manifest.Source{{Persona: "app", Kind: "oci", Ref: w[0].Digest}}; !reflect.DeepEqual(m.Sources, want) {
		t.Errorf("manifest sources %+v, want %+v", m.Sources, want)
	}
	got, err := image.CheckFile(opts.Out, []ed25519.PublicKey{testKey.Public().(ed25519.PublicKey)}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Sources, m.Sources) {
		t.Errorf("signed manifest sources %+v", got.Sources)
	}
	again := opts
	again.Out = filepath.Join(t.TempDir(), "again.img")
	if m2, err := Build(ctx, again); err != nil || m2.RootHash != m.RootHash {
		t.Errorf("second build: %v, root hash %s, first %s", err, m2.RootHash, m.RootHash)
	}
	entries, err := squashfs.List(ctx, opts.Out)
	if err != nil {
		t.Fatal(err)
	}
	modes := map[string]string{}
	for _, e := range entries {
		if p, ok := strings.CutPrefix(e.Path, "personas/app/"); ok {
			modes[p] = e.Mode.String()
		}
	}
	want := map[string]string{
		"bin":                "Lrwxrwxrwx", // the dir source's bin/app went through it
		"etc":                "drwxr-xr-x",
		"etc/scratch":        "-rw-r--r--",
		"etc/passwd":         "-rw-r--r--",
		"etc/group":          "-rw-r--r--",
		"sbin":               "drwxr-xr-x", // init pruned
		"srv":                "drwxr-xr-x",
		"srv/www":            "drwxr-xr-x",
		"srv/www/index.html": "-rw-r--r--",
		"tmp":                "drwxr-xr-x",
		"usr":                "drwxr-xr-x",
		"usr/bin":            "drwxr-xr-x",
		"usr/bin/app":        "-rwxr-xr-x",
		"usr/bin/passwd":     "-rwxr-xr-x",
		"usr/bin/server":     "-rwxr-xr-x",
		"usr/bin/sh":         "-rwxr-xr-x",
		"var":                "drwxr-xr-x",
		"var/lib":            "drwxr-xr-x",
	}
	if !reflect.DeepEqual(modes, want) {
		t.Errorf("persona tree:\n%v\nwant\n%v", modes, want)
	}
	pb, err := squashfs.Cat(ctx, opts.Out, policy.Path)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Parse(bytes.NewReader(pb))
	if err != nil {
		t.Fatalf("baked policy: %v\n%s", err, pb)
	}
	p := pol.Personas[0]
	if !reflect.DeepEqual(p.Exec, []string{"/usr/bin/server", "--port", "80"}) || p.Workdir != "/srv/www" ||
		!reflect.DeepEqual(p.Env, []string{"PATH=/usr/bin:/bin", "GREETING=image", "MODE=policy", "EXTRA=1", "HOME=/nonexistent"}) ||
		p.StopSignal != "SIGQUIT" || p.User != "65534:65534" {
		t.Errorf("baked persona %+v", p)
	}
}

// TestBuildOCIPolicyWins: exec and workdir set in the policy are not replaced by the image's.
func TestBuildOCIPolicyWins(t *testing.T) {
	cfg := strings.Replace(ociConfig, "env = ", "exec = [\"/bin/app\", \"-x\"]\nworkdir = \"/\"\nstop_signal = \"INT\"\nuser = \"1000:www\"\nenv = ", 1)
	dir, opts := project(t, cfg)
	if _, err := ocitest.Write(filepath.Join(dir, "image"), ociImage); err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	c, err := LoadConfig(opts.Config)
	if err != nil {
		t.Fatal(err)
	}
	st, err := Stage(context.Background(), c, StageOptions{Bay0: opts.Bay0, PersonaInit: opts.PersonaInit, Dir: filepath.Join(work, "tree")})
	if err != nil {
		t.Fatal(err)
	}
	p := st.Policy.Personas[0]
	if !reflect.DeepEqual(p.Exec, []string{"/bin/app", "-x"}) || p.Workdir != "/" || p.StopSignal != "SIGINT" ||
		p.User != "1000:33" || hasEnv(p.Env, "HOME") {
		t.Errorf("staged persona %+v", p)
	}
}

func TestBuildOCIErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(t *testing.T, dir string, w ocitest.Written)
		img  func(im *ocitest.Image)
		want []string
	}{
		{"broken layer", func(t *testing.T, dir string, w ocitest.Written) {
			p := ocitest.BlobPath(filepath.Join(dir, "image"), w.Layers[1])
			b, _ := os.ReadFile(p)
			b[len(b)/2] ^= 1
			write(t, p, string(b), 0o644)
		}, nil, []string{`persona "app"`, `source oci "image"`, "layer sha256:", "does not match its digest"}},
		{"image user", nil, func(im *ocitest.Image) { im.Config.User = "postgres" },
			[]string{`persona "app"`, "the image's User", `user "postgres": no such user in the persona's /etc/passwd`}},
		{"image group", nil, func(im *ocitest.Image) { im.Config.User = "nobody:staff" },
			[]string{`persona "app"`, `group "staff": no such group in the persona's /etc/group`}},
		{"stop signal", nil, func(im *ocitest.Image) { im.Config.StopSignal = "SIGRTMIN+3" },
			[]string{`persona "app"`, "StopSignal", `"SIGRTMIN+3"`, "set stop_signal in the policy"}},
		{"no entrypoint", nil, func(im *ocitest.Image) { im.Config.Entrypoint, im.Config.Cmd = nil, nil },
			[]string{`persona "app"`, "no entrypoint or cmd"}},
		{"entrypoint not on PATH", nil, func(im *ocitest.Image) { im.Config.Entrypoint = []string{"nginx"} },
			[]string{`persona "app"`, `"nginx" is not in the tree`}},
		{"two images", func(t *testing.T, dir string, w ocitest.Written) {
			other := ociImage
			other.Ref = "other"
			if _, err := ocitest.Write(filepath.Join(dir, "image"), ociImage, other); err != nil {
				t.Fatal(err)
			}
		}, nil, []string{"choose one with ref"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, opts := project(t, ociConfig)
			im := ociImage
			im.Layers = append([][]ocitest.File{}, ociImage.Layers...)
			if tc.img != nil {
				tc.img(&im)
			}
			w, err := ocitest.Write(filepath.Join(dir, "image"), im)
			if err != nil {
				t.Fatal(err)
			}
			if tc.edit != nil {
				tc.edit(t, dir, w[0])
			}
			_, err = Build(context.Background(), opts)
			for _, want := range tc.want {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("Build = %v, want an error with %q", err, want)
				}
			}
			if tc.name == "broken layer" && !errors.Is(err, ocitree.ErrDigestMismatch) {
				t.Errorf("%v does not wrap ErrDigestMismatch", err)
			}
			if ents, _ := os.ReadDir(filepath.Dir(opts.Out)); len(ents) != 0 {
				t.Errorf("failed build left %v behind", ents)
			}
		})
	}
}

func TestLoadConfigSources(t *testing.T) {
	for _, tc := range []struct{ name, old, new, want string }{
		{"ref without oci", "dir = \"app\"\n", "dir = \"app\"\nref = \"latest\"\n", "source ref"},
		{"bad package", "dir = \"app\"\n", "debian = [\"-oAPT::x=y\"]\n", "not a Debian package name"},
		{"exec needed without oci", "exec = [\"/bin/app\"]\n", "", "exec must name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "spine.toml")
			write(t, p, strings.Replace(testConfig, tc.old, tc.new, 1), 0o644)
			if _, err := LoadConfig(p); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("LoadConfig = %v, want %q", err, tc.want)
			}
		})
	}
	// With an oci source, exec may be left to the image.
	p := filepath.Join(t.TempDir(), "spine.toml")
	write(t, p, strings.Replace(testConfig, "exec = [\"/bin/app\"]\n", "", 1)+"oci = \"image\"\n", 0o644)
	if _, err := LoadConfig(p); err != nil {
		t.Errorf("oci persona without exec: %v", err)
	}
}

// TestLoadNginxDemoConfig: demo/nginx.toml stays valid (the e2e suite boots its persona).
func TestLoadNginxDemoConfig(t *testing.T) {
	c, err := LoadConfig("../../../demo/nginx.toml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Personas) != 1 || !reflect.DeepEqual(c.Personas[0].Source.Debian, []string{"nginx-light"}) ||
		c.Personas[0].Exec[0] != "/usr/sbin/nginx" {
		t.Errorf("demo/nginx.toml: %+v", c.Personas)
	}
	if _, err := os.Stat(c.resolve(c.Personas[0].Source.Dir)); err != nil {
		t.Errorf("its dir source: %v", err)
	}
}

// TestBuildRefusesIgnoredDNS: bay0 generates /etc/resolv.conf only for a tree without one, so
// a dns setting beside the tree's own file would do nothing: the build says so.
func TestBuildRefusesIgnoredDNS(t *testing.T) {
	cfg := `name = "test"
version = 1
[[persona]]
name = "app"
exec = ["/bin/app"]
cpus = 0.5
memory = "16MiB"
pids = 8
network = "uplink"
address = "10.0.2.15/24"
gateway = "10.0.2.2"
dns = ["10.0.2.3"]
[persona.source]
dir = "app"
`
	dir, opts := project(t, cfg)
	c, err := LoadConfig(opts.Config)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Stage(context.Background(), c, StageOptions{Bay0: opts.Bay0, PersonaInit: opts.PersonaInit, Dir: filepath.Join(t.TempDir(), "tree")}); err != nil {
		t.Fatalf("a tree without resolv.conf: %v", err)
	}
	write(t, filepath.Join(dir, "app/etc/resolv.conf"), "nameserver 1.1.1.1\n", 0o644)
	_, err = Stage(context.Background(), c, StageOptions{Bay0: opts.Bay0, PersonaInit: opts.PersonaInit, Dir: filepath.Join(t.TempDir(), "tree")})
	if err == nil || !strings.Contains(err.Error(), `persona "app": dns is set, but its tree has its own /etc/resolv.conf`) {
		t.Errorf("Stage = %v", err)
	}
}
