// Package courier is bay0's end of a transfer from a courier persona (see internal/format/
// courier): it checks what the courier sends against the digest the operator named and turns
// it into an update offer and a body for update.Stager. The courier is just another hostile
// sender: a lie about the artifact is refused before anything is written, and bytes that do not
// hash to the named artifact fail the body's last read, so the stager restores the slot.
package courier

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"

	"alpinespine.org/spine/internal/bay0/update"
	"alpinespine.org/spine/internal/format/courier"
	"alpinespine.org/spine/internal/format/image"
	"alpinespine.org/spine/internal/format/ociartifact"
)

// Transfer is a courier's transfer whose header checked out.
type Transfer struct {
	// Offer is the image's trailing parts, to authenticate as any update offer.
	Offer update.Offer
	// Size is the number of body bytes Body yields.
	Size int64
	// Body yields the image's body and fails its last read unless the whole image (body and
	// tail) hashes to the artifact's layer digest.
	Body io.Reader
	// Layer is the image blob the artifact manifest names.
	Layer ociartifact.Descriptor
}

// ErrDigest marks bytes that are not the artifact the operator named.
var ErrDigest = errors.New("not the artifact the operator named")

// Accept reads a transfer's header from r and checks it against ref.
func Accept(r io.Reader, ref courier.Ref) (Transfer, error) {
	h, err := courier.ReadHeader(r)
	if err != nil {
		return Transfer{}, err
	}
	if d := ociartifact.Digest(h.Manifest); d != ref.Digest {
		return Transfer{}, fmt.Errorf("%w: the courier sent the manifest %s, the operator named %s", ErrDigest, d, ref.Digest)
	}
	layer, _, err := ociartifact.Parse(h.Manifest)
	if err != nil {
		return Transfer{}, err
	}
	if len(h.Tail) < image.FooterSize {
		return Transfer{}, fmt.Errorf("courier: image tail of %d bytes holds no footer", len(h.Tail))
	}
	fb := h.Tail[len(h.Tail)-image.FooterSize:]
	ft, err := image.ParseFooter(fb)
	if err != nil {
		return Transfer{}, fmt.Errorf("courier: %w", err)
	}
	if int64(ft.ImageSize) != layer.Size {
		return Transfer{}, fmt.Errorf("%w: the footer says %d bytes, the artifact's image is %d", ErrDigest, ft.ImageSize, layer.Size)
	}
	if uint64(len(h.Tail)) != ft.ImageSize-ft.ManifestOffset {
		return Transfer{}, fmt.Errorf("courier: image tail of %d bytes, the footer puts %d after the body", len(h.Tail), ft.ImageSize-ft.ManifestOffset)
	}
	ms := int(ft.ManifestSize)
	offer := update.Offer{
		Footer:    bytes.Clone(fb),
		Manifest:  bytes.Clone(h.Tail[:ms]),
		Signature: bytes.Clone(h.Tail[ms : ms+int(ft.SignatureSize)]),
	}
	size := update.BodySize(ft)
	return Transfer{Offer: offer, Size: size, Layer: layer,
		Body: &digestReader{r: r, left: size, h: sha256.New(), tail: h.Tail, want: layer.Digest}}, nil
}

// digestReader passes through exactly `left` bytes and, on the read that delivers the last of
// them, checks the digest of everything read plus the tail; a mismatch turns that read into an
// error, so the stager never sees a complete body that is not the named artifact.
type digestReader struct {
	r    io.Reader
	left int64
	h    hash.Hash
	tail []byte
	want string
}

func (d *digestReader) Read(p []byte) (int, error) {
	if d.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > d.left {
		p = p[:d.left]
	}
	n, err := d.r.Read(p)
	d.h.Write(p[:n])
	d.left -= int64(n)
	if d.left == 0 {
		d.h.Write(d.tail)
		if got := "sha256:" + hex.EncodeToString(d.h.Sum(nil)); got != d.want {
			return 0, fmt.Errorf("%w: the image the courier sent hashes to %s, the artifact names %s", ErrDigest, got, d.want)
		}
		return n, nil
	}
	if err == io.EOF {
		return n, fmt.Errorf("courier: body ended %d bytes short: %w", d.left, io.ErrUnexpectedEOF)
	}
	return n, err
}
