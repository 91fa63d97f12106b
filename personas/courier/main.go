// Command courier is the workload of a courier persona: bay0 hands it, on the channel it
// inherits (fd courier.ChannelFD), one request per transfer together with a fresh socket made
// for that transfer; the courier fetches the named Spine artifact from its OCI registry over
// the persona's own network and writes the transfer (internal/format/courier) into that
// socket. It holds no authority: bay0 checks every byte against the digest the operator named
// on the control line, and a courier that lies changes nothing but its own transfer.
//
// Flags: --insecure HOST[:PORT] (repeatable) lets the courier speak plain HTTP to that
// registry. Credentials, when the registry wants them, come from $DOCKER_CONFIG/config.json in
// the persona's tree; anonymous pulls need none.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/format/courier"
	"alpinespine.org/spine/internal/format/image"
	"alpinespine.org/spine/internal/format/ociartifact"
)

type hosts []string

func (h *hosts) String() string     { return strings.Join(*h, ",") }
func (h *hosts) Set(s string) error { *h = append(*h, s); return nil }

func main() {
	var insecure hosts
	flag.Var(&insecure, "insecure", "registry HOST[:PORT] reached over plain HTTP (repeatable)")
	flag.Parse()
	fmt.Println("courier: waiting for bay0's requests")
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		n, oobn, _, _, err := unix.Recvmsg(courier.ChannelFD, buf, oob, 0)
		if err != nil {
			fmt.Printf("courier: channel: %v\n", err)
			os.Exit(1)
		}
		if n == 0 {
			fmt.Println("courier: bay0 closed the channel")
			os.Exit(0)
		}
		fd, err := passedFD(oob[:oobn])
		if err != nil {
			fmt.Printf("courier: %v\n", err)
			continue
		}
		var req courier.Request
		if err := json.Unmarshal(buf[:n], &req); err != nil {
			fmt.Printf("courier: request: %v\n", err)
			unix.Close(fd)
			continue
		}
		out := os.NewFile(uintptr(fd), "transfer")
		start := time.Now()
		sent, err := transfer(context.Background(), req.Ref, insecure, out)
		out.Close()
		if err != nil {
			fmt.Printf("courier: %s: %v\n", req.Ref, err)
			continue
		}
		fmt.Printf("courier: %s: sent %d bytes in %s\n", req.Ref, sent, time.Since(start).Round(time.Millisecond))
	}
}

func passedFD(oob []byte) (int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil || len(msgs) != 1 {
		return -1, fmt.Errorf("request without a transfer socket")
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return -1, fmt.Errorf("request without exactly one transfer socket")
	}
	return fds[0], nil
}

// transfer fetches the artifact and writes the transfer to out; a failure before the header
// went out is reported in a failure header, so bay0 can tell the operator why.
func transfer(ctx context.Context, ref string, insecure []string, out io.Writer) (int64, error) {
	b, err := newBlobs(ctx, ref, insecure)
	var h courier.Header
	var body io.ReadCloser
	if err == nil {
		h, body, err = b.fetch(ctx)
	}
	if err != nil {
		if werr := courier.WriteHeader(out, courier.Header{Failure: err.Error()}); werr != nil {
			return 0, errors.Join(err, werr)
		}
		return 0, err
	}
	defer body.Close()
	if err := courier.WriteHeader(out, h); err != nil {
		return 0, err
	}
	return io.Copy(out, body)
}

// blobs reads one repository of one registry.
type blobs struct {
	client *http.Client
	base   string // scheme://host/v2/repository
	ref    courier.Ref
}

func newBlobs(ctx context.Context, s string, insecure []string) (*blobs, error) {
	ref, err := courier.ParseRef(s)
	if err != nil {
		return nil, err
	}
	var opts []name.Option
	for _, h := range insecure {
		if h == ref.Registry {
			opts = append(opts, name.Insecure)
		}
	}
	repo, err := name.NewRepository(ref.Registry+"/"+ref.Repository, opts...)
	if err != nil {
		return nil, err
	}
	auth, err := authn.DefaultKeychain.Resolve(repo.Registry)
	if err != nil {
		auth = authn.Anonymous
	}
	rt, err := transport.NewWithContext(ctx, repo.Registry, auth, http.DefaultTransport, []string{repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, fmt.Errorf("registry %s: %w", ref.Registry, err)
	}
	return &blobs{client: &http.Client{Transport: rt, Timeout: 0},
		base: fmt.Sprintf("%s://%s/v2/%s", repo.Registry.Scheme(), repo.RegistryStr(), repo.RepositoryStr()), ref: ref}, nil
}

// fetch gets the manifest and the image's tail, and opens its body.
func (b *blobs) fetch(ctx context.Context) (courier.Header, io.ReadCloser, error) {
	manifest, err := b.get(ctx, "/manifests/"+b.ref.Digest, ociartifact.ManifestMediaType, 0, ociartifact.MaxManifestSize)
	if err != nil {
		return courier.Header{}, nil, fmt.Errorf("manifest: %w", err)
	}
	layer, _, err := ociartifact.Parse(manifest)
	if err != nil {
		return courier.Header{}, nil, err
	}
	blob := "/blobs/" + layer.Digest
	fb, err := b.get(ctx, blob, "", layer.Size-image.FooterSize, image.FooterSize)
	if err != nil {
		return courier.Header{}, nil, fmt.Errorf("footer: %w", err)
	}
	ft, err := image.ParseFooter(fb)
	if err != nil {
		return courier.Header{}, nil, err
	}
	if int64(ft.ImageSize) != layer.Size {
		return courier.Header{}, nil, fmt.Errorf("the footer says %d bytes, the artifact %d", ft.ImageSize, layer.Size)
	}
	tail, err := b.get(ctx, blob, "", int64(ft.ManifestOffset), layer.Size-int64(ft.ManifestOffset))
	if err != nil {
		return courier.Header{}, nil, fmt.Errorf("tail: %w", err)
	}
	body, err := b.open(ctx, blob, "", 0, int64(ft.ManifestOffset))
	if err != nil {
		return courier.Header{}, nil, fmt.Errorf("body: %w", err)
	}
	return courier.Header{Manifest: manifest, Tail: tail}, body, nil
}

func (b *blobs) get(ctx context.Context, path, accept string, off, n int64) ([]byte, error) {
	rc, err := b.open(ctx, path, accept, off, n)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// open returns n bytes at off of the resource (a manifest is read whole, up to n bytes). A
// registry that ignores the Range header sends the whole blob: the unwanted bytes are skipped.
func (b *blobs) open(ctx context.Context, path, accept string, off, n int64) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.base+path, nil)
	if err != nil {
		return nil, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	} else {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return nil, err
	}
	switch {
	case resp.StatusCode == http.StatusPartialContent:
	case resp.StatusCode == http.StatusOK:
		if accept == "" {
			if _, err := io.CopyN(io.Discard, resp.Body, off); err != nil {
				resp.Body.Close()
				return nil, err
			}
		}
	default:
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s", req.URL, resp.Status)
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(resp.Body, n), resp.Body}, nil
}
