// Package ctlclient is the operator's end of the control channel: it sends requests to bay0
// over the host end of the serial line and reads their answers. bay0 itself never links it.
package ctlclient

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"alpinespine.org/spine/internal/bay0/control"
	"alpinespine.org/spine/internal/bay0/update"
	"alpinespine.org/spine/internal/format/image"
)

// RemoteError is the governor's refusal: a response with ok false.
type RemoteError struct {
	Verb    control.Verb
	Message string
}

func (e *RemoteError) Error() string { return e.Message }

// Client speaks to the governor over the host end of the channel (the unix socket QEMU makes
// of the port). Calls are serialised.
type Client struct {
	mu   sync.Mutex
	conn net.Conn
	br   *bufio.Reader
	last uint64 // the last request ID used
}

// Dial connects to a machine's control line: a unix socket path (what `spine vm --ctl` makes
// of the port), "unix://PATH", or "tcp://HOST:PORT" (a console server such as ser2net, or a
// BMC's serial over LAN, that carries the line).
func Dial(addr string) (*Client, error) {
	network, where := "unix", addr
	switch {
	case strings.HasPrefix(addr, "tcp://"):
		network, where = "tcp", strings.TrimPrefix(addr, "tcp://")
	case strings.HasPrefix(addr, "unix://"):
		where = strings.TrimPrefix(addr, "unix://")
	case strings.Contains(addr, "://"):
		return nil, fmt.Errorf("control line %q: want a socket path, unix://PATH or tcp://HOST:PORT", addr)
	}
	if where == "" {
		return nil, fmt.Errorf("control line %q: no address", addr)
	}
	conn, err := net.DialTimeout(network, where, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("dial control line %s: %w", addr, err)
	}
	// The serial line may still hold half a line from an earlier client: a blank line ends
	// it (and draws at most one error answer, which Call skips), and is otherwise ignored.
	if _, err := conn.Write([]byte("\n")); err != nil {
		conn.Close()
		return nil, fmt.Errorf("write control line %s: %w", addr, err)
	}
	return New(conn), nil
}

// New wraps an open connection to the control line.
func New(conn net.Conn) *Client {
	return &Client{conn: conn, br: bufio.NewReaderSize(conn, control.MaxResponseLine+1), last: firstID()}
}

// firstID picks where a client's request IDs start. A serial line outlives its clients: an
// answer meant for an earlier client that hung up may still arrive, and with IDs counted
// from 1 in every client it would pass for ours. 48 random bits make that unlikely and stay
// exact in any JSON reader.
func firstID() uint64 {
	var b [8]byte
	rand.Read(b[2:]) // never fails: it crashes the program instead (Go 1.24)
	return binary.BigEndian.Uint64(b[:])
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Call sends req and waits for its answer until ctx ends. A zero V is set to Version and a
// zero ID to a fresh one. Lines that are not an answer to this request (stale answers, an
// answer to the leftovers of an earlier client, noise) are skipped. When the governor refuses,
// Call returns the response and a *RemoteError.
func (c *Client) Call(ctx context.Context, req control.Request) (control.Response, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if req.V == 0 {
		req.V = control.Version
	}
	if req.ID == 0 {
		c.last++
		req.ID = c.last
	}
	line, err := control.EncodeRequest(req)
	if err != nil {
		return control.Response{}, err
	}
	if d, ok := ctx.Deadline(); ok {
		_ = c.conn.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.conn.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		stop()
		_ = c.conn.SetDeadline(time.Time{})
	}()
	resp, err := c.roundTrip(req, line)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// Every deadline comes from ctx, whose own timer may fire a moment later.
		<-ctx.Done()
	}
	if err != nil && ctx.Err() != nil {
		return control.Response{}, fmt.Errorf("%s: no answer: %w (%w)", req.Verb, ctx.Err(), err)
	}
	return resp, err
}

func (c *Client) roundTrip(req control.Request, line []byte) (control.Response, error) {
	if _, err := c.conn.Write(line); err != nil {
		return control.Response{}, fmt.Errorf("%s: write request: %w", req.Verb, err)
	}
	return c.readAnswer(req)
}

// readAnswer reads lines until the answer to req arrives.
func (c *Client) readAnswer(req control.Request) (control.Response, error) {
	var skipped error
	tooLong := false
	for {
		b, err := c.br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			tooLong = true
			continue
		}
		if err != nil {
			if skipped != nil {
				err = fmt.Errorf("%w; skipped a line: %w", err, skipped)
			}
			return control.Response{}, fmt.Errorf("%s: read answer: %w", req.Verb, err)
		}
		if tooLong {
			tooLong = false
			skipped = fmt.Errorf("%w: an answer is at most %d bytes", control.ErrTooLong, control.MaxResponseLine)
			continue
		}
		b = b[:len(b)-1]
		if len(bytes.Trim(b, " \t\r")) == 0 {
			continue
		}
		resp, err := control.DecodeResponse(b)
		if err != nil {
			skipped = err
			continue
		}
		if resp.ID != req.ID {
			continue
		}
		if !resp.OK {
			return resp, &RemoteError{Verb: req.Verb, Message: resp.Error}
		}
		return resp, nil
	}
}

// Update sends an update offer and, once the governor answers ready, streams exactly req.Size
// bytes of body, telling progress the bytes sent so far; it returns the governor's final
// answer. There is no deadline on the body itself: it is as long as the image.
func (c *Client) Update(ctx context.Context, req control.Request, body io.Reader, progress func(int64)) (control.Response, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	req.V, req.Verb = control.Version, control.VerbUpdate
	if req.ID == 0 {
		c.last++
		req.ID = c.last
	}
	line, err := control.EncodeRequest(req)
	if err != nil {
		return control.Response{}, err
	}
	stop := context.AfterFunc(ctx, func() { _ = c.conn.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		stop()
		_ = c.conn.SetDeadline(time.Time{})
	}()
	resp, err := c.roundTrip(req, line)
	if err != nil {
		return resp, err
	}
	var ready control.Ready
	if err := resp.Decode(&ready); err != nil || !ready.Ready || ready.Size != req.Size {
		return resp, fmt.Errorf("update: the governor did not answer ready for %d bytes: %s", req.Size, resp.Result)
	}
	buf := make([]byte, 256<<10)
	var sent int64
	for sent < req.Size {
		n := int64(len(buf))
		if req.Size-sent < n {
			n = req.Size - sent
		}
		k, rerr := io.ReadFull(body, buf[:n])
		if k > 0 {
			if _, err := c.conn.Write(buf[:k]); err != nil {
				return control.Response{}, fmt.Errorf("update: send body at byte %d: %w", sent, err)
			}
			sent += int64(k)
			if progress != nil {
				progress(sent)
			}
		}
		if rerr != nil {
			return control.Response{}, fmt.Errorf("update: read image at byte %d: %w", sent, rerr)
		}
	}
	return c.readAnswer(req)
}

// UpdateImage offers the signed Spine image at path and streams its body (everything before
// the manifest: the offer itself carries the manifest and signature), reporting progress.
func (c *Client) UpdateImage(ctx context.Context, path string, progress func(sent, total int64)) (control.UpdateResult, error) {
	im, f, err := image.OpenFile(path)
	if err != nil {
		return control.UpdateResult{}, err
	}
	defer f.Close()
	offer, err := update.OfferFromImage(im)
	if err != nil {
		return control.UpdateResult{}, err
	}
	size := int64(im.Footer.ManifestOffset)
	var report func(int64)
	if progress != nil {
		report = func(n int64) { progress(n, size) }
	}
	return updateResult(c.Update(ctx, control.Request{Offer: &offer, Size: size}, io.NewSectionReader(f, 0, size), report))
}

// Fetch asks bay0 to have its courier persona fetch the Spine named by source
// (oci://REGISTRY/REPO@sha256:DIGEST) and stage it; it returns when the update is staged or
// refused.
func (c *Client) Fetch(ctx context.Context, source string) (control.UpdateResult, error) {
	return updateResult(c.Call(ctx, control.Request{Verb: control.VerbUpdate, Source: source}))
}

func updateResult(resp control.Response, err error) (control.UpdateResult, error) {
	if err != nil {
		return control.UpdateResult{}, err
	}
	var r control.UpdateResult
	if err := resp.Decode(&r); err != nil {
		return control.UpdateResult{}, fmt.Errorf("update answer: %w", err)
	}
	return r, nil
}
