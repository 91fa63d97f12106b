// Package ocitree unpacks one image of an OCI image layout (a directory, or a tar of one, as
// `skopeo copy ... oci:DIR:TAG`, umoci or `buildah push ... oci:DIR` write it) into a persona's
// tree, checking every blob against its digest before any of it is used.
//
// The formats are read with go-containerregistry; the layers are applied by package tree, which
// keeps every write inside the tree.
package ocitree

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"alpinespine.org/spine/internal/host/tree"
)

// The platform of every Spine.
const (
	OS   = "linux"
	Arch = "amd64"
)

// Annotations of index.json entries that name an image.
const (
	AnnotationRefName   = "org.opencontainers.image.ref.name" // skopeo, umoci, buildah: the tag
	AnnotationImageName = "io.containerd.image.name"          // containerd: the full reference
)

// ErrDigestMismatch means a blob's bytes are not the ones its digest (or size) names: the
// layout is damaged or was tampered with.
var ErrDigestMismatch = errors.New("content does not match its digest")

// DigestError is a blob whose content does not match its descriptor.
type DigestError struct {
	What   string // "layer", "config", "manifest", "index"
	Digest string // what the descriptor says
	Got    string // what the content hashes to, or a size mismatch
}

func (e *DigestError) Error() string {
	return fmt.Sprintf("%s %s: %s (%v)", e.What, e.Digest, e.Got, ErrDigestMismatch)
}

// Is makes errors.Is(err, ErrDigestMismatch) true.
func (e *DigestError) Is(target error) bool { return target == ErrDigestMismatch }

// Options select the image and say where to work.
type Options struct {
	// Ref selects the image when index.json lists several: its ref name (tag) or containerd
	// image name, or its manifest digest. With one image it may be empty.
	Ref string
	// TempDir receives the unpacked copy of a layout given as a tar; "" is os.TempDir().
	TempDir string
}

// Image is what a persona takes from the image besides its files.
type Image struct {
	// Digest is the image manifest's digest, "sha256:<hex>".
	Digest     string
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	// User is the image's user: the persona's user unless its policy sets one.
	User string
	// StopSignal is the signal the image asks to be stopped with ("" for SIGTERM).
	StopSignal string
}

// Unpack applies the layers of the selected image of the layout at path to dst, in order and
// with whiteouts, after checking the digest and size of the manifest, the config and every
// layer. A blob that does not match gives a *DigestError naming it.
func Unpack(ctx context.Context, path string, dst *tree.Tree, opts Options) (Image, error) {
	dir, cleanup, err := openLayout(path, opts.TempDir)
	if err != nil {
		return Image{}, err
	}
	defer cleanup()
	if err := checkLayoutVersion(dir); err != nil {
		return Image{}, err
	}
	lp, err := layout.FromPath(dir)
	if err != nil {
		return Image{}, fmt.Errorf("open layout: %w", err)
	}
	img, desc, err := selectImage(lp, opts.Ref)
	if err != nil {
		return Image{}, err
	}
	m, cf, err := checkImage(img, desc)
	if err != nil {
		return Image{}, err
	}
	if len(cf.RootFS.DiffIDs) != len(m.Layers) {
		return Image{}, fmt.Errorf("config lists %d layers, the manifest %d", len(cf.RootFS.DiffIDs), len(m.Layers))
	}
	// Check every layer before applying any: a damaged image leaves nothing half-applied.
	for _, l := range m.Layers {
		if err := checkLayerType(l); err != nil {
			return Image{}, err
		}
		if err := checkBlob(lp, l, "layer"); err != nil {
			return Image{}, err
		}
	}
	for i, l := range m.Layers {
		if err := ctx.Err(); err != nil {
			return Image{}, err
		}
		if err := applyLayer(img, l, cf.RootFS.DiffIDs[i], dst); err != nil {
			return Image{}, fmt.Errorf("layer %s: %w", l.Digest, err)
		}
	}
	c := cf.Config
	return Image{Digest: desc.Digest.String(), Entrypoint: c.Entrypoint, Cmd: c.Cmd, Env: c.Env,
		WorkingDir: c.WorkingDir, User: c.User, StopSignal: c.StopSignal}, nil
}

// selectImage picks the image named by ref (or the only one) from index.json, descending into
// a nested index (a multi-platform image) to the linux/amd64 manifest.
func selectImage(lp layout.Path, ref string) (v1.Image, v1.Descriptor, error) {
	idx, err := lp.ImageIndex()
	if err != nil {
		return nil, v1.Descriptor{}, fmt.Errorf("read index.json: %w", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, v1.Descriptor{}, fmt.Errorf("read index.json: %w", err)
	}
	var found []v1.Descriptor
	for _, d := range im.Manifests {
		if ref == "" || d.Annotations[AnnotationRefName] == ref || d.Annotations[AnnotationImageName] == ref ||
			d.Digest.String() == ref {
			found = append(found, d)
		}
	}
	switch {
	case len(found) == 0 && ref != "":
		return nil, v1.Descriptor{}, fmt.Errorf("no image with ref %q in the layout (it has %s)", ref, refs(im.Manifests))
	case len(found) == 0:
		return nil, v1.Descriptor{}, errors.New("the layout holds no image")
	case len(found) > 1:
		return nil, v1.Descriptor{}, fmt.Errorf("the layout holds %d images (%s): choose one with ref", len(found), refs(found))
	}
	desc := found[0]
	if desc.MediaType.IsIndex() {
		child, err := idx.ImageIndex(desc.Digest)
		if err != nil {
			return nil, v1.Descriptor{}, fmt.Errorf("read index %s: %w", desc.Digest, err)
		}
		if err := checkManifest(child, desc, "index"); err != nil {
			return nil, v1.Descriptor{}, err
		}
		if desc, err = platformManifest(child); err != nil {
			return nil, v1.Descriptor{}, fmt.Errorf("index %s: %w", found[0].Digest, err)
		}
		idx = child
	}
	if !desc.MediaType.IsImage() {
		return nil, v1.Descriptor{}, fmt.Errorf("%s has media type %q, not an image manifest", desc.Digest, desc.MediaType)
	}
	img, err := idx.Image(desc.Digest)
	if err != nil {
		return nil, v1.Descriptor{}, fmt.Errorf("read image %s: %w", desc.Digest, err)
	}
	return img, desc, nil
}

func platformManifest(idx v1.ImageIndex) (v1.Descriptor, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return v1.Descriptor{}, err
	}
	var have []string
	for _, d := range im.Manifests {
		if p := d.Platform; p != nil {
			if p.OS == OS && p.Architecture == Arch && d.MediaType.IsImage() {
				return d, nil
			}
			have = append(have, p.OS+"/"+p.Architecture)
		}
	}
	return v1.Descriptor{}, fmt.Errorf("no %s/%s image (it has %v)", OS, Arch, have)
}

func refs(ds []v1.Descriptor) string {
	var out []string
	for _, d := range ds {
		r := d.Annotations[AnnotationRefName]
		if r == "" {
			r = d.Annotations[AnnotationImageName]
		}
		if r == "" {
			r = d.Digest.String()
		}
		out = append(out, r)
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// rawManifest is what both images and indexes have: bytes, from which a digest is computed.
type rawManifest interface {
	RawManifest() ([]byte, error)
}

// checkManifest compares an index's or a manifest's bytes with the descriptor that names them.
func checkManifest(r rawManifest, desc v1.Descriptor, what string) error {
	b, err := r.RawManifest()
	if err != nil {
		return fmt.Errorf("read %s %s: %w", what, desc.Digest, err)
	}
	return checkBytes(b, desc, what)
}

func checkBytes(b []byte, desc v1.Descriptor, what string) error {
	if desc.Digest.Algorithm != "sha256" {
		return fmt.Errorf("%s %s: only sha256 digests are supported", what, desc.Digest)
	}
	sum := sha256.Sum256(b)
	if got := hex.EncodeToString(sum[:]); got != desc.Digest.Hex {
		return &DigestError{What: what, Digest: desc.Digest.String(), Got: "content hashes to sha256:" + got}
	}
	if int64(len(b)) != desc.Size {
		return &DigestError{What: what, Digest: desc.Digest.String(), Got: fmt.Sprintf("%d bytes, descriptor says %d", len(b), desc.Size)}
	}
	return nil
}

// checkImage checks the manifest and the config against their digests and the config's platform.
func checkImage(img v1.Image, desc v1.Descriptor) (*v1.Manifest, *v1.ConfigFile, error) {
	if err := checkManifest(img, desc, "manifest"); err != nil {
		return nil, nil, err
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, nil, fmt.Errorf("parse manifest %s: %w", desc.Digest, err)
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		return nil, nil, fmt.Errorf("read config %s: %w", m.Config.Digest, err)
	}
	if err := checkBytes(raw, m.Config, "config"); err != nil {
		return nil, nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, nil, fmt.Errorf("parse config %s: %w", m.Config.Digest, err)
	}
	if (cf.OS != "" && cf.OS != OS) || (cf.Architecture != "" && cf.Architecture != Arch) {
		return nil, nil, fmt.Errorf("image is for %s/%s, a Spine runs %s/%s", cf.OS, cf.Architecture, OS, Arch)
	}
	return m, cf, nil
}

func checkLayerType(l v1.Descriptor) error {
	switch l.MediaType {
	case types.OCILayer, types.OCILayerZStd, types.OCIUncompressedLayer, types.OCIRestrictedLayer,
		types.OCIUncompressedRestrictedLayer, types.DockerLayer, types.DockerUncompressedLayer, types.DockerForeignLayer:
		return nil
	}
	return fmt.Errorf("layer %s has media type %q, which cannot be unpacked", l.Digest, l.MediaType)
}

// checkBlob hashes a blob of the layout and compares it with its descriptor.
func checkBlob(lp layout.Path, d v1.Descriptor, what string) error {
	if d.Digest.Algorithm != "sha256" {
		return fmt.Errorf("%s %s: only sha256 digests are supported", what, d.Digest)
	}
	rc, err := lp.Blob(d.Digest)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, d.Digest, err)
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		return fmt.Errorf("read %s %s: %w", what, d.Digest, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != d.Digest.Hex {
		return &DigestError{What: what, Digest: d.Digest.String(), Got: "content hashes to sha256:" + got}
	}
	if n != d.Size {
		return &DigestError{What: what, Digest: d.Digest.String(), Got: fmt.Sprintf("%d bytes, descriptor says %d", n, d.Size)}
	}
	return nil
}

// applyLayer unpacks one (already checked) layer and checks its uncompressed content against
// the config's diff ID as it goes.
func applyLayer(img v1.Image, d v1.Descriptor, diffID v1.Hash, dst *tree.Tree) error {
	l, err := img.LayerByDigest(d.Digest)
	if err != nil {
		return err
	}
	rc, err := l.Uncompressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	h := sha256.New()
	r := io.TeeReader(rc, h)
	if err := dst.Apply(r, tree.Layer); err != nil {
		return err
	}
	// The tar may end before the stream does (padding): hash all of it.
	if _, err := io.Copy(io.Discard, r); err != nil {
		return fmt.Errorf("read layer: %w", err)
	}
	return checkDiffID(h, diffID, d)
}

func checkDiffID(h hash.Hash, diffID v1.Hash, d v1.Descriptor) error {
	if diffID.Algorithm != "sha256" {
		return fmt.Errorf("diff ID %s: only sha256 is supported", diffID)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != diffID.Hex {
		return &DigestError{What: "layer", Digest: d.Digest.String(),
			Got: "uncompressed content hashes to sha256:" + got + ", config says " + diffID.String()}
	}
	return nil
}

// checkLayoutVersion reads the oci-layout file: a layout of another major version may mean
// something else by the same files.
func checkLayoutVersion(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "oci-layout"))
	if err != nil {
		return fmt.Errorf("not an OCI image layout: %w", err)
	}
	var v struct {
		Version string `json:"imageLayoutVersion"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("read oci-layout: %w", err)
	}
	if major, _, _ := strings.Cut(v.Version, "."); major != "1" {
		return fmt.Errorf("OCI image layout version %q is not supported (want 1.x)", v.Version)
	}
	return nil
}

// openLayout returns the directory of the layout at path: path itself, or a temporary copy of
// the layout when path is a tar of one.
func openLayout(path, tempDir string) (string, func(), error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", nil, fmt.Errorf("open layout: %w", err)
	}
	if fi.IsDir() {
		return path, func() {}, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", nil, fmt.Errorf("open layout: %w", err)
	}
	defer f.Close()
	dir, err := os.MkdirTemp(tempDir, "spine-oci-")
	if err != nil {
		return "", nil, fmt.Errorf("unpack layout: %w", err)
	}
	cleanup := func() { os.RemoveAll(dir) }
	if err := untarLayout(f, dir); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("unpack layout %s: %w", path, err)
	}
	return dir, cleanup, nil
}
