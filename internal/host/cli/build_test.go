package cli

import (
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestBuildConfigStrict(t *testing.T) {
	demoCfg := string(read(t, "../../../demo/spine.toml"))
	k := sharedKeys(t)
	for _, tc := range []struct {
		name, old, new string
		want           []string
	}{
		{"top level", "version = 1\n", "version = 1\nversoin = 2\n", []string{`unknown key "versoin"`, "line 4"}},
		{"persona", "pids = 8\n", "pids = 8\nmemroy = \"1GiB\"\n", []string{`unknown key "persona.memroy"`, "line 16"}},
		{"persona source", "go = \"../personas/heartbeat\"\n", "go = \"../personas/heartbeat\"\ndri = \"x\"\n", []string{`unknown key "persona.source.dri"`, "line 19"}},
		{"governor", "health_window = \"20s\"\n", "health_window = \"20s\"\nhealth = 1\n", []string{`unknown key "governor.health"`, "line 9"}},
		{"no cpus", "cpus = 0.1\n", "", []string{"heartbeat", "cpus is mandatory"}},
		{"no memory", "memory = \"16MiB\"\n", "", []string{"heartbeat", "memory is mandatory"}},
		{"no pids", "pids = 8\n", "", []string{"heartbeat", "pids is mandatory"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(demoCfg, tc.old) {
				t.Fatalf("demo config has no %q", tc.old)
			}
			dir := t.TempDir()
			cfg := filepath.Join(dir, "spine.toml")
			writeFile(t, cfg, strings.Replace(demoCfg, tc.old, tc.new, 1), 0o644)
			out := filepath.Join(dir, "out.img")
			r := spine(t, epoch, "build", "--kernel", "none", "--config", cfg, "--key", k.key, "--out", out, "--bay0", "/nonexistent")
			if r.code != 1 {
				t.Fatalf("build: %v", r)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr does not say %q: %s", w, r.stderr)
				}
			}
			if _, err := os.Stat(out); err == nil {
				t.Error("image written")
			}
		})
	}
}

func sum(t *testing.T, p string) [32]byte {
	t.Helper()
	return sha256.Sum256(read(t, p))
}

// TestBuildDemo builds demo/spine.toml twice with the same SOURCE_DATE_EPOCH: the images are
// byte-identical, verify, and hold what bay0 needs.
func TestBuildDemo(t *testing.T) {
	d := demo(t)
	i := inspect(t, d.img)
	if !strings.Contains(d.stdout, i.RootHash) || i.Name != "demo" || i.Version != 1 {
		t.Errorf("build said %q; image %+v", d.stdout, i)
	}
	mustSpine(t, nil, "verify", "--pub", d.keys.pub, d.img)

	again := filepath.Join(t.TempDir(), "again.img")
	mustSpine(t, epoch, "build", "--kernel", "none", "--config", "../../../demo/spine.toml", "--key", d.keys.key, "--out", again, "--bay0", bay0(t))
	if sum(t, d.img) != sum(t, again) {
		t.Error("two builds with the same SOURCE_DATE_EPOCH differ")
	}
	if j := inspect(t, again); j.RootHash != i.RootHash || j.Salt != i.Salt {
		t.Errorf("root hash %s / %s", i.RootHash, j.RootHash)
	}

	unsquashfs := lookTool(t, "unsquashfs", "squashfs-tools")
	out, err := exec.Command(unsquashfs, "-l", d.img).CombinedOutput()
	if err != nil {
		t.Fatalf("unsquashfs -l: %v\n%s", err, out)
	}
	for _, p := range []string{"bin/bay0", "etc/spine/policy.json", "personas/heartbeat/bin/heartbeat", "personas/web/bin/web"} {
		if !strings.Contains(string(out), "squashfs-root/"+p+"\n") {
			t.Errorf("unsquashfs -l does not list %s:\n%s", p, out)
		}
	}
}

// TestBuildSalt: without SOURCE_DATE_EPOCH every build draws a new salt (and so a new root
// hash); with it the salt is derived from the inputs.
func TestBuildSalt(t *testing.T) {
	cfg, k, dir := smallProject(t), sharedKeys(t), t.TempDir()
	var salts, roots []string
	for i, env := range []map[string]string{nil, nil, epoch, epoch} {
		img := filepath.Join(dir, string(rune('a'+i))+".img")
		mustSpine(t, env, "build", "--kernel", "none", "--config", cfg, "--key", k.key, "--out", img, "--bay0", bay0(t))
		in := inspect(t, img)
		salts, roots = append(salts, in.Salt), append(roots, in.RootHash)
	}
	if salts[0] == salts[1] || roots[0] == roots[1] {
		t.Errorf("without SOURCE_DATE_EPOCH two builds share salt %s", salts[0])
	}
	if salts[2] != salts[3] || roots[2] != roots[3] {
		t.Errorf("with SOURCE_DATE_EPOCH two builds differ: %v %v", salts[2:], roots[2:])
	}
	if r := spine(t, map[string]string{"SOURCE_DATE_EPOCH": "yesterday"}, "build", "--kernel", "none", "--config", cfg, "--key", k.key,
		"--out", filepath.Join(dir, "x.img"), "--bay0", bay0(t)); r.code != 1 || !strings.Contains(r.stderr, "SOURCE_DATE_EPOCH") {
		t.Errorf("bad SOURCE_DATE_EPOCH: %v", r)
	}
}

func TestBuildVersion(t *testing.T) {
	cfg, k := smallProject(t), sharedKeys(t)
	img := filepath.Join(t.TempDir(), "v.img")
	r := mustSpine(t, epoch, "build", "--kernel", "none", "--config", cfg, "--key", k.key, "--out", img, "--bay0", bay0(t), "--version", "42")
	if !strings.Contains(r.stdout, "v42") {
		t.Errorf("build output: %q", r.stdout)
	}
	if v := inspect(t, img).Version; v != 42 {
		t.Errorf("version %d, want 42", v)
	}
	if r := mustSpine(t, nil, "verify", "--pub", k.pub, img); !strings.Contains(r.stdout, "v42") {
		t.Errorf("verify: %q", r.stdout)
	}
}

// TestBuildRefusesAudit: a persona tree holding a package manager, a setuid file and a
// world-writable file is refused with every violation listed, and nothing is left behind.
func TestBuildRefusesAudit(t *testing.T) {
	cfg, k := smallProject(t), sharedKeys(t)
	src := filepath.Join(filepath.Dir(cfg), "app")
	writeFile(t, filepath.Join(src, "usr/bin/dpkg"), "dpkg", 0o755)
	writeFile(t, filepath.Join(src, "bin/su"), "su", 0o755|os.ModeSetuid)
	writeFile(t, filepath.Join(src, "etc/motd"), "hello", 0o666)
	outDir := t.TempDir()
	img := filepath.Join(outDir, "bad.img")
	r := spine(t, epoch, "build", "--kernel", "none", "--config", cfg, "--key", k.key, "--out", img, "--bay0", bay0(t))
	if r.code != 1 {
		t.Fatalf("build of a bad tree: %v", r)
	}
	for _, want := range []string{
		"/personas/app/usr/bin/dpkg: package manager",
		"/personas/app/bin/su: setuid",
		"/personas/app/etc/motd: world-writable",
		"refusing to sign",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr does not list %q:\n%s", want, r.stderr)
		}
	}
	if ents, _ := os.ReadDir(outDir); len(ents) != 0 {
		t.Errorf("refused build left %v in the output directory", ents)
	}
}

func TestBuildErrors(t *testing.T) {
	cfg, k := smallProject(t), sharedKeys(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"missing key", []string{"--key", filepath.Join(dir, "nope.key"), "--bay0", bay0(t)}, "private key"},
		{"public key as private", []string{"--key", k.pub, "--bay0", bay0(t)}, "PRIVATE KEY"},
		{"missing bay0", []string{"--key", k.key, "--bay0", filepath.Join(dir, "nope")}, "bay0"},
		{"missing config", []string{"--key", k.key, "--bay0", bay0(t), "--config", filepath.Join(dir, "nope.toml")}, "read config"},
	} {
		args := append([]string{"build", "--kernel", "none", "--config", cfg, "--out", filepath.Join(dir, "x.img")}, tc.args...)
		if r := spine(t, epoch, args...); r.code != 1 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%s: %v", tc.name, r)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("failed builds left %v", ents)
	}
}
