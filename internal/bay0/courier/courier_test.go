package courier

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"alpinespine.org/spine/internal/bay0/update"
	"alpinespine.org/spine/internal/format/courier"
	"alpinespine.org/spine/internal/format/image"
	"alpinespine.org/spine/internal/format/manifest"
	"alpinespine.org/spine/internal/format/ociartifact"
	"alpinespine.org/spine/internal/host/squashfs"
)

// artifact is a signed Spine image as a registry would hold it.
type artifact struct {
	image    []byte
	manifest []byte // the artifact manifest
	ref      courier.Ref
	body     int64 // the image's body size
	pub      ed25519.PublicKey
}

func newArtifact(t *testing.T) artifact {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	if err := os.MkdirAll(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "bay0"), bytes.Repeat([]byte("bay0 "), 40000), 0o755); err != nil {
		t.Fatal(err)
	}
	sq := filepath.Join(dir, "fs")
	if err := squashfs.Make(context.Background(), tree, sq, 1); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "img")
	m := manifest.Manifest{Format: 1, Name: "demo", Version: 2, Constitution: "0.1", Personas: []string{}}
	if _, err := image.Assemble(out, sq, image.Assembly{Manifest: m, Key: priv, Salt: []byte{1}, UUID: [16]byte{2}}); err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	ft, err := image.ParseFooter(img[len(img)-image.FooterSize:])
	if err != nil {
		t.Fatal(err)
	}
	am, err := ociartifact.Build(ociartifact.Digest(img), int64(len(img)), ociartifact.Spine{Name: "demo", Version: 2})
	if err != nil {
		t.Fatal(err)
	}
	return artifact{image: img, manifest: am, body: int64(ft.ManifestOffset), pub: pub,
		ref: courier.Ref{Registry: "10.0.2.2:5000", Repository: "spines/demo", Digest: ociartifact.Digest(am)}}
}

// send frames a transfer as a courier does.
func (a artifact) send(t *testing.T, manifest, img []byte) io.Reader {
	t.Helper()
	var b bytes.Buffer
	if err := courier.WriteHeader(&b, courier.Header{Manifest: manifest, Tail: img[a.body:]}); err != nil {
		t.Fatal(err)
	}
	b.Write(img[:a.body])
	return &b
}

func TestAcceptGoodTransfer(t *testing.T) {
	a := newArtifact(t)
	tr, err := Accept(a.send(t, a.manifest, a.image), a.ref)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Size != a.body {
		t.Fatalf("size %d, want %d", tr.Size, a.body)
	}
	// The offer is what update.Check authenticates.
	m, _, err := tr.Offer.Check([]ed25519.PublicKey{a.pub}, update.Floor{Running: 1, SlotSize: 1 << 30})
	if err != nil || m.Version != 2 {
		t.Fatalf("offer check: %v, %+v", err, m)
	}
	body, err := io.ReadAll(tr.Body)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(body, a.image[:a.body]) {
		t.Fatal("body differs from the image's")
	}
}

func TestAcceptRefusesOtherArtifacts(t *testing.T) {
	a := newArtifact(t)
	other := newArtifact(t)
	if _, err := Accept(a.send(t, other.manifest, other.image), a.ref); !errors.Is(err, ErrDigest) {
		t.Fatalf("another artifact's manifest: %v", err)
	}
	// The manifest the operator named, with another signed Spine of the same size: the
	// header passes (the sizes agree), the body's last read refuses it.
	tr, err := Accept(a.send(t, a.manifest, other.image), a.ref)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(tr.Body); !errors.Is(err, ErrDigest) {
		t.Fatalf("another image under the named manifest: %v", err)
	}
	short := a.image[a.body:]
	var b bytes.Buffer
	if err := courier.WriteHeader(&b, courier.Header{Manifest: a.manifest, Tail: short[:10]}); err != nil {
		t.Fatal(err)
	}
	if _, err := Accept(&b, a.ref); err == nil || !strings.Contains(err.Error(), "no footer") {
		t.Fatalf("a short tail: %v", err)
	}
}

func TestTamperedBodyFailsItsLastRead(t *testing.T) {
	a := newArtifact(t)
	bad := bytes.Clone(a.image)
	bad[100] ^= 1
	tr, err := Accept(a.send(t, a.manifest, bad), a.ref)
	if err != nil {
		t.Fatal(err) // the header is honest: only the body lies
	}
	n, err := io.Copy(io.Discard, tr.Body)
	if !errors.Is(err, ErrDigest) {
		t.Fatalf("tampered body: %v", err)
	}
	if n >= a.body {
		t.Fatalf("the whole tampered body (%d bytes) was delivered", n)
	}
}

func TestShortBody(t *testing.T) {
	a := newArtifact(t)
	var b bytes.Buffer
	if err := courier.WriteHeader(&b, courier.Header{Manifest: a.manifest, Tail: a.image[a.body:]}); err != nil {
		t.Fatal(err)
	}
	b.Write(a.image[:a.body/2])
	tr, err := Accept(&b, a.ref)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, tr.Body); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short body: %v", err)
	}
}

// FuzzAccept: whatever a courier sends, Accept never panics, and a body it hands out never
// completes unless the bytes are the named artifact.
func FuzzAccept(f *testing.F) {
	var b bytes.Buffer
	courier.WriteHeader(&b, courier.Header{Manifest: []byte("{}"), Tail: make([]byte, 100)})
	f.Add(b.Bytes())
	ref := courier.Ref{Registry: "r", Repository: "x", Digest: ociartifact.Digest([]byte("{}"))}
	f.Fuzz(func(t *testing.T, in []byte) {
		tr, err := Accept(bytes.NewReader(in), ref)
		if err != nil {
			return
		}
		io.Copy(io.Discard, tr.Body)
	})
}
