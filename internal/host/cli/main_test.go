package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// shared holds what is built once per test binary: a static bay0, a key pair and the demo
// image. Tests copy an image before damaging it.
var shared string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "spine-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	shared = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is what one spine invocation did.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// spine runs the CLI in process with env as its whole environment.
func spine(t testing.TB, env map[string]string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(context.Background(), args, &Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb,
		Getenv: func(k string) string { return env[k] }})
	return result{out.String(), errb.String(), code}
}

// mustSpine runs spine and fails the test unless it exits 0.
func mustSpine(t testing.TB, env map[string]string, args ...string) result {
	t.Helper()
	r := spine(t, env, args...)
	if r.code != 0 {
		t.Fatalf("spine %s: %v", strings.Join(args, " "), r)
	}
	return r
}

var epoch = map[string]string{"SOURCE_DATE_EPOCH": "1700000000"}

// bay0Once builds bay0 and, beside it where spine build looks for it, persona-init.
var bay0Once = sync.OnceValues(func() (string, error) {
	p := filepath.Join(shared, "bay0")
	for out, pkg := range map[string]string{p: "cmd/bay0", filepath.Join(shared, "persona-init"): "cmd/persona-init"} {
		cmd := exec.Command("go", "build", "-trimpath", "-o", out, "alpinespine.org/spine/"+pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if o, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("build static %s: %w\n%s", pkg, err, o)
		}
	}
	return p, nil
})

// faultBay0Once builds the fault-injection bay0 beside bay0Once's persona-init.
var faultBay0Once = sync.OnceValues(func() (string, error) {
	if _, err := bay0Once(); err != nil {
		return "", err
	}
	p := filepath.Join(shared, "bay0-faultinject")
	cmd := exec.Command("go", "build", "-tags", "faultinject", "-trimpath", "-o", p, "alpinespine.org/spine/cmd/bay0")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build fault-injection bay0: %w\n%s", err, out)
	}
	return p, nil
})

// bay0 is a static bay0 built once per test binary.
func bay0(t testing.TB) string {
	t.Helper()
	p, err := bay0Once()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// keyPair is made once; key is spine.key, pub is spine.pub.
type keyPair struct{ key, pub string }

var keysOnce = sync.OnceValues(func() (keyPair, error) {
	dir := filepath.Join(shared, "keys")
	var out, errb bytes.Buffer
	if code := Run(context.Background(), []string{"keygen", "--out", dir}, &Env{Stdout: &out, Stderr: &errb, Getenv: os.Getenv}); code != 0 {
		return keyPair{}, fmt.Errorf("spine keygen: exit %d: %s", code, errb.String())
	}
	return keyPair{filepath.Join(dir, "spine.key"), filepath.Join(dir, "spine.pub")}, nil
})

func sharedKeys(t testing.TB) keyPair {
	t.Helper()
	k, err := keysOnce()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// info is what spine inspect --json prints.
type info struct {
	Name          string `json:"name"`
	Version       uint64 `json:"version"`
	Constitution  string `json:"constitution"`
	RootHash      string `json:"root_hash"`
	Salt          string `json:"salt"`
	UUID          string `json:"uuid"`
	HashAlgorithm string `json:"hash_algorithm"`
	DataBlockSize uint64 `json:"data_block_size"`
	HashBlockSize uint64 `json:"hash_block_size"`
	DataBlocks    uint64 `json:"data_blocks"`
	HashOffset    uint64 `json:"hash_offset"`
	HashSize      uint64 `json:"hash_size"`
}

func inspect(t testing.TB, img string) info {
	t.Helper()
	r := mustSpine(t, nil, "inspect", "--json", img)
	var i info
	if err := json.Unmarshal([]byte(r.stdout), &i); err != nil {
		t.Fatalf("inspect --json: %v\n%s", err, r.stdout)
	}
	return i
}

// demoImage is demo/spine.toml built once with SOURCE_DATE_EPOCH.
type demoImage struct {
	img    string
	keys   keyPair
	stdout string
}

var demoOnce struct {
	sync.Once
	d   demoImage
	err error
}

func demo(t *testing.T) demoImage {
	t.Helper()
	demoOnce.Do(func() {
		k, err := keysOnce()
		if err != nil {
			demoOnce.err = err
			return
		}
		b, err := bay0Once()
		if err != nil {
			demoOnce.err = err
			return
		}
		img := filepath.Join(shared, "demo.img")
		r := spine(t, epoch, "build", "--kernel", "none", "--config", "../../../demo/spine.toml", "--key", k.key, "--out", img, "--bay0", b)
		if r.code != 0 {
			demoOnce.err = fmt.Errorf("spine build of the demo: %v", r)
			return
		}
		demoOnce.d = demoImage{img: img, keys: k, stdout: r.stdout}
	})
	if demoOnce.err != nil {
		t.Fatal(demoOnce.err)
	}
	return demoOnce.d
}

// lookTool fails the test, naming the Debian package, when a reference tool is missing.
func lookTool(t testing.TB, tool, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		t.Fatalf("%s not found: apt-get install %s", tool, pkg)
	}
	return p
}

const smallConfig = `name = "small"
version = 1

[[persona]]
name = "app"
exec = ["/bin/app"]
cpus = 0.25
memory = "8MiB"
pids = 4
[persona.source]
dir = "app"
`

// smallProject writes a one-persona configuration whose tree is a plain directory (no Go
// build), for the tests that need a build but not the demo.
func smallProject(t *testing.T) (config string) {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "spine.toml"), smallConfig, 0o644)
	writeFile(t, filepath.Join(dir, "app/bin/app"), "#!app\n", 0o755)
	return filepath.Join(dir, "spine.toml")
}

func writeFile(t testing.TB, p, data string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	// Chmod after writing: the umask must not decide the mode under test.
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}
