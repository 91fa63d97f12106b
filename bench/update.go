package main

import (
	"alpinespine.org/spine/internal/host/ctlclient"
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"alpinespine.org/spine/internal/bay0/control"
	"alpinespine.org/spine/internal/bay0/update"
	"alpinespine.org/spine/internal/format/image"
	"alpinespine.org/spine/internal/format/keys"
	"alpinespine.org/spine/internal/host/build"
	"alpinespine.org/spine/internal/host/provision"
	"alpinespine.org/spine/internal/host/vm"
)

const updateRuns = 3

// benchUpdate measures staging an update into a slot: checking the offer, writing the body and
// reading it back to verify every block, against a plain `dd` of the same bytes into the same
// slot of the same disk file (with fdatasync, as staging syncs too). It also stages the same
// image online, through the control channel of a booted machine (TCG), and reports that apart.
func benchUpdate(ctx context.Context, dir string) ([]result, error) {
	m, err := prepareMachine(ctx, dir)
	if err != nil {
		return nil, err
	}
	pub, err := keys.LoadPublic(filepath.Join(dir, "keys", keys.PublicFile))
	if err != nil {
		return nil, err
	}
	big, err := bigSpine(ctx, dir, m)
	if err != nil {
		return nil, err
	}
	var ours, dd []time.Duration
	var size int64
	for range updateRuns {
		disk := filepath.Join(dir, "update.img")
		if err := provision.Create(provision.Options{Out: disk, A: m.v1, SlotSize: 128 << 20, Seed: "bench"}); err != nil {
			return nil, err
		}
		start := time.Now()
		if _, _, err := provision.Stage(disk, big, pub); err != nil {
			return nil, err
		}
		ours = append(ours, time.Since(start))
		d, n, err := ddIntoSlot(disk, big)
		if err != nil {
			return nil, err
		}
		dd, size = append(dd, d), n
	}
	o, d := median(ours), median(dd)
	rows := []result{{Name: fmt.Sprintf("update staging (write + verify), %.1f MiB", float64(size)/(1<<20)),
		Ours: o.Round(time.Millisecond).String(), Reference: "dd " + d.Round(time.Millisecond).String(),
		Ratio: float64(d) / float64(o), Floor: 0.5, Note: "host, same disk file, same slot; 3 fsyncs (record, slot, record) against dd's 1"}}

	online, err := onlineUpdate(ctx, m, pub)
	if err != nil {
		return nil, err
	}
	rows = append(rows, result{Name: "update staging online (virtio-serial, TCG guest)", Ours: online.Round(time.Millisecond).String(),
		Reference: "dd " + d.Round(time.Millisecond).String(), Ratio: float64(d) / float64(online),
		Note: "guest hashes without SHA-NI under TCG; no floor"})
	return rows, nil
}

// ddIntoSlot writes the image into slot B of the disk with dd and fdatasync.
func ddIntoSlot(disk, img string) (time.Duration, int64, error) {
	f, err := os.Open(disk)
	if err != nil {
		return 0, 0, err
	}
	part, err := provision.Partition(f, provision.SlotPartition(1))
	f.Close()
	if err != nil {
		return 0, 0, err
	}
	st, err := os.Stat(img)
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	cmd := exec.Command("dd", "if="+img, "of="+disk, "bs=1M", "oflag=seek_bytes", "seek="+strconv.FormatInt(part.Start, 10),
		"conv=notrunc,fdatasync", "status=none")
	if o, err := cmd.CombinedOutput(); err != nil {
		return 0, 0, fmt.Errorf("dd: %w: %s", err, o)
	}
	return time.Since(start), st.Size(), nil
}

// onlineUpdate boots the demo machine, waits for its commit and times one update.
func onlineUpdate(ctx context.Context, m machine, _ []ed25519.PublicKey) (time.Duration, error) {
	dir := filepath.Dir(m.disk)
	disk := filepath.Join(dir, "online.img")
	if err := copyFile(m.disk, disk); err != nil {
		return 0, err
	}
	sock := filepath.Join(dir, "ctl.sock")
	a := vm.NewAnswerer([]byte(benchPassphrase))
	mach, err := vm.Start(ctx, vm.Config{Kernel: m.kernel.Vmlinux, Initrd: m.initrd, Disk: disk, Console: a, Stdin: a,
		CtlSocket: sock, Net: true, Timeout: 5 * time.Minute})
	if err != nil {
		return 0, err
	}
	defer func() { _ = mach.Kill(); _, _ = mach.Wait() }()
	if _, err := mach.WaitFor("committed: good", 3*time.Minute); err != nil {
		return 0, fmt.Errorf("online update: %w", err)
	}
	c, err := ctlclient.Dial(sock)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	im, f, err := image.OpenFile(m.v2)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	offer, err := update.OfferFromImage(im)
	if err != nil {
		return 0, err
	}
	n := update.BodySize(im.Footer)
	start := time.Now()
	if _, err := c.Update(ctx, control.Request{Offer: &offer, Size: n}, io.NewSectionReader(f, 0, n), nil); err != nil {
		return 0, fmt.Errorf("online update: %w", err)
	}
	return time.Since(start), nil
}

// bigSpine builds a version-2 Spine with a 64 MiB persona tree of incompressible data, so
// that the staging figure measures throughput and not the fixed cost of three fsyncs.
func bigSpine(ctx context.Context, dir string, m machine) (string, error) {
	tree := filepath.Join(dir, "big-tree", "bin")
	if err := os.MkdirAll(tree, 0o755); err != nil {
		return "", err
	}
	if err := build.GoStatic(ctx, ".", "./personas/heartbeat", filepath.Join(tree, "heartbeat")); err != nil {
		return "", err
	}
	if err := writeRandomFile(filepath.Join(dir, "big-tree", "payload"), 64<<20); err != nil {
		return "", err
	}
	cfg := filepath.Join(dir, "big.toml")
	conf := fmt.Sprintf("name = \"big\"\nversion = 2\n[[persona]]\nname = \"idle\"\nexec = [\"/bin/heartbeat\"]\ncpus = 0.1\nmemory = \"16MiB\"\npids = 8\n[persona.source]\ndir = %q\n", filepath.Join(dir, "big-tree"))
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		return "", err
	}
	priv, err := keys.LoadPrivate(m.key)
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "big-v2.spine")
	_, err = build.Build(ctx, build.Options{Config: cfg, Key: priv, Bay0: m.bay0, Out: out, Epoch: 1767225600, Kernel: m.kernel.Release})
	return out, err
}
