package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"alpinespine.org/spine/internal/format/keys"
	"alpinespine.org/spine/internal/host/build"
	"alpinespine.org/spine/internal/host/ctlclient"
	"alpinespine.org/spine/internal/host/provision"
)

const (
	updateRuns = 3
	// payloadMiB is the incompressible payload of the staged Spine; quickPayloadMiB in --quick.
	payloadMiB      = 64
	quickPayloadMiB = 4
)

// benchUpdate measures staging an update into a slot on the host (checking the offer, writing
// the body, reading it back and verifying every block) against `dd` of the same bytes into the
// same slot of a freshly made disk file, as fresh as ours (with fdatasync, as staging syncs
// too), and against that dd followed by reading the slot back and hashing it. It also stages a
// Spine online, through the control channel of a booted machine (TCG), and reports that apart.
func benchUpdate(ctx context.Context, cfg config, dir string) error {
	m, err := cfg.machine(ctx)
	if err != nil {
		return err
	}
	pub, err := keys.LoadPublic(m.pub)
	if err != nil {
		return err
	}
	big, payload, err := cfg.bigSpine(ctx, dir, m)
	if err != nil {
		return err
	}
	fresh := func(name string) (string, error) {
		disk := filepath.Join(dir, name)
		if err := os.Remove(disk); err != nil && !os.IsNotExist(err) {
			return "", err
		}
		return disk, provision.Create(provision.Options{Out: disk, A: m.v1, SlotSize: 128 << 20, Seed: "bench"})
	}
	var ours, dd, ddRead []time.Duration
	var size int64
	for range cfg.runs(updateRuns) {
		disk, err := fresh("ours.img")
		if err != nil {
			return err
		}
		start := time.Now()
		if _, _, err := provision.Stage(disk, big, pub); err != nil {
			return err
		}
		ours = append(ours, time.Since(start))
		if disk, err = fresh("dd.img"); err != nil {
			return err
		}
		w, r, n, err := ddIntoSlot(disk, big)
		if err != nil {
			return err
		}
		dd, ddRead, size = append(dd, w), append(ddRead, w+r), n
	}
	o, d, dr := median(ours), median(dd), median(ddRead)
	cond := fmt.Sprintf("host, %.1f MiB Spine (%d MiB incompressible payload) into slot B of a freshly made disk file on each side, page cache warm for the source; "+
		"ours: offer check, write, 3 fsyncs (record, slot, record), read back and verify every block; median of %d",
		float64(size)/(1<<20), payload, len(ours))
	r := timed("update-staging", o, "dd conv=fdatasync", d, cond+"; dd writes and syncs once, no check")
	r.Floor = 0.5
	cfg.emit(r)
	cfg.emit(timed("update-staging-vs-dd-readback", o, "dd conv=fdatasync, then read back and sha256", dr, cond))

	online, err := onlineUpdate(ctx, m)
	if err != nil {
		return err
	}
	disk, err := fresh("dd-v2.img")
	if err != nil {
		return err
	}
	d2, _, n, err := ddIntoSlot(disk, m.v2)
	if err != nil {
		return err
	}
	cfg.emit(timed("update-staging-online", online, "dd conv=fdatasync on the host", d2, fmt.Sprintf(
		"the %.1f MiB demo Spine v2 sent over virtio-serial to a TCG guest that writes, reads back past the cache and verifies (no SHA-NI under TCG); dd of the same file into a fresh disk file's slot on the host, for scale; one run; no floor",
		float64(n)/(1<<20))))
	return nil
}

// ddIntoSlot writes the image into slot B of the disk with dd and fdatasync, then reads the
// bytes back and hashes them; it returns both times and the image's size.
func ddIntoSlot(disk, img string) (write, readBack time.Duration, size int64, err error) {
	f, err := os.Open(disk)
	if err != nil {
		return 0, 0, 0, err
	}
	defer f.Close()
	part, err := provision.Partition(f, provision.SlotPartition(1))
	if err != nil {
		return 0, 0, 0, err
	}
	st, err := os.Stat(img)
	if err != nil {
		return 0, 0, 0, err
	}
	start := time.Now()
	cmd := exec.Command("dd", "if="+img, "of="+disk, "bs=1M", "oflag=seek_bytes", "seek="+strconv.FormatInt(part.Start, 10),
		"conv=notrunc,fdatasync", "status=none")
	if o, err := cmd.CombinedOutput(); err != nil {
		return 0, 0, 0, fmt.Errorf("dd: %w: %s", err, o)
	}
	write = time.Since(start)
	start = time.Now()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, part.Start, st.Size())); err != nil {
		return 0, 0, 0, fmt.Errorf("read back %s: %w", disk, err)
	}
	h.Sum(nil)
	return write, time.Since(start), st.Size(), nil
}

// onlineUpdate boots the demo machine, waits until it takes updates and times one update.
func onlineUpdate(ctx context.Context, m machine) (time.Duration, error) {
	d, err := updateOn(ctx, m, m.disk, "online", false, func(c *ctlclient.Client) error {
		_, err := c.UpdateImage(ctx, m.v2, nil)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("online update: %w", err)
	}
	return d, nil
}

// bigSpine builds the benchmarks' large version-2 Spine, with payloadMiB of payload in a full
// run and quickPayloadMiB in a quick one, and says which.
func (c config) bigSpine(ctx context.Context, dir string, m machine) (path string, payload int, err error) {
	payload = payloadMiB
	if c.quick {
		payload = quickPayloadMiB
	}
	path, err = bigSpine(ctx, dir, m, payload)
	return path, payload, err
}

// bigSpine builds a version-2 Spine with a persona tree of payloadMiB MiB of incompressible
// data, so that the staging figure measures throughput and not the fixed cost of three fsyncs.
func bigSpine(ctx context.Context, dir string, m machine, payloadMiB int) (string, error) {
	tree, err := personaTree(ctx, dir, "big-tree", "./personas/heartbeat", "heartbeat")
	if err != nil {
		return "", err
	}
	if err := writeRandomFile(filepath.Join(tree, "payload"), payloadMiB<<20); err != nil {
		return "", err
	}
	return signedSpine(ctx, dir, m, "big-v2", fmt.Sprintf("name = \"big\"\nversion = 2\n[[persona]]\nname = \"idle\"\nexec = [\"/bin/heartbeat\"]\ncpus = 0.1\nmemory = \"16MiB\"\npids = 8\n[persona.source]\ndir = %q\n", tree))
}

// personaTree builds the Go program pkg into a persona tree dir/name, as /bin/bin.
func personaTree(ctx context.Context, dir, name, pkg, bin string) (string, error) {
	tree := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Join(tree, "bin"), 0o755); err != nil {
		return "", err
	}
	return tree, build.GoStatic(ctx, ".", pkg, filepath.Join(tree, "bin", bin))
}

// signedSpine builds the Spine of the configuration conf into dir/name.spine, signed with the
// benchmark's key, reproducibly.
func signedSpine(ctx context.Context, dir string, m machine, name, conf string) (string, error) {
	cfg := filepath.Join(dir, name+".toml")
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		return "", err
	}
	priv, err := keys.LoadPrivate(m.key)
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, name+".spine")
	_, err = build.Build(ctx, build.Options{Config: cfg, Key: priv, Bay0: m.bay0, PersonaInit: m.personaInit, Out: out, Epoch: 1767225600, Kernel: m.kernel.Release})
	return out, err
}
