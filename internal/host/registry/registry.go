// Package registry publishes Spine images to OCI registries and fetches them back, through
// go-containerregistry. A registry is only a store on a hostile network: Pull writes an image
// to its destination only after every byte matched the digests the manifest names and the
// image's own signature, manifest and hash tree checked against the trusted keys.
package registry

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"alpinespine.org/spine/internal/format/image"
	"alpinespine.org/spine/internal/format/manifest"
	"alpinespine.org/spine/internal/format/ociartifact"
)

// Options say how to reach a registry.
type Options struct {
	// Insecure allows plain HTTP (and unverified TLS) to the registry. Registries on
	// localhost use plain HTTP without it, as docker does.
	Insecure bool
	// Keychain resolves credentials; nil means the usual docker configuration
	// ($DOCKER_CONFIG/config.json or ~/.docker/config.json).
	Keychain authn.Keychain
}

func (o Options) parse(ref string) (name.Reference, error) {
	var opts []name.Option
	if o.Insecure {
		opts = append(opts, name.Insecure)
	}
	r, err := name.ParseReference(ref, append(opts, name.StrictValidation)...)
	if err != nil {
		return nil, fmt.Errorf("reference %q: %w (want REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:DIGEST)", ref, err)
	}
	return r, nil
}

func (o Options) remote(ctx context.Context) []remote.Option {
	kc := o.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	return []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(kc)}
}

// Published says where a Spine went.
type Published struct {
	Ref         string // REGISTRY/REPO@sha256:... of the artifact manifest
	Digest      string // the artifact manifest's digest, what `spine ctl update oci://` names
	ImageDigest string // the Spine image blob's digest
	Size        int64  // the Spine image's size in bytes
	Spine       ociartifact.Spine
}

// Push publishes the Spine image at path under ref (a tag or a digest). The image's structure
// is checked first and, when trusted keys are given, its signature and hash tree too, so an
// owner does not publish something every machine would refuse.
func Push(ctx context.Context, path, ref string, trusted []ed25519.PublicKey, o Options) (Published, error) {
	r, err := o.parse(ref)
	if err != nil {
		return Published{}, err
	}
	m, err := readManifest(path, trusted)
	if err != nil {
		return Published{}, err
	}
	layer, err := newFileLayer(path)
	if err != nil {
		return Published{}, err
	}
	s := ociartifact.Spine{Name: m.Name, Version: m.Version, RootHash: m.RootHash, Title: filepath.Base(path)}
	raw, err := ociartifact.Build(layer.digest.String(), layer.size, s)
	if err != nil {
		return Published{}, err
	}
	if d, ok := r.(name.Digest); ok && d.DigestStr() != ociartifact.Digest(raw) {
		return Published{}, fmt.Errorf("push to %s: the artifact for %s has digest %s", ref, path, ociartifact.Digest(raw))
	}
	ro := o.remote(ctx)
	repo := r.Context()
	if err := remote.WriteLayer(repo, emptyConfig(), ro...); err != nil {
		return Published{}, fmt.Errorf("push %s: config blob: %w", ref, err)
	}
	if err := remote.WriteLayer(repo, layer, ro...); err != nil {
		return Published{}, fmt.Errorf("push %s: image blob: %w", ref, err)
	}
	if err := remote.Put(r, rawManifest(raw), ro...); err != nil {
		return Published{}, fmt.Errorf("push %s: manifest: %w", ref, err)
	}
	d := ociartifact.Digest(raw)
	return Published{Ref: repo.Name() + "@" + d, Digest: d, ImageDigest: layer.digest.String(), Size: layer.size, Spine: s}, nil
}

// Pull fetches the Spine published under ref into out and returns its verified manifest. The
// image is written to a temporary file beside out and renamed over it only once it has been
// checked; on any failure out is left as it was.
func Pull(ctx context.Context, ref, out string, trusted []ed25519.PublicKey, o Options) (Published, manifest.Manifest, error) {
	if len(trusted) == 0 {
		return Published{}, manifest.Manifest{}, errors.New("pull: no trusted keys")
	}
	r, err := o.parse(ref)
	if err != nil {
		return Published{}, manifest.Manifest{}, err
	}
	ro := o.remote(ctx)
	desc, err := remote.Get(r, ro...)
	if err != nil {
		return Published{}, manifest.Manifest{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	d := ociartifact.Digest(desc.Manifest)
	if want, ok := r.(name.Digest); ok && want.DigestStr() != d {
		return Published{}, manifest.Manifest{}, fmt.Errorf("pull %s: the registry sent a manifest with digest %s", ref, d)
	}
	layer, s, err := ociartifact.Parse(desc.Manifest)
	if err != nil {
		return Published{}, manifest.Manifest{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	blob, err := remote.Layer(r.Context().Digest(layer.Digest), ro...)
	if err != nil {
		return Published{}, manifest.Manifest{}, fmt.Errorf("pull %s: image blob: %w", ref, err)
	}
	rc, err := blob.Compressed()
	if err != nil {
		return Published{}, manifest.Manifest{}, fmt.Errorf("pull %s: image blob %s: %w", ref, layer.Digest, err)
	}
	defer rc.Close()
	m, err := writeVerified(rc, layer, s, out, trusted)
	if err != nil {
		return Published{}, manifest.Manifest{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	return Published{Ref: r.Context().Name() + "@" + d, Digest: d, ImageDigest: layer.Digest, Size: layer.Size, Spine: s}, m, nil
}

// writeVerified copies exactly layer.Size bytes of r into a temporary file beside out, checks
// their digest and the Spine they hold, and renames the file to out.
func writeVerified(r io.Reader, layer ociartifact.Descriptor, claimed ociartifact.Spine, out string, trusted []ed25519.PublicKey) (manifest.Manifest, error) {
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".pull-*")
	if err != nil {
		return manifest.Manifest{}, fmt.Errorf("create temporary file for %s: %w", out, err)
	}
	keep := false
	defer func() {
		if !keep {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(r, layer.Size+1))
	if err != nil {
		return manifest.Manifest{}, fmt.Errorf("image blob %s: %w", layer.Digest, err)
	}
	if n != layer.Size {
		return manifest.Manifest{}, fmt.Errorf("image blob %s: got %d bytes, the manifest says %d", layer.Digest, n, layer.Size)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != layer.Digest {
		return manifest.Manifest{}, fmt.Errorf("image blob: got bytes with digest %s, the manifest names %s", got, layer.Digest)
	}
	if err := tmp.Sync(); err != nil {
		return manifest.Manifest{}, fmt.Errorf("sync %s: %w", tmp.Name(), err)
	}
	m, err := image.Check(tmp, n, trusted, 0)
	if err != nil {
		return manifest.Manifest{}, fmt.Errorf("the image is not a valid Spine: %w", err)
	}
	if claimed.Name != m.Name || claimed.Version != m.Version || claimed.RootHash != m.RootHash {
		// The image itself is sound, but whoever published or stores it says it is something
		// else: an owner pulling "v7" must not get a validly signed v3.
		return manifest.Manifest{}, fmt.Errorf("the artifact's annotations (%s v%d root hash %s) disagree with the signed manifest (%s v%d root hash %s)",
			claimed.Name, claimed.Version, claimed.RootHash, m.Name, m.Version, m.RootHash)
	}
	if err := tmp.Close(); err != nil {
		return manifest.Manifest{}, fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return manifest.Manifest{}, fmt.Errorf("rename %s to %s: %w", tmp.Name(), out, err)
	}
	keep = true
	return m, nil
}

// readManifest opens a Spine image and returns its manifest, fully checked when keys are given.
func readManifest(path string, trusted []ed25519.PublicKey) (manifest.Manifest, error) {
	if len(trusted) > 0 {
		m, err := image.CheckFile(path, trusted, 0)
		if err != nil {
			return manifest.Manifest{}, fmt.Errorf("%s is not a valid Spine: %w", path, err)
		}
		return m, nil
	}
	im, f, err := image.OpenFile(path)
	if err != nil {
		return manifest.Manifest{}, err
	}
	defer f.Close()
	m, err := im.Manifest()
	if err != nil {
		return manifest.Manifest{}, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// rawManifest is an artifact manifest remote.Put sends with its OCI media type.
type rawManifest []byte

func (m rawManifest) RawManifest() ([]byte, error)        { return m, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return ociartifact.ManifestMediaType, nil }

// fileLayer is the Spine image as a blob, read from its file on demand so a large image is
// never held in memory.
type fileLayer struct {
	path   string
	digest v1.Hash
	size   int64
}

func newFileLayer(path string) (*fileLayer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return nil, fmt.Errorf("hash %s: %w", path, err)
	}
	return &fileLayer{path: path, size: n, digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}}, nil
}

func (l *fileLayer) Digest() (v1.Hash, error)             { return l.digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error)             { return l.digest, nil }
func (l *fileLayer) Size() (int64, error)                 { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error)  { return ociartifact.ImageMediaType, nil }
func (l *fileLayer) Compressed() (io.ReadCloser, error)   { return os.Open(l.path) }
func (l *fileLayer) Uncompressed() (io.ReadCloser, error) { return os.Open(l.path) }

// emptyConfig is the OCI empty descriptor's blob, the config of every Spine artifact.
func emptyConfig() v1.Layer {
	return static.NewLayer(ociartifact.EmptyConfig, ociartifact.EmptyMediaType)
}
