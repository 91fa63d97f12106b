package ocitree

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"alpinespine.org/spine/internal/host/ocitree/ocitest"
	"alpinespine.org/spine/internal/host/tree"
)

// twoLayers is an image whose second layer deletes a file (whiteout) and empties a directory
// (opaque whiteout) of the first.
var twoLayers = ocitest.Image{
	Layers: [][]ocitest.File{
		{
			{Name: "bin/", Type: tar.TypeDir, Mode: 0o755},
			{Name: "bin/server", Body: "v1", Mode: 0o755},
			{Name: "etc/motd", Body: "hello"},
			{Name: "etc/old.conf", Body: "old"},
			{Name: "www/", Type: tar.TypeDir, Mode: 0o755},
			{Name: "www/index.html", Body: "old page"},
			{Name: "www/img/logo.png", Body: "png"},
		},
		{
			{Name: "bin/server", Body: "v2", Mode: 0o4755},
			{Name: "etc/.wh.old.conf"},
			{Name: "www/.wh..wh..opq"},
			{Name: "www/index.html", Body: "new page"},
		},
	},
	Config: ocitest.Config{Entrypoint: []string{"/bin/server"}, Cmd: []string{"--port", "80"},
		Env: []string{"PATH=/bin", "MODE=prod"}, WorkingDir: "/www", User: "www"},
	Ref: "v2",
}

func newTree(t *testing.T) (*tree.Tree, string) {
	t.Helper()
	dir := t.TempDir()
	tr, err := tree.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr, dir
}

func files(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if info.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			out[rel] = info.Mode().String() + " " + string(b)
		} else {
			out[rel] = info.Mode().String()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestUnpack(t *testing.T) {
	layout := t.TempDir()
	w, err := ocitest.Write(layout, twoLayers)
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), "image.tar")
	if err := ocitest.TarDir(layout, archive); err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{layout, archive} {
		tr, dir := newTree(t)
		img, err := Unpack(context.Background(), src, tr, Options{TempDir: t.TempDir()})
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		want := Image{Digest: w[0].Digest, Entrypoint: []string{"/bin/server"}, Cmd: []string{"--port", "80"},
			Env: []string{"PATH=/bin", "MODE=prod"}, WorkingDir: "/www", User: "www"}
		if !reflect.DeepEqual(img, want) {
			t.Errorf("%s: image %+v, want %+v", src, img, want)
		}
		wantFiles := map[string]string{
			"bin":            "drwxr-xr-x",
			"bin/server":     "-rwxr-xr-x v2",
			"etc":            "drwxr-xr-x",
			"etc/motd":       "-rw-r--r-- hello",
			"www":            "drwxr-xr-x",
			"www/index.html": "-rw-r--r-- new page",
		}
		if got := files(t, dir); !reflect.DeepEqual(got, wantFiles) {
			t.Errorf("%s: tree %v, want %v", src, got, wantFiles)
		}
	}
}

func TestUnpackUncompressed(t *testing.T) {
	layout := t.TempDir()
	im := twoLayers
	im.Uncompressed = true
	if _, err := ocitest.Write(layout, im); err != nil {
		t.Fatal(err)
	}
	tr, dir := newTree(t)
	if _, err := Unpack(context.Background(), layout, tr, Options{}); err != nil {
		t.Fatal(err)
	}
	if got := files(t, dir)["www/index.html"]; got != "-rw-r--r-- new page" {
		t.Errorf("www/index.html: %q", got)
	}
}

func TestUnpackSelectsByRef(t *testing.T) {
	layout := t.TempDir()
	other := ocitest.Image{Layers: [][]ocitest.File{{{Name: "other", Body: "x"}}}, Ref: "other"}
	w, err := ocitest.Write(layout, twoLayers, other)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ref, digest, err string
	}{
		{"", "", "holds 2 images (other, v2): choose one with ref"},
		{"v2", w[0].Digest, ""},
		{"other", w[1].Digest, ""},
		{w[1].Digest, w[1].Digest, ""},
		{"v3", "", `no image with ref "v3"`},
	} {
		tr, _ := newTree(t)
		img, err := Unpack(context.Background(), layout, tr, Options{Ref: tc.ref})
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ref %q: %v, want %q", tc.ref, err, tc.err)
			}
			continue
		}
		if err != nil || img.Digest != tc.digest {
			t.Errorf("ref %q: %v, %s; want %s", tc.ref, err, img.Digest, tc.digest)
		}
	}
}

// TestUnpackMultiPlatform: index.json points at an image index; the linux/amd64 image is taken.
func TestUnpackMultiPlatform(t *testing.T) {
	layout := t.TempDir()
	arm := ocitest.Image{Layers: [][]ocitest.File{{{Name: "arm", Body: "x"}}}, Arch: "arm64"}
	w, err := ocitest.Write(layout, arm, twoLayers)
	if err != nil {
		t.Fatal(err)
	}
	var idx struct {
		Manifests []map[string]any `json:"manifests"`
	}
	b, err := os.ReadFile(filepath.Join(layout, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	idx.Manifests[0]["platform"] = map[string]string{"os": "linux", "architecture": "arm64"}
	idx.Manifests[1]["platform"] = map[string]string{"os": "linux", "architecture": "amd64"}
	child, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": ocitest.MediaIndex, "manifests": idx.Manifests})
	sum := sha256.Sum256(child)
	childDigest := "sha256:" + hex.EncodeToString(sum[:])
	if err := os.WriteFile(ocitest.BlobPath(layout, childDigest), child, 0o644); err != nil {
		t.Fatal(err)
	}
	root, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []map[string]any{{
		"mediaType": ocitest.MediaIndex, "digest": childDigest, "size": len(child)}}})
	if err := os.WriteFile(filepath.Join(layout, "index.json"), root, 0o644); err != nil {
		t.Fatal(err)
	}
	tr, _ := newTree(t)
	img, err := Unpack(context.Background(), layout, tr, Options{})
	if err != nil || img.Digest != w[1].Digest {
		t.Fatalf("Unpack = %+v, %v; want the amd64 image %s", img, err, w[1].Digest)
	}

	// An arm64-only image is refused.
	only := t.TempDir()
	if _, err := ocitest.Write(only, arm); err != nil {
		t.Fatal(err)
	}
	if _, err := Unpack(context.Background(), only, tr, Options{}); err == nil || !strings.Contains(err.Error(), "linux/arm64") {
		t.Errorf("arm64 image: %v", err)
	}
}

// TestUnpackRefusesBrokenBlobs damages each blob in turn: the error names the blob, wraps
// ErrDigestMismatch, and nothing was applied to the tree.
func TestUnpackRefusesBrokenBlobs(t *testing.T) {
	for _, tc := range []struct {
		name   string
		blob   func(w ocitest.Written) string
		damage func(b []byte) []byte
	}{
		{"layer", func(w ocitest.Written) string { return w.Layers[1] }, flip},
		{"layer", func(w ocitest.Written) string { return w.Layers[0] }, func(b []byte) []byte { return b[:len(b)-1] }},
		{"config", func(w ocitest.Written) string { return w.Config }, flip},
		{"manifest", func(w ocitest.Written) string { return w.Digest }, flip},
	} {
		t.Run(tc.name, func(t *testing.T) {
			layout := t.TempDir()
			w, err := ocitest.Write(layout, twoLayers)
			if err != nil {
				t.Fatal(err)
			}
			digest := tc.blob(w[0])
			p := ocitest.BlobPath(layout, digest)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, tc.damage(b), 0o644); err != nil {
				t.Fatal(err)
			}
			tr, dir := newTree(t)
			_, err = Unpack(context.Background(), layout, tr, Options{})
			var de *DigestError
			if !errors.Is(err, ErrDigestMismatch) || !errors.As(err, &de) || de.What != tc.name ||
				!strings.Contains(err.Error(), tc.name+" "+digest) {
				t.Fatalf("Unpack = %v, want a digest mismatch naming %s %s", err, tc.name, digest)
			}
			if got := files(t, dir); len(got) != 0 {
				t.Errorf("the tree was written before the blobs were checked: %v", got)
			}
		})
	}
}

func flip(b []byte) []byte {
	b[len(b)/2] ^= 0x20
	return b
}

func TestUnpackRefusesTraversal(t *testing.T) {
	layout := t.TempDir()
	w, err := ocitest.Write(layout, ocitest.Image{Layers: [][]ocitest.File{
		{{Name: "ok", Body: "x"}},
		{{Name: "../../escape", Body: "x"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	tr, dir := newTree(t)
	_, err = Unpack(context.Background(), layout, tr, Options{})
	if !errors.Is(err, tree.ErrUnsafePath) || !strings.Contains(err.Error(), w[0].Layers[1]) {
		t.Fatalf("Unpack = %v, want an unsafe path in layer %s", err, w[0].Layers[1])
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "escape")); err == nil {
		t.Fatal("escaped")
	}
}

func TestUnpackErrors(t *testing.T) {
	tr, _ := newTree(t)
	missing := filepath.Join(t.TempDir(), "nope")
	if _, err := Unpack(context.Background(), missing, tr, Options{}); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("missing layout: %v", err)
	}
	notTar := filepath.Join(t.TempDir(), "junk.tar")
	if err := os.WriteFile(notTar, []byte("not a tar at all, not even close............"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Unpack(context.Background(), notTar, tr, Options{}); err == nil {
		t.Error("junk accepted as a layout")
	}
	empty := t.TempDir()
	if _, err := Unpack(context.Background(), empty, tr, Options{}); err == nil || !strings.Contains(err.Error(), "not an OCI image layout") {
		t.Errorf("empty dir: %v", err)
	}
	future := t.TempDir()
	if _, err := ocitest.Write(future, twoLayers); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(future, "oci-layout"), []byte(`{"imageLayoutVersion":"2.0.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Unpack(context.Background(), future, tr, Options{}); err == nil || !strings.Contains(err.Error(), `"2.0.0" is not supported`) {
		t.Errorf("layout version 2: %v", err)
	}
}

// TestUnpackRefusesWrongDiffID: the layer blob matches the manifest, but its uncompressed
// content is not what the config says it is.
func TestUnpackRefusesWrongDiffID(t *testing.T) {
	layout := t.TempDir()
	w, err := ocitest.Write(layout, twoLayers)
	if err != nil {
		t.Fatal(err)
	}
	// Rewrite the chain config -> manifest -> index.json with a wrong second diff ID.
	rewrite := func(digest string, edit func(map[string]any)) (string, int) {
		b, err := os.ReadFile(ocitest.BlobPath(layout, digest))
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatal(err)
		}
		edit(v)
		b, _ = json.Marshal(v)
		sum := sha256.Sum256(b)
		d := "sha256:" + hex.EncodeToString(sum[:])
		if err := os.WriteFile(ocitest.BlobPath(layout, d), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return d, len(b)
	}
	wrong := "sha256:" + strings.Repeat("ab", 32)
	cfg, cfgSize := rewrite(w[0].Config, func(v map[string]any) {
		v["rootfs"].(map[string]any)["diff_ids"].([]any)[1] = wrong
	})
	man, manSize := rewrite(w[0].Digest, func(v map[string]any) {
		c := v["config"].(map[string]any)
		c["digest"], c["size"] = cfg, cfgSize
	})
	idx, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []map[string]any{{
		"mediaType": ocitest.MediaManifest, "digest": man, "size": manSize}}})
	if err := os.WriteFile(filepath.Join(layout, "index.json"), idx, 0o644); err != nil {
		t.Fatal(err)
	}
	tr, _ := newTree(t)
	_, err = Unpack(context.Background(), layout, tr, Options{})
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), w[0].Layers[1]) || !strings.Contains(err.Error(), wrong) {
		t.Fatalf("Unpack = %v, want a diff ID mismatch naming layer %s", err, w[0].Layers[1])
	}
}
