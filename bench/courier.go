package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"time"

	ggcr "github.com/google/go-containerregistry/pkg/registry"

	"alpinespine.org/spine/internal/bay0/control"
	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/host/ctlclient"
	"alpinespine.org/spine/internal/host/persistfmt"
	"alpinespine.org/spine/internal/host/provision"
	"alpinespine.org/spine/internal/host/registry"
	"alpinespine.org/spine/internal/host/vm"
)

// benchCourier measures an update of a large Spine fetched by the machine's courier persona
// from an OCI registry (on the host, reached over QEMU's user network), against the same
// Spine streamed over the control line (virtio-serial), each on a freshly booted machine, and
// against dd of the same image into a slot of a disk file on the host.
func benchCourier(ctx context.Context, cfg config, dir string) error {
	m, err := cfg.machine(ctx)
	if err != nil {
		return err
	}
	big, payload, err := cfg.bigSpine(ctx, dir, m)
	if err != nil {
		return err
	}
	srv := httptest.NewServer(ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	pushed, err := registry.Push(ctx, big, host+"/spines/big:v2", nil, registry.Options{})
	if err != nil {
		return err
	}
	port := host[strings.LastIndex(host, ":")+1:]
	v1, err := courierSpine(ctx, dir, m, port)
	if err != nil {
		return err
	}
	disk := filepath.Join(dir, "courier-base.img")
	if err := provision.Create(provision.Options{Out: disk, A: v1, SlotSize: 128 << 20, PersistSize: 64 << 20, Seed: "bench",
		Passphrase: []byte(benchPassphrase), KDF: persistfmt.TestKDF()}); err != nil {
		return err
	}
	source := fmt.Sprintf("oci://10.0.2.2:%s/spines/big@%s", port, pushed.Digest)
	fetched, err := updateOn(ctx, m, disk, "courier", true, func(c *ctlclient.Client) error {
		_, err := c.Call(ctx, control.Request{Verb: control.VerbUpdate, Source: source})
		return err
	})
	if err != nil {
		return fmt.Errorf("courier update: %w", err)
	}
	streamed, err := updateOn(ctx, m, disk, "streamed", false, func(c *ctlclient.Client) error {
		_, err := c.UpdateImage(ctx, big, nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("streamed update: %w", err)
	}
	ddDisk := filepath.Join(dir, "courier-dd.img")
	if err := provision.Create(provision.Options{Out: ddDisk, A: m.v1, SlotSize: 128 << 20, Seed: "bench"}); err != nil {
		return err
	}
	dd, _, size, err := ddIntoSlot(ddDisk, big)
	if err != nil {
		return err
	}
	cond := fmt.Sprintf("a %.1f MiB Spine (%d MiB incompressible payload); TCG guest, 1 vCPU; courier: a Go persona fetching over QEMU's user network (virtio-net, slirp) from an in-process OCI registry on the host, HTTP ranges; bay0 checks the artifact digest, writes, reads back and verifies every block (no SHA-NI under TCG); one run each, on a freshly booted machine",
		float64(size)/(1<<20), payload)
	uart := time.Duration(float64(size*10) / 115200 * float64(time.Second))
	cfg.emit(timed("update-courier", fetched, "the same Spine streamed over the control line (virtio-serial)", streamed,
		cond+fmt.Sprintf("; QEMU's virtio-serial is no UART: the same bytes at 115200 baud (8N1) take %s", uart.Round(time.Second))))
	cfg.emit(timed("update-courier-vs-dd", fetched, "dd conv=fdatasync into a disk file's slot on the host", dd, cond+"; dd: host, no check, for scale"))
	return nil
}

// updateOn boots a copy of disk (with outbound network access for a courier when asked), waits
// until it takes updates and its personas run, and times one update.
func updateOn(ctx context.Context, m machine, disk, name string, outbound bool, update func(*ctlclient.Client) error) (time.Duration, error) {
	d := filepath.Join(filepath.Dir(disk), name+".img")
	if err := copyFile(disk, d); err != nil {
		return 0, err
	}
	sock := filepath.Join(filepath.Dir(disk), name+".sock")
	a := vm.NewAnswerer([]byte(benchPassphrase))
	mach, err := vm.Start(ctx, vm.Config{Kernel: m.kernel.Vmlinux, Initrd: m.initrd, Disk: d, Console: a, Stdin: a,
		CtlSocket: sock, Net: true, Outbound: outbound, Timeout: 10 * time.Minute})
	if err != nil {
		return 0, err
	}
	defer func() { _ = mach.Kill(); _, _ = mach.Wait() }()
	// A freshly provisioned disk's slot is committed: bay0 says so as soon as it is up.
	if _, err := mach.WaitForEvent(event.Committed, nil, 3*time.Minute); err != nil {
		return 0, err
	}
	if _, err := mach.WaitForEvent(event.PersonasUp, nil, 3*time.Minute); err != nil {
		return 0, err
	}
	c, err := ctlclient.Dial(sock)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	start := time.Now()
	if err := update(c); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// courierSpine builds a version-1 Spine whose courier persona reaches the registry on the
// host at 10.0.2.2:port.
func courierSpine(ctx context.Context, dir string, m machine, port string) (string, error) {
	tree, err := personaTree(ctx, dir, "courier-tree", "./personas/courier", "courier")
	if err != nil {
		return "", err
	}
	return signedSpine(ctx, dir, m, "courier-v1", fmt.Sprintf(`name = "big"
version = 1
[[persona]]
name = "courier"
exec = ["/bin/courier", "--insecure", "10.0.2.2:%s"]
cpus = 0.5
memory = "64MiB"
pids = 32
network = "uplink"
address = "10.0.2.15/24"
gateway = "10.0.2.2"
courier = true
[persona.source]
dir = %q
`, port, tree))
}
