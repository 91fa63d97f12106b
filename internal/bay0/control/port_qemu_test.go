//go:build integration

package control_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"alpinespine.org/spine/internal/bay0/control"
	"alpinespine.org/spine/internal/host/ctlclient"

	"alpinespine.org/spine/internal/format/initramfs"
	"alpinespine.org/spine/internal/host/kernel"
	"alpinespine.org/spine/internal/host/vm"
	"alpinespine.org/spine/internal/host/vm/vmtest"
)

// TestPortInQEMU runs the server on a real virtio-serial port: testdata/portinit is /init,
// QEMU exposes bay0.ctl as a unix socket, and the client here connects, hangs up, comes
// back, sends noise, and finally powers the machine off.
func TestPortInQEMU(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath(vm.DefaultQEMU); err != nil {
		t.Fatalf("%s not found (install the Debian package qemu-system-x86): %v", vm.DefaultQEMU, err)
	}
	pctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	k, err := kernel.Default(pctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	initBin := filepath.Join(dir, "portinit")
	build := exec.Command("go", "build", "-trimpath", "-o", initBin, "./testdata/portinit")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build portinit: %v\n%s", err, out)
	}
	bin, err := os.ReadFile(initBin)
	if err != nil {
		t.Fatal(err)
	}
	var img bytes.Buffer
	err = initramfs.Build(&img, initramfs.Spec{Bay0: bin, TrustedKeys: [][]byte{testPublicKey(t)}})
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(dir, "initrd")
	if err := os.WriteFile(initrd, img.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "ctl.sock")
	v := vmtest.Boot(t, vm.Config{Kernel: k.Vmlinux, Initrd: initrd, CtlSocket: sock, MemoryMiB: 128, Timeout: 90 * time.Second})
	v.WaitFor(t, "portinit: probe: 20 reads without a host: 20 returned 0, EOF", 30*time.Second)
	v.WaitFor(t, "portinit: probe: write without a host: n=0, ended by its deadline: true", 10*time.Second)
	v.WaitFor(t, "portinit: serving", 10*time.Second)

	// Idle with no host for a second: the server must wait out the hang-ups, not spin.
	time.Sleep(time.Second)
	ctx, cancelCalls := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelCalls()
	call := func(c *ctlclient.Client, req control.Request) control.Response {
		t.Helper()
		resp, err := c.Call(ctx, req)
		if err != nil {
			t.Fatalf("%s: %v", req.Verb, err)
		}
		return resp
	}
	c, err := ctlclient.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	var st control.StatusInfo
	if err := call(c, control.Request{Verb: control.VerbStatus}).Decode(&st); err != nil {
		t.Fatal(err)
	}
	var eofs, progress int
	if _, err := fmt.Sscanf(st.LastReset, "eof_reads=%d progress=%d", &eofs, &progress); err != nil {
		t.Fatalf("status counters %q: %v", st.LastReset, err)
	}
	perSecond := float64(eofs) / (float64(st.UptimeMS) / 1000)
	t.Logf("guest: %d hang-up reads and %d progress calls in %d ms of serving", eofs, progress, st.UptimeMS)
	if eofs == 0 || perSecond > 20 {
		t.Errorf("%d EOF reads in %d ms: want some (no host) but at most about 10 per second", eofs, st.UptimeMS)
	}
	// The contract is at least once a second, whatever the load on this machine.
	if min := int(st.UptimeMS/1000) - 1; progress < min {
		t.Errorf("%d progress calls in %d ms, want at least %d", progress, st.UptimeMS, min)
	}
	var logs control.LogsResult
	if err := call(c, control.Request{Verb: control.VerbLogs}).Decode(&logs); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(logs.Lines, "\n"), "portinit: serving") {
		t.Errorf("logs = %q, want the console lines", logs.Lines)
	}
	// Noise: binary, an oversized line and a half request; then hang up.
	noise := append([]byte("\x00\xff\x1b[2J\n"), bytes.Repeat([]byte("x"), 3*control.MaxRequestLine)...)
	noise = append(noise, "\n"+`{"v":1,"id":50,"verb":"pow`...)
	c.Close()
	raw, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Write(noise); err != nil {
		t.Fatal(err)
	}
	raw.Close()

	for round := range 3 {
		c, err := ctlclient.Dial(sock)
		if err != nil {
			t.Fatal(err)
		}
		var ps control.PersonasResult
		if err := call(c, control.Request{Verb: control.VerbPersonas}).Decode(&ps); err != nil || len(ps.Personas) != 1 {
			t.Fatalf("round %d: personas = %+v, %v", round, ps, err)
		}
		_, err = c.Call(ctx, control.Request{Verb: control.VerbStop, Name: "nope"})
		var re *ctlclient.RemoteError
		if !errors.As(err, &re) || re.Message != `stop: no persona "nope"` {
			t.Errorf("stop nope: %v, want a RemoteError", err)
		}
		c.Close()
	}
	if v.Saw("portinit: powering off") {
		t.Fatal("the half poweroff request left by a client that hung up was carried out")
	}

	c, err = ctlclient.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	call(c, control.Request{Verb: control.VerbPoweroff})
	v.WaitFor(t, "portinit: powering off as asked", 10*time.Second)
	v.ExpectOutcome(t, vm.PoweredOff)
	v.Never(t, "portinit: error")
}

func testPublicKey(t *testing.T) []byte {
	t.Helper()
	pub := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)).Public()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}
