package cli

import (
	"bytes"
	"encoding/json"
	"io"
	"log"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	ggcr "github.com/google/go-containerregistry/pkg/registry"
)

func TestPushPull(t *testing.T) {
	d := demo(t)
	i := inspect(t, d.img)
	s := httptest.NewServer(ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0))))
	defer s.Close()
	reg := strings.TrimPrefix(s.URL, "http://")

	r := mustSpine(t, nil, "push", "--pub", d.keys.pub, "--json", d.img, reg+"/spines/demo:v1")
	var pushed struct {
		Ref, Digest string
		Version     uint64
		RootHash    string `json:"root_hash"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &pushed); err != nil {
		t.Fatalf("push --json printed %q: %v", r.stdout, err)
	}
	if pushed.RootHash != i.RootHash || !strings.HasPrefix(pushed.Ref, reg+"/spines/demo@sha256:") {
		t.Fatalf("pushed %+v", pushed)
	}

	out := filepath.Join(t.TempDir(), "pulled.spine")
	r = mustSpine(t, nil, "pull", "--pub", d.keys.pub, "--out", out, pushed.Ref)
	if !strings.Contains(r.stdout, i.RootHash) {
		t.Errorf("pull printed %q, want the root hash", r.stdout)
	}
	if !bytes.Equal(read(t, out), read(t, d.img)) {
		t.Fatal("the pulled image differs from the pushed one")
	}

	other := filepath.Join(t.TempDir(), "other")
	mustSpine(t, nil, "keygen", "--out", other)
	r = spine(t, nil, "pull", "--pub", filepath.Join(other, "spine.pub"), "--out", filepath.Join(t.TempDir(), "x"), reg+"/spines/demo:v1")
	if r.code != 1 || !strings.Contains(r.stderr, "not a valid Spine") {
		t.Errorf("pull with an untrusted key: %v", r)
	}
	if r := spine(t, nil, "pull", reg+"/spines/demo:v1"); r.code != 2 {
		t.Errorf("pull without --pub and --out: %v", r)
	}
}
