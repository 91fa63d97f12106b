// Package courier is the wire between bay0 and a courier persona: the persona that fetches a
// Spine from an OCI registry over its network and hands the bytes to bay0. Authority stays on
// the control line: the operator names the artifact by digest there, bay0 gives the courier a
// channel made for that one transfer, and accepts only bytes that hash to what the operator
// named. The courier is trusted for nothing; everything it sends is parsed here with limits.
//
// A transfer on the channel is a header, then the image's body:
//
//	uint32 big-endian length N (at most MaxHeader), then N bytes of JSON Header
//	the first Header.BodySize bytes of the image blob
//
// The header carries the artifact manifest (whose sha256 must be the digest the operator named)
// and the image's tail (manifest, signature, footer: the offer), so that bay0 authenticates the
// Spine before it writes a byte, as for an update streamed on the control line.
package courier

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"

	"alpinespine.org/spine/internal/format/ociartifact"
)

// Scheme prefixes a reference the operator gives: oci://REGISTRY/REPOSITORY@sha256:DIGEST.
const Scheme = "oci://"

// MaxHeader bounds the header: an artifact manifest (ociartifact.MaxManifestSize) and an image
// tail (a manifest of a few KiB, a signature and the footer), base64-encoded.
const MaxHeader = 1 << 20

// Ref names one artifact in one repository by digest; a tag would let the registry choose.
type Ref struct {
	Registry   string // host[:port]
	Repository string
	Digest     string // sha256:<hex> of the artifact manifest
}

func (r Ref) String() string { return Scheme + r.Registry + "/" + r.Repository + "@" + r.Digest }

// The reference patterns are compiled on first use: every bay0 start, persona-init's
// included, links this package, and compiling the registry pattern's bounded repeat at
// package init cost milliseconds on each.
var (
	registryRE = sync.OnceValue(func() *regexp.Regexp {
		return regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?(:[0-9]{1,5})?$`)
	})
	repositoryRE = sync.OnceValue(func() *regexp.Regexp {
		return regexp.MustCompile(`^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$`)
	})
)

// ParseRef parses oci://REGISTRY/REPOSITORY@sha256:DIGEST.
func ParseRef(s string) (Ref, error) {
	rest, ok := strings.CutPrefix(s, Scheme)
	if !ok {
		return Ref{}, fmt.Errorf("reference %q: want %sREGISTRY/REPOSITORY@sha256:DIGEST", s, Scheme)
	}
	name, digest, ok := strings.Cut(rest, "@")
	if !ok {
		return Ref{}, fmt.Errorf("reference %q names no digest: a courier fetches only what the operator names by digest (REPOSITORY@sha256:...)", s)
	}
	if err := ociartifact.CheckReference(digest); err != nil {
		return Ref{}, fmt.Errorf("reference %q: %w", s, err)
	}
	reg, repo, ok := strings.Cut(name, "/")
	if !ok || !registryRE().MatchString(reg) {
		return Ref{}, fmt.Errorf("reference %q: no registry host before the repository", s)
	}
	if len(repo) > 255 || !repositoryRE().MatchString(repo) {
		return Ref{}, fmt.Errorf("reference %q: repository %q is not a valid OCI repository name", s, repo)
	}
	return Ref{Registry: reg, Repository: repo, Digest: digest}, nil
}

// Request is what bay0 asks of the courier, sent with the transfer's channel.
type Request struct {
	Ref string `json:"ref"`
}

// Header opens a transfer.
type Header struct {
	// Manifest is the artifact manifest as the registry served it.
	Manifest []byte `json:"manifest"`
	// Tail is the image from its manifest offset to its end: manifest, signature, footer.
	Tail []byte `json:"tail"`
	// Failure, when set, is the courier saying it could not fetch the artifact (the registry
	// is down, the digest is unknown); nothing else is then sent.
	Failure string `json:"failure,omitempty"`
}

// WriteHeader sends h.
func WriteHeader(w io.Writer, h Header) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	if len(b) > MaxHeader {
		return fmt.Errorf("courier header of %d bytes exceeds %d", len(b), MaxHeader)
	}
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(b)))
	if _, err := w.Write(append(n[:], b...)); err != nil {
		return fmt.Errorf("send courier header: %w", err)
	}
	return nil
}

// ErrFailure wraps a failure the courier reported.
var ErrFailure = errors.New("the courier could not fetch the Spine")

// ReadHeader reads a header from the courier.
func ReadHeader(r io.Reader) (Header, error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return Header{}, fmt.Errorf("courier header: %w", err)
	}
	size := binary.BigEndian.Uint32(n[:])
	if size == 0 || size > MaxHeader {
		return Header{}, fmt.Errorf("courier header of %d bytes (at most %d)", size, MaxHeader)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return Header{}, fmt.Errorf("courier header: %w", err)
	}
	var h Header
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		return Header{}, fmt.Errorf("courier header: %w", err)
	}
	if dec.More() {
		return Header{}, errors.New("courier header: data after the JSON object")
	}
	if h.Failure != "" {
		if len(h.Failure) > 512 {
			h.Failure = h.Failure[:512]
		}
		return Header{}, fmt.Errorf("%w: %q", ErrFailure, h.Failure)
	}
	if len(h.Manifest) == 0 || len(h.Tail) == 0 {
		return Header{}, errors.New("courier header: no manifest or no image tail")
	}
	return h, nil
}

// ChannelFD is the file descriptor on which a courier persona's workload finds its channel to
// bay0: a unix socket on which each request arrives with one transfer socket (SCM_RIGHTS).
const ChannelFD = 3
