// Package ociartifact is how a Spine image travels through an OCI registry: one OCI image
// manifest with its own artifactType, the empty config, and a single layer that is the whole
// Spine image file (its signature inside). The registry is only a store: the manifest's
// annotations are a convenience for people browsing it, and the image is trusted only once its
// own signature checks. Parse is what a puller (or bay0, handed bytes by a courier) uses to
// find the one blob it will accept; it refuses anything else, since the manifest comes from
// the network.
package ociartifact

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Media types of a Spine artifact.
const (
	ManifestMediaType = "application/vnd.oci.image.manifest.v1+json"
	ArtifactType      = "application/vnd.alpinespine.spine.v1"
	ImageMediaType    = "application/vnd.alpinespine.spine.image.v1"
	EmptyMediaType    = "application/vnd.oci.empty.v1+json"
)

// Annotations on the manifest, for people and tools browsing a registry; never trusted.
const (
	AnnotationName     = "org.alpinespine.spine.name"
	AnnotationVersion  = "org.alpinespine.spine.version"
	AnnotationRootHash = "org.alpinespine.spine.root-hash"
	AnnotationTitle    = "org.opencontainers.image.title"
)

// MaxManifestSize bounds the manifest a puller reads: a Spine artifact's manifest is under
// 1 KiB, and a registry that sends megabytes is not serving one.
const MaxManifestSize = 64 << 10

// EmptyConfig is the OCI empty descriptor's content.
var EmptyConfig = []byte("{}")

// Descriptor names a blob by digest and size.
type Descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Manifest is the OCI image manifest of a Spine artifact.
type Manifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	ArtifactType  string            `json:"artifactType"`
	Config        Descriptor        `json:"config"`
	Layers        []Descriptor      `json:"layers"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// Spine is what the annotations say about the image; Build writes them, Parse returns them.
type Spine struct {
	Name     string
	Version  uint64
	RootHash string
	Title    string // the image's file name, for tools that save layers by title
}

// Digest returns the "sha256:<hex>" digest of b.
func Digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// Build returns the manifest bytes for an image blob with the given digest and size. The
// bytes depend only on the arguments (encoding/json sorts map keys), so the same Spine pushed
// twice has the same manifest digest.
func Build(imageDigest string, imageSize int64, s Spine) ([]byte, error) {
	if err := checkDigest(imageDigest); err != nil {
		return nil, fmt.Errorf("image digest: %w", err)
	}
	if imageSize <= 0 {
		return nil, fmt.Errorf("image size %d is not positive", imageSize)
	}
	layer := Descriptor{MediaType: ImageMediaType, Digest: imageDigest, Size: imageSize}
	if s.Title != "" {
		layer.Annotations = map[string]string{AnnotationTitle: s.Title}
	}
	m := Manifest{
		SchemaVersion: 2,
		MediaType:     ManifestMediaType,
		ArtifactType:  ArtifactType,
		Config:        Descriptor{MediaType: EmptyMediaType, Digest: Digest(EmptyConfig), Size: int64(len(EmptyConfig))},
		Layers:        []Descriptor{layer},
		Annotations: map[string]string{
			AnnotationName:     s.Name,
			AnnotationVersion:  strconv.FormatUint(s.Version, 10),
			AnnotationRootHash: s.RootHash,
		},
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode artifact manifest: %w", err)
	}
	return b, nil
}

// Parse checks that b is a Spine artifact's manifest and returns the image blob it names and
// what its annotations claim. Unknown fields are refused: a manifest that carries more than
// this package writes is not one of ours.
func Parse(b []byte) (Descriptor, Spine, error) {
	if len(b) > MaxManifestSize {
		return Descriptor{}, Spine{}, fmt.Errorf("artifact manifest is %d bytes, more than %d", len(b), MaxManifestSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return Descriptor{}, Spine{}, fmt.Errorf("artifact manifest: %w", err)
	}
	if dec.More() {
		return Descriptor{}, Spine{}, fmt.Errorf("artifact manifest: data after the JSON object")
	}
	switch {
	case m.SchemaVersion != 2:
		return Descriptor{}, Spine{}, fmt.Errorf("artifact manifest: schemaVersion %d, want 2", m.SchemaVersion)
	case m.MediaType != ManifestMediaType:
		return Descriptor{}, Spine{}, fmt.Errorf("artifact manifest: mediaType %q, want %q", m.MediaType, ManifestMediaType)
	case m.ArtifactType != ArtifactType:
		return Descriptor{}, Spine{}, fmt.Errorf("artifact manifest: artifactType %q is not a Spine (%q)", m.ArtifactType, ArtifactType)
	case m.Config.MediaType != EmptyMediaType || m.Config.Digest != Digest(EmptyConfig) || m.Config.Size != int64(len(EmptyConfig)):
		return Descriptor{}, Spine{}, fmt.Errorf("artifact manifest: config is not the empty descriptor")
	case len(m.Layers) != 1:
		return Descriptor{}, Spine{}, fmt.Errorf("artifact manifest: %d layers, want exactly 1 (the Spine image)", len(m.Layers))
	}
	l := m.Layers[0]
	if l.MediaType != ImageMediaType {
		return Descriptor{}, Spine{}, fmt.Errorf("artifact manifest: layer mediaType %q, want %q", l.MediaType, ImageMediaType)
	}
	if err := checkDigest(l.Digest); err != nil {
		return Descriptor{}, Spine{}, fmt.Errorf("artifact manifest: layer digest: %w", err)
	}
	if l.Size <= 0 {
		return Descriptor{}, Spine{}, fmt.Errorf("artifact manifest: layer size %d is not positive", l.Size)
	}
	s := Spine{Name: m.Annotations[AnnotationName], RootHash: m.Annotations[AnnotationRootHash], Title: l.Annotations[AnnotationTitle]}
	if v, ok := m.Annotations[AnnotationVersion]; ok {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return Descriptor{}, Spine{}, fmt.Errorf("artifact manifest: annotation %s %q is not a version number", AnnotationVersion, v)
		}
		s.Version = n
	}
	return l, s, nil
}

// CheckReference reports whether ref ("sha256:<64 hex>") is a digest this package accepts.
func CheckReference(ref string) error { return checkDigest(ref) }

func checkDigest(d string) error {
	h, ok := strings.CutPrefix(d, "sha256:")
	if !ok {
		return fmt.Errorf("%q is not a sha256 digest", d)
	}
	if len(h) != 64 || strings.ToLower(h) != h {
		return fmt.Errorf("%q is not 64 lower-case hex digits", d)
	}
	if _, err := hex.DecodeString(h); err != nil {
		return fmt.Errorf("%q is not 64 lower-case hex digits", d)
	}
	return nil
}
