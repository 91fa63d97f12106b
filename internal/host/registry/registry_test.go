package registry

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"alpinespine.org/spine/internal/format/image"
	"alpinespine.org/spine/internal/format/manifest"
	"alpinespine.org/spine/internal/format/ociartifact"
	"alpinespine.org/spine/internal/host/squashfs"
)

// spineImage builds a small signed Spine.
func spineImage(t *testing.T, key ed25519.PrivateKey, version uint64) string {
	t.Helper()
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	if err := os.MkdirAll(filepath.Join(tree, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "bin", "bay0"), bytes.Repeat([]byte("bay0"), 50000), 0o755); err != nil {
		t.Fatal(err)
	}
	sq := filepath.Join(dir, "fs")
	if err := squashfs.Make(context.Background(), tree, sq, 1); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "demo.spine")
	m := manifest.Manifest{Format: 1, Name: "demo", Version: version, Constitution: "0.1", Personas: []string{}}
	if _, err := image.Assemble(out, sq, image.Assembly{Manifest: m, Key: key, Salt: []byte{1, 2}, UUID: [16]byte{1}}); err != nil {
		t.Fatal(err)
	}
	return out
}

func newKey(t *testing.T) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

// serve starts an in-process OCI registry behind wrap and returns its host:port.
func serve(t *testing.T, wrap func(http.Handler) http.Handler) string {
	t.Helper()
	h := ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0)))
	if wrap != nil {
		h = wrap(h)
	}
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// noTemporaries fails if a pull left a temporary file beside its destination.
func noTemporaries(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.Contains(e.Name(), ".pull-") {
			t.Errorf("left behind %s", e.Name())
		}
	}
}

func TestPushPullByTagAndDigest(t *testing.T) {
	ctx := context.Background()
	pub, priv := newKey(t)
	img := spineImage(t, priv, 7)
	reg := serve(t, nil)
	trusted := []ed25519.PublicKey{pub}

	p, err := Push(ctx, img, reg+"/spines/demo:v7", trusted, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Spine.Name != "demo" || p.Spine.Version != 7 || !strings.HasPrefix(p.Ref, reg+"/spines/demo@sha256:") {
		t.Fatalf("published %+v", p)
	}
	// The same Spine pushed again is the same artifact: reproducible digests.
	again, err := Push(ctx, img, reg+"/spines/demo:latest", nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if again.Digest != p.Digest {
		t.Fatalf("second push has digest %s, first %s", again.Digest, p.Digest)
	}

	dir := t.TempDir()
	for _, ref := range []string{reg + "/spines/demo:v7", p.Ref} {
		out := filepath.Join(dir, "pulled.spine")
		got, m, err := Pull(ctx, ref, out, trusted, Options{})
		if err != nil {
			t.Fatalf("pull %s: %v", ref, err)
		}
		if got.Digest != p.Digest || m.Version != 7 || m.Name != "demo" {
			t.Fatalf("pull %s: %+v, manifest %s v%d", ref, got, m.Name, m.Version)
		}
		if !bytes.Equal(mustRead(t, out), mustRead(t, img)) {
			t.Fatalf("pull %s: the bytes differ from the pushed image", ref)
		}
	}
	noTemporaries(t, dir)

	// What other OCI tools see: an artifact of our type, one layer that is the image.
	ref, err := name.ParseReference(p.Ref)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Get(ref)
	if err != nil {
		t.Fatal(err)
	}
	if string(desc.MediaType) != ociartifact.ManifestMediaType || !bytes.Contains(desc.Manifest, []byte(`"artifactType":"`+ociartifact.ArtifactType+`"`)) {
		t.Fatalf("registry holds %s: %s", desc.MediaType, desc.Manifest)
	}
}

func TestPushRefusesWhatMachinesWouldRefuse(t *testing.T) {
	pub, _ := newKey(t)
	_, other := newKey(t)
	img := spineImage(t, other, 1)
	reg := serve(t, nil)
	_, err := Push(context.Background(), img, reg+"/spines/demo:v1", []ed25519.PublicKey{pub}, Options{})
	if err == nil || !strings.Contains(err.Error(), "not a valid Spine") {
		t.Fatalf("Push of a foreign-signed image = %v", err)
	}
	if _, err := Push(context.Background(), filepath.Join(t.TempDir(), "missing"), reg+"/x:y", nil, Options{}); err == nil {
		t.Fatal("pushed a missing file")
	}
	if _, err := Push(context.Background(), img, "not a reference", nil, Options{}); err == nil || !strings.Contains(err.Error(), "reference") {
		t.Fatalf("bad reference: %v", err)
	}
}

// pullFails asserts that pulling ref fails with want and leaves out as it was.
func pullFails(t *testing.T, ref string, trusted []ed25519.PublicKey, want string) {
	t.Helper()
	dir := t.TempDir()
	out := filepath.Join(dir, "current.spine")
	if err := os.WriteFile(out, []byte("the image the owner already has"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err := Pull(context.Background(), ref, out, trusted, Options{})
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Pull %s = %v, want an error containing %q", ref, err, want)
	}
	if got := string(mustRead(t, out)); got != "the image the owner already has" {
		t.Fatalf("a failed pull changed %s", out)
	}
	noTemporaries(t, dir)
}

func TestPullRefusesUntrustedImage(t *testing.T) {
	pub, _ := newKey(t)
	_, other := newKey(t)
	reg := serve(t, nil)
	if _, err := Push(context.Background(), spineImage(t, other, 1), reg+"/spines/demo:v1", nil, Options{}); err != nil {
		t.Fatal(err)
	}
	pullFails(t, reg+"/spines/demo:v1", []ed25519.PublicKey{pub}, "not a valid Spine")
}

// tamper flips a byte in every blob the registry serves whose digest is not the empty config.
func tamper(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/sha256:") || strings.HasSuffix(r.URL.Path, ociartifact.Digest(ociartifact.EmptyConfig)) {
			next.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r)
		b := rec.Body.Bytes()
		if len(b) > 100 {
			b[100] ^= 1
		}
		w.WriteHeader(rec.Code)
		w.Write(b)
	})
}

func TestPullRefusesTamperedBlob(t *testing.T) {
	pub, priv := newKey(t)
	var tampering bool
	reg := serve(t, func(h http.Handler) http.Handler {
		bad := tamper(h)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if tampering {
				bad.ServeHTTP(w, r)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	if _, err := Push(context.Background(), spineImage(t, priv, 1), reg+"/spines/demo:v1", nil, Options{}); err != nil {
		t.Fatal(err)
	}
	tampering = true
	pullFails(t, reg+"/spines/demo:v1", []ed25519.PublicKey{pub}, "sha256")
}

func TestPullRefusesLyingAnnotations(t *testing.T) {
	pub, priv := newKey(t)
	forged := ociartifact.Digest([]byte("other"))
	reg := serve(t, func(h http.Handler) http.Handler {
		// A registry that answers a digest with whatever manifest it likes.
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.URL.Path = strings.Replace(r.URL.Path, "/manifests/"+forged, "/manifests/v3", 1)
			h.ServeHTTP(w, r)
		})
	})
	p, err := Push(context.Background(), spineImage(t, priv, 3), reg+"/spines/demo:v3", nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// A publisher (or registry) relabels a validly signed v3 as v9.
	raw, err := ociartifact.Build(p.ImageDigest, p.Size, ociartifact.Spine{Name: "demo", Version: 9, RootHash: p.Spine.RootHash})
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(reg + "/spines/demo:v9")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Put(ref, rawManifest(raw)); err != nil {
		t.Fatal(err)
	}
	pullFails(t, reg+"/spines/demo:v9", []ed25519.PublicKey{pub}, "disagree with the signed manifest")
	// A digest that names other bytes than the registry sends.
	pullFails(t, reg+"/spines/demo@"+forged, []ed25519.PublicKey{pub}, "does not match requested digest")
}

func TestPullRefusesOtherArtifacts(t *testing.T) {
	pub, _ := newKey(t)
	reg := serve(t, nil)
	ref, err := name.ParseReference(reg + "/spines/demo:app")
	if err != nil {
		t.Fatal(err)
	}
	other := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.example.sbom","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`
	if err := remote.WriteLayer(ref.Context(), emptyConfig()); err != nil {
		t.Fatal(err)
	}
	if err := remote.Put(ref, rawManifest(other)); err != nil {
		t.Fatal(err)
	}
	pullFails(t, reg+"/spines/demo:app", []ed25519.PublicKey{pub}, "is not a Spine")
	pullFails(t, reg+"/spines/demo:missing", []ed25519.PublicKey{pub}, "MANIFEST_UNKNOWN")
}

func TestPullSurvivesRegistryVanishingMidTransfer(t *testing.T) {
	pub, priv := newKey(t)
	var cut bool
	reg := serve(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !cut || r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/") {
				h.ServeHTTP(w, r)
				return
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			w.Header().Set("Content-Length", rec.Header().Get("Content-Length"))
			w.WriteHeader(rec.Code)
			w.Write(rec.Body.Bytes()[:rec.Body.Len()/2])
			// Drop the connection with half the blob sent.
			panic(http.ErrAbortHandler)
		})
	})
	if _, err := Push(context.Background(), spineImage(t, priv, 1), reg+"/spines/demo:v1", nil, Options{}); err != nil {
		t.Fatal(err)
	}
	cut = true
	pullFails(t, reg+"/spines/demo:v1", []ed25519.PublicKey{pub}, "unexpected EOF")
}

func TestRegistryCredentialsFromDockerConfig(t *testing.T) {
	pub, priv := newKey(t)
	reg := serve(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if u, p, ok := r.BasicAuth(); !ok || u != "owner" || p != "s3cret" {
				w.Header().Set("WWW-Authenticate", `Basic realm="spines"`)
				http.Error(w, "who are you", http.StatusUnauthorized)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	img := spineImage(t, priv, 1)
	cfg := t.TempDir()
	t.Setenv("DOCKER_CONFIG", cfg)
	if _, err := Push(context.Background(), img, reg+"/spines/demo:v1", nil, Options{}); err == nil || !strings.Contains(err.Error(), "401") && !strings.Contains(err.Error(), "UNAUTHORIZED") {
		t.Fatalf("push without credentials = %v", err)
	}
	auth := base64.StdEncoding.EncodeToString([]byte("owner:s3cret"))
	if err := os.WriteFile(filepath.Join(cfg, "config.json"), []byte(`{"auths":{"`+reg+`":{"auth":"`+auth+`"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Push(context.Background(), img, reg+"/spines/demo:v1", nil, Options{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Pull(context.Background(), reg+"/spines/demo:v1", filepath.Join(t.TempDir(), "x.spine"), []ed25519.PublicKey{pub}, Options{}); err != nil {
		t.Fatal(err)
	}
}
