//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	ggcr "github.com/google/go-containerregistry/pkg/registry"

	"alpinespine.org/spine/internal/bay0/control"
	"alpinespine.org/spine/internal/format/bootctl"
	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/host/registry"
	"alpinespine.org/spine/internal/host/vm/vmtest"
)

// misbehaving is an OCI registry on the host's loopback that can be told to lie: serve another
// artifact's manifest for the digest asked, flip a byte of the image body, or vanish half way
// through the body.
type misbehaving struct {
	mode    atomic.Value // "", "manifest", "body", "cut"
	swapTag string       // the tag whose manifest "manifest" mode serves instead
	h       http.Handler
}

func (m *misbehaving) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	mode, _ := m.mode.Load().(string)
	body := r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") && strings.HasPrefix(r.Header.Get("Range"), "bytes=0-")
	switch {
	case mode == "manifest" && r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/manifests/sha256:"):
		r.URL.Path = r.URL.Path[:strings.LastIndex(r.URL.Path, "/")+1] + m.swapTag
	case (mode == "body" || mode == "cut") && body:
		rec := httptest.NewRecorder()
		m.h.ServeHTTP(rec, r)
		b := rec.Body.Bytes()
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		if mode == "body" {
			b[len(b)/3] ^= 0x40
			w.Write(b)
			return
		}
		w.Write(b[:len(b)/2])
		panic(http.ErrAbortHandler) // the registry goes away mid-transfer
	}
	m.h.ServeHTTP(w, r)
}

// TestCourierUpdate (issue 20.2/20.4): the operator names a Spine by digest on the control line;
// the courier persona fetches it from a registry over its own network and hands it to bay0.
// A registry (or courier) that serves another artifact is refused before a byte is written;
// one that flips a byte of the body or vanishes half way leaves the slot restored and the
// machine running; the honest transfer stages the Spine, which boots and commits.
func TestCourierUpdate(t *testing.T) {
	t.Parallel()
	reg := &misbehaving{h: ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0))), swapTag: "v1"}
	srv := httptest.NewServer(reg)
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	port := host[strings.LastIndex(host, ":")+1:]

	tree := filepath.Join(t.TempDir(), "courier")
	if err := goBuild(filepath.Join(tree, "bin", "courier"), "./personas/courier"); err != nil {
		t.Fatal(err)
	}
	entry := fmt.Sprintf(`[[persona]]
name = "courier"
exec = ["/bin/courier", "--insecure", "10.0.2.2:%s"]
cpus = 0.5
memory = "64MiB"
pids = 32
network = "uplink"
address = "10.0.2.15/24"
gateway = "10.0.2.2"
courier = true
order = 2
[persona.source]
dir = %q
`, port, tree)
	v1 := buildSpine(t, spineOpts{governor: quickHealth, personas: entry})
	v2 := buildSpine(t, spineOpts{version: 2, governor: quickHealth, personas: entry})
	ctx := context.Background()
	if _, err := registry.Push(ctx, v1, host+"/spines/tiny:v1", nil, registry.Options{}); err != nil {
		t.Fatal(err)
	}
	pushed, err := registry.Push(ctx, v2, host+"/spines/tiny:v2", nil, registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	source := fmt.Sprintf("oci://10.0.2.2:%s/spines/tiny@%s", port, pushed.Digest)

	disk := makeDisk(t, v1, "", nil)
	cfg, sock := withControl(t, machine(disk))
	cfg.Outbound = true
	cfg.Timeout = 6 * bootTimeout
	cfg.MaxBoots = 2
	v := vmtest.Boot(t, cfg)
	waitUp(t, v, "tiny", 1, "a", bootTimeout)
	v.WaitEvent(t, event.Committed, bootTimeout, kv("slot", "a"))
	v.WaitEvent(t, event.PersonaStarted, bootTimeout, kv("name", "courier"))
	c := dial(t, sock)
	fetch := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*bootTimeout)
		defer cancel()
		_, err := c.Call(ctx, control.Request{Verb: control.VerbUpdate, Source: source})
		return err
	}

	reg.mode.Store("manifest")
	if err := fetch(); err == nil || !strings.Contains(err.Error(), "not the artifact the operator named") {
		t.Fatalf("a swapped manifest: %v", err)
	}
	if n := len(v.Events(event.UpdateWriting)) + len(v.Events(event.UpdateAccepted)); n != 0 {
		t.Fatal("a swapped manifest got as far as the slot")
	}

	reg.mode.Store("body")
	if err := fetch(); err == nil || !strings.Contains(err.Error(), "not the artifact the operator named") {
		t.Fatalf("a flipped byte in the body: %v", err)
	}
	v.WaitEvent(t, event.UpdateRestored, bootTimeout, kv("slot", "b"))

	reg.mode.Store("cut")
	if err := fetch(); err == nil {
		t.Fatal("a registry that vanished mid-transfer: the update succeeded")
	}
	// The answer on the control line may overtake the console's lines: wait for the event.
	v.WaitEvent(t, event.UpdateRestored, bootTimeout, kv("slot", "b"))
	rec := record(t, disk)
	if rec.Primary != 0 || rec.Slots[0].State != bootctl.Good || rec.Slots[1].State == bootctl.Trial {
		t.Fatalf("record after three refused transfers: %+v", rec)
	}
	st := call(t, c, control.Request{Verb: control.VerbStatus})
	var s control.StatusInfo
	if err := st.Decode(&s); err != nil || s.Version != 1 || !s.Committed {
		t.Fatalf("status after the refused transfers: %+v, %v", s, err)
	}

	reg.mode.Store("")
	start := time.Now()
	if err := fetch(); err != nil {
		t.Fatalf("the honest transfer: %v", err)
	}
	t.Logf("courier update of %d bytes staged in %s", pushed.Size, time.Since(start).Round(time.Millisecond))
	v.WaitEvent(t, event.UpdateStaged, bootTimeout, kv("slot", "b"), kv("version", "2"))
	if n := len(v.Events(event.CourierAsked, kv("name", "courier"))); n != 4 {
		t.Errorf("the courier was asked %d times, want 4", n)
	}
	call(t, c, control.Request{Verb: control.VerbReboot})
	waitUp(t, v, "tiny", 2, "b", bootTimeout)
	v.WaitEvent(t, event.Committed, bootTimeout, kv("slot", "b"), kv("version", "2"))
	v.Kill(t)
}
