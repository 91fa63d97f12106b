//go:build e2e

package e2e

import (
	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/host/vm"
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"alpinespine.org/spine/internal/host/build"
	"alpinespine.org/spine/internal/host/ocitree"
	"alpinespine.org/spine/internal/host/ocitree/ocitest"
	"alpinespine.org/spine/internal/host/vm/vmtest"
)

// Issue 9: personas made from software people already have. An OCI image layout, written here
// as a tar the way `skopeo copy ... oci-archive:` writes one (no registry), becomes a persona
// that starts with the image's entrypoint, env and workdir and is held by the same isolation as
// every persona; a layout with a broken layer is refused when the Spine is built.

// ociLayout writes an OCI layout tar holding ociapp (the image's entrypoint) and the escape
// probe, in two layers, the second of which deletes a file of the first.
func ociLayout(t *testing.T) (string, ocitest.Written) {
	t.Helper()
	dir := t.TempDir()
	bins := map[string]string{"ociapp": "./e2e/testdata/ociapp", "probe": "./personas/probe"}
	files := map[string]string{}
	for name, pkg := range bins {
		out := filepath.Join(dir, name)
		if err := goBuild(out, pkg); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		files[name] = string(b)
	}
	layout := filepath.Join(dir, "layout")
	w, err := ocitest.Write(layout, ocitest.Image{
		Layers: [][]ocitest.File{
			{
				{Name: "usr/bin/", Type: tar.TypeDir, Mode: 0o755},
				{Name: "usr/bin/probe", Body: files["probe"], Mode: 0o755},
				{Name: "srv/app/stale.conf", Body: "deleted by the next layer"},
			},
			{
				{Name: "usr/local/bin/ociapp", Body: files["ociapp"], Mode: 0o755},
				{Name: "srv/app/.wh.stale.conf"},
			},
		},
		Config: ocitest.Config{
			Entrypoint: []string{"ociapp"},
			Cmd:        []string{"--from-image"},
			Env:        []string{"PATH=/usr/local/bin:/usr/bin", "OCI_MARK=from-image", "MODE=image"},
			WorkingDir: "/srv/app",
		},
		Ref: "latest",
	})
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(dir, "image.tar")
	if err := ocitest.TarDir(layout, archive); err != nil {
		t.Fatal(err)
	}
	return archive, w[0]
}

func TestWorkloadOCIPersona(t *testing.T) {
	t.Parallel()
	archive, w := ociLayout(t)
	img := buildPersonaSpine(t,
		// No exec: the image's entrypoint and cmd, its env under the policy's, its workdir.
		"[[persona]]\nname = \"ociapp\"\nenv = [\"MODE=policy\"]\ncpus = 0.2\nmemory = \"32MiB\"\npids = 16\norder = 1\n"+
			"[persona.source]\noci = \""+archive+"\"\n",
		// The same image, running the escape probe instead.
		"[[persona]]\nname = \"ociprobe\"\nexec = [\"/usr/bin/probe\", \"ociprobe\"]\ncpus = 0.5\nmemory = \"64MiB\"\n"+
			"pids = 32\ndata = true\nrestart = \"never\"\norder = 2\n[persona.source]\noci = \""+archive+"\"\n")
	disk := makeDisk(t, img, img, nil)
	v := vmtest.Boot(t, machine(disk))
	waitUp(t, v, "personas", 1, "a", bootTimeout)
	line := v.WaitPersona(t, "ociapp", "ociapp: args", bootTimeout)
	if want := `ociapp: args ["--from-image"] OCI_MARK=from-image MODE=policy cwd /srv/app`; !strings.HasSuffix(line, want) {
		t.Errorf("ociapp started as %q, want %q", line, want)
	}
	done := v.WaitPersona(t, "ociprobe", "probe: done", 2*bootTimeout)
	v.Kill(t)
	v.Never(t, "ESCAPE")
	v.NeverEvent(t, event.Halt)
	if !strings.Contains(done, ", 0 escapes") {
		t.Errorf("probe summary: %q", done)
	}
	for _, check := range []string{
		"pid namespace", "network namespace", "uts namespace", "user namespace", "cgroup namespace",
		"hidden /personas", "hidden /persist", "write root", "write tree", "no capabilities CapEff",
		"no_new_privs", "seccomp filter", "mount", "ptrace attach", "socket AF_INET SOCK_RAW",
	} {
		if v.CountPersona("ociprobe", "probe: "+check+": ok") == 0 {
			t.Errorf("the probe in the OCI persona never reported %q as ok", check)
		}
	}
	t.Logf("image %s", w.Digest)
}

// TestWorkloadBrokenLayerRefused: a layout whose layer does not match its digest never becomes
// a Spine, and the error names the persona, the source and the layer.
func TestWorkloadBrokenLayerRefused(t *testing.T) {
	t.Parallel()
	archive, w := ociLayout(t)
	// Damage the second layer inside the tar: its bytes are stored as is.
	b, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	layer, err := os.ReadFile(ocitest.BlobPath(filepath.Join(filepath.Dir(archive), "layout"), w.Layers[1]))
	if err != nil {
		t.Fatal(err)
	}
	off := strings.Index(string(b), string(layer[:64]))
	if off < 0 {
		t.Fatal("layer not found in the archive")
	}
	b[off+len(layer)/2] ^= 0x40
	if err := os.WriteFile(archive, b, 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "spine.toml")
	conf := "name = \"broken\"\nversion = 1\n[[persona]]\nname = \"ociapp\"\ncpus = 0.2\nmemory = \"32MiB\"\npids = 16\n" +
		"[persona.source]\noci = \"" + archive + "\"\n"
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "broken.spine")
	_, err = build.Build(context.Background(), build.Options{Config: cfg, Key: fx.key, Bay0: fx.bay0, PersonaInit: fx.personaInit, Out: out,
		Epoch: 1767225600, Kernel: fx.kernel.Release})
	if !errors.Is(err, ocitree.ErrDigestMismatch) || !strings.Contains(err.Error(), "layer "+w.Layers[1]) ||
		!strings.Contains(err.Error(), `persona "ociapp"`) || !strings.Contains(err.Error(), archive) {
		t.Fatalf("build = %v, want a refusal naming the persona, the source and layer %s", err, w.Layers[1])
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("an image was written")
	}
}

// TestWorkloadDebianNginxServesHost boots the persona of demo/nginx.toml, nginx made from
// Debian's own packages, on its uplink, and fetches its page from the host through QEMU's port
// forwarding, under the persona's limits and seccomp allowlist.
func TestWorkloadDebianNginxServesHost(t *testing.T) {
	t.Parallel()
	demo, err := os.ReadFile(filepath.Join(repoRoot(), "demo", "nginx.toml"))
	if err != nil {
		t.Fatal(err)
	}
	_, nginx, ok := strings.Cut(string(demo), "[[persona]]")
	old := `dir = "nginx"`
	if !ok || !strings.Contains(nginx, old) || !strings.Contains(nginx, `address = "10.0.2.15/24"`) {
		t.Fatalf("demo/nginx.toml changed shape; update this test:\n%s", demo)
	}
	nginx = "[[persona]]" + strings.Replace(nginx, old, fmt.Sprintf("dir = %q", filepath.Join(repoRoot(), "demo", "nginx")), 1)
	img := buildPersonaSpine(t, neighbour(t), nginx)
	port := freePort(t)
	cfg := machine(makeDisk(t, img, img, nil))
	cfg.Forwards = []vm.Forward{{HostPort: port, GuestPort: 8080, GuestAddr: "10.0.2.15"}}
	v := vmtest.Boot(t, cfg)
	v.WaitPersona(t, "nginx", `[notice] 1#1: using the "epoll" event method`, bootTimeout)
	client := &http.Client{Timeout: 5 * time.Second}
	var body []byte
	for deadline := time.Now().Add(bootTimeout); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		resp, gerr := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err = gerr; err != nil {
			continue
		}
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %s", resp.Status)
		}
		if err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("nginx never answered through the forward: %v", err)
	}
	page, rerr := os.ReadFile(filepath.Join(repoRoot(), "demo", "nginx", "srv", "www", "index.html"))
	if rerr != nil || string(body) != string(page) {
		t.Errorf("nginx served %q, want the built-in page", body)
	}
	// Still up a few seconds later: nothing it does was refused fatally.
	for range 3 {
		heartbeat(t, v, 30*time.Second)
	}
	v.Kill(t)
	v.NeverEvent(t, event.PersonaExited, kv("name", "nginx"))
	v.Never(t, "[emerg]")
	v.Never(t, "[alert]")
	if n := len(v.Events(event.PersonaStarted, kv("name", "nginx"))); n != 1 {
		t.Errorf("nginx was started %d times, want once", n)
	}
}
