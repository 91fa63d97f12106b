package ociartifact

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

var imageDigest = Digest([]byte("a spine image"))

func TestBuildParseRoundTrip(t *testing.T) {
	s := Spine{Name: "demo", Version: 7, RootHash: strings.Repeat("ab", 32), Title: "demo-v7.spine"}
	b, err := Build(imageDigest, 4096, s)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Build(imageDigest, 4096, s)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, again) {
		t.Fatalf("the same Spine gave two manifests:\n%s\n%s", b, again)
	}
	l, got, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if l.Digest != imageDigest || l.Size != 4096 || l.MediaType != ImageMediaType {
		t.Fatalf("layer %+v", l)
	}
	if got != s {
		t.Fatalf("annotations say %+v, want %+v", got, s)
	}
	// The empty config's digest is the one the OCI specification gives.
	if want := "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"; Digest(EmptyConfig) != want {
		t.Fatalf("empty config digest %s, want %s", Digest(EmptyConfig), want)
	}
}

func TestBuildRefusesBadInput(t *testing.T) {
	if _, err := Build("md5:00", 1, Spine{}); err == nil {
		t.Fatal("accepted a non-sha256 digest")
	}
	if _, err := Build(imageDigest, 0, Spine{}); err == nil {
		t.Fatal("accepted an empty image")
	}
}

func TestParseRefuses(t *testing.T) {
	good, err := Build(imageDigest, 4096, Spine{Name: "demo", Version: 1})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, old, new, want string
	}{
		{"wrong artifact type", ArtifactType, "application/vnd.example.other", "is not a Spine"},
		{"an index", ManifestMediaType, "application/vnd.oci.image.index.v1+json", "mediaType"},
		{"schema 1", `"schemaVersion":2`, `"schemaVersion":1`, "schemaVersion 1"},
		{"layer type", ImageMediaType, "application/vnd.oci.image.layer.v1.tar+gzip", "layer mediaType"},
		{"upper-case digest", imageDigest, strings.ToUpper(imageDigest), "sha256 digest"},
		{"short digest", imageDigest, imageDigest[:20], "64 lower-case hex"},
		{"negative size", `"size":4096`, `"size":-1`, "not positive"},
		{"unknown field", `"schemaVersion":2`, `"schemaVersion":2,"subject":{}`, "unknown field"},
		{"two layers", `"layers":[`, `"layers":[{"mediaType":"x","digest":"sha256:00","size":1},`, "2 layers"},
		{"bad version", `"org.alpinespine.spine.version":"1"`, `"org.alpinespine.spine.version":"one"`, "not a version number"},
		{"config not empty", `"size":2`, `"size":3`, "empty descriptor"},
		{"trailing data", "}}", "}} {}", "after the JSON"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := []byte(strings.Replace(string(good), c.old, c.new, 1))
			if bytes.Equal(b, good) {
				t.Fatalf("%q not found in %s", c.old, good)
			}
			_, _, err := Parse(b)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Parse = %v, want an error containing %q", err, c.want)
			}
		})
	}
	var m Manifest
	if err := json.Unmarshal(good, &m); err != nil {
		t.Fatal(err)
	}
	m.Layers = nil
	noLayers, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Parse(noLayers); err == nil || !strings.Contains(err.Error(), "0 layers") {
		t.Fatalf("Parse of a manifest without layers = %v", err)
	}
	if _, _, err := Parse(bytes.Repeat([]byte(" "), MaxManifestSize+1)); err == nil {
		t.Fatal("accepted an oversized manifest")
	}
}

func TestCheckReference(t *testing.T) {
	if err := CheckReference(imageDigest); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "sha256:", "sha512:" + strings.Repeat("0", 128), "sha256:" + strings.Repeat("g", 64)} {
		if CheckReference(bad) == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

// FuzzParse: the manifest comes from the network. Parse never panics, and whatever it accepts
// names a well-formed blob and builds back to a manifest it accepts again.
func FuzzParse(f *testing.F) {
	good, err := Build(imageDigest, 4096, Spine{Name: "demo", Version: 3, RootHash: "00", Title: "t"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"schemaVersion":2,"layers":[{}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, s, err := Parse(b)
		if err != nil {
			return
		}
		if CheckReference(l.Digest) != nil || l.Size <= 0 || l.MediaType != ImageMediaType {
			t.Fatalf("accepted a bad layer %+v", l)
		}
		again, err := Build(l.Digest, l.Size, s)
		if err != nil {
			t.Fatalf("rebuild of an accepted manifest: %v", err)
		}
		if _, _, err := Parse(again); err != nil {
			t.Fatalf("rebuilt manifest refused: %v", err)
		}
	})
}
