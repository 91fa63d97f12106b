package courier

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/format/courier"
)

// TestChannelHandsOverATransferSocket: what bay0 writes on its channel reaches the persona's
// end as a request with one socket, and what the persona writes on that socket reaches bay0.
func TestChannelHandsOverATransferSocket(t *testing.T) {
	ch, theirs, err := NewChannel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	defer theirs.Close()
	ref := courier.Ref{Registry: "10.0.2.2:5000", Repository: "spines/demo", Digest: "sha256:" + strings.Repeat("ab", 32)}
	ours, err := ch.Open(ref)
	if err != nil {
		t.Fatal(err)
	}
	defer ours.Close()

	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := unix.Recvmsg(int(theirs.Fd()), buf, oob, 0)
	if err != nil {
		t.Fatal(err)
	}
	var req courier.Request
	if err := json.Unmarshal(buf[:n], &req); err != nil || req.Ref != ref.String() {
		t.Fatalf("request %q: %v", buf[:n], err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("control messages: %v", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		t.Fatalf("rights: %v", err)
	}
	transfer := os.NewFile(uintptr(fds[0]), "transfer")
	if _, err := transfer.Write([]byte("spine bytes")); err != nil {
		t.Fatal(err)
	}
	transfer.Close()
	got, err := io.ReadAll(&StallReader{F: ours, Stall: 5 * time.Second})
	if err != nil || !bytes.Equal(got, []byte("spine bytes")) {
		t.Fatalf("bay0 read %q, %v", got, err)
	}
}

func TestStallReaderGivesUp(t *testing.T) {
	ch, theirs, err := NewChannel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	defer theirs.Close()
	ours, err := ch.Open(courier.Ref{Registry: "r", Repository: "x", Digest: "sha256:" + strings.Repeat("00", 32)})
	if err != nil {
		t.Fatal(err)
	}
	defer ours.Close()
	// Nobody serves the transfer: the read fails after the stall instead of waiting forever.
	_, err = (&StallReader{F: ours, Stall: 50 * time.Millisecond}).Read(make([]byte, 10))
	if !errors.Is(err, os.ErrDeadlineExceeded) || !strings.Contains(err.Error(), "sent nothing") {
		t.Fatalf("stalled read: %v", err)
	}
}
