//go:build e2e

package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"alpinespine.org/spine/internal/host/ctlclient"

	"alpinespine.org/spine/internal/bay0/control"
	"alpinespine.org/spine/internal/format/bootctl"
	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/host/provision"
	"alpinespine.org/spine/internal/host/vm"
	"alpinespine.org/spine/internal/host/vm/vmtest"
)

// withControl adds the control channel to a machine, as a unix socket in the test's directory.
func withControl(t *testing.T, cfg vm.Config) (vm.Config, string) {
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	cfg.CtlSocket = sock
	return cfg, sock
}

// dial connects to the control socket, retrying while QEMU creates it.
func dial(t *testing.T, sock string) *ctlclient.Client {
	t.Helper()
	var err error
	for i := 0; i < 100; i++ {
		var c *ctlclient.Client
		if c, err = ctlclient.Dial(sock); err == nil {
			t.Cleanup(func() { c.Close() })
			return c
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("dial control socket: %v", err)
	return nil
}

// pushUpdate streams an image through the control channel.
func pushUpdate(ctx context.Context, c *ctlclient.Client, img string, progress func(int64)) (control.UpdateResult, error) {
	return pushBody(ctx, c, img, func(r io.Reader) io.Reader { return r }, progress)
}

func TestOnlineUpdate(t *testing.T) {
	t.Parallel()
	v1 := buildSpine(t, spineOpts{governor: quickHealth})
	v2 := buildSpine(t, spineOpts{version: 2, governor: quickHealth})
	untrusted := buildSpine(t, spineOpts{version: 3, key: fx.otherKey, governor: quickHealth})
	disk := makeDisk(t, v1, "", nil)
	activeBefore := slotHash(t, disk, 0)
	cfg, sock := withControl(t, machine(disk))
	cfg.MaxBoots = 2
	cfg.Timeout = 3 * bootTimeout
	v := vmtest.Boot(t, cfg)
	waitUp(t, v, "tiny", 1, "a", bootTimeout)
	c := dial(t, sock)
	ctx, cancel := context.WithTimeout(context.Background(), 2*bootTimeout)
	defer cancel()

	// A good primary slot was committed before this boot: it takes updates at once.
	v.WaitEvent(t, event.Committed, bootTimeout, kv("slot", "a"))
	for _, bad := range []struct{ img, want string }{
		{v1, "not newer"},
		{untrusted, "trusted key"},
	} {
		if _, err := pushUpdate(ctx, c, bad.img, nil); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("update with %s: %v, want a refusal mentioning %q", filepath.Base(bad.img), err, bad.want)
		}
	}
	start := time.Now()
	res, err := pushUpdate(ctx, c, v2, nil)
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	el := time.Since(start)
	t.Logf("figure: update_staging=%s for %d bytes (write %d ms, verify %d ms)", el.Round(time.Millisecond), res.Bytes, res.WriteMS, res.VerifyMS)
	if res.Slot != "b" || res.Version != 2 {
		t.Fatalf("update staged %+v, want v2 in slot b", res)
	}
	if slotHash(t, disk, 0) != activeBefore {
		t.Fatal("the update wrote into the active slot")
	}
	// The status verb tells the truth about the staged slot.
	var st control.StatusInfo
	if err := call(t, c, control.Request{Verb: control.VerbStatus}).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if st.Slots[1].State != "trial" || st.Slots[0].State != "good" || st.Slot != "a" {
		t.Fatalf("status after staging: %+v", st)
	}
	// A direct boot: the host handed QEMU the kernel, so status names it but claims no hash.
	if st.Kernel.Release != fx.kernel.Release || st.Kernel.SHA256 != "" {
		t.Errorf("status of a directly booted kernel: %+v, want release %s and no sha256", st.Kernel, fx.kernel.Release)
	}
	if _, err := c.Call(ctx, control.Request{Verb: control.VerbReboot}); err != nil {
		t.Fatalf("reboot: %v", err)
	}
	wantContains(t, v.WaitEvent(t, event.Halt, bootTimeout, kv("action", "reboot")), "reason", "operator asked")
	waitUp(t, v, "tiny", 2, "b", bootTimeout)
	v.WaitEvent(t, event.Committed, bootTimeout, kv("slot", "b"), kv("min_version", "1"))
	v.Kill(t)
	rec := record(t, disk)
	if rec.Slots[0].State != bootctl.Good || rec.Slots[0].Version != 1 || rec.Primary != 1 {
		t.Errorf("after the update: %+v", rec)
	}
}

// TestPowerCutDuringUpdate kills the machine (SIGKILL of QEMU) at random moments while an
// update streams, while the slot is written and while the record is written. Every time, the
// next boot must bring up a valid Spine from a record that parses.
func TestPowerCutDuringUpdate(t *testing.T) {
	t.Parallel()
	v1 := buildSpine(t, spineOpts{governor: quickHealth})
	v2 := buildSpine(t, spineOpts{version: 2, governor: quickHealth})
	const cuts = 20
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	seeds := make([]int64, cuts)
	for i := range seeds {
		seeds[i] = rng.Int63()
	}
	outcomes := make(chan string, cuts)
	t.Run("cuts", func(t *testing.T) {
		for i := 0; i < cuts; i++ {
			i := i
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				t.Parallel()
				outcomes <- powerCut(t, v1, v2, rand.New(rand.NewSource(seeds[i])))
			})
		}
	})
	close(outcomes)
	seen := map[string]int{}
	for o := range outcomes {
		seen[o]++
	}
	t.Logf("figure: power_cuts=%d (%v)", cuts, seen)
}

// powerCut runs one cut and says which Spine came back.
func powerCut(t *testing.T, v1, v2 string, rng *rand.Rand) string {
	disk := makeDisk(t, v1, "", nil)
	cfg, sock := withControl(t, machine(disk))
	v := vmtest.Boot(t, cfg)
	v.WaitEvent(t, event.Committed, bootTimeout, kv("slot", "a"))
	c := dial(t, sock)
	size := footer(t, v2).ManifestOffset
	// Cut at a random point of the stream, or a random delay after it (slot write, verify,
	// record write).
	cutAt := rng.Int63n(int64(size) + int64(size)/2)
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		_, err := pushUpdate(ctx, c, v2, func(n int64) {
			if n >= cutAt {
				v.Machine().Kill()
			}
		})
		if err == nil {
			time.Sleep(time.Duration(rng.Int63n(int64(300 * time.Millisecond))))
		}
		v.Machine().Kill()
	}()
	<-killed
	v.Kill(t)
	rec, err := provision.Record(disk)
	if err != nil {
		t.Fatalf("after a cut at byte %d the boot-control record does not parse: %v", cutAt, err)
	}
	v = vmtest.Boot(t, machine(disk))
	up, err := v.Machine().WaitForEvent(event.SlotUp, []event.Attr{kv("name", "tiny")}, bootTimeout)
	if err != nil {
		t.Fatalf("after a cut at byte %d (record %+v) no Spine came up: %v", cutAt, rec, err)
	}
	v.Kill(t)
	record(t, disk)
	if got := fmt.Sprintf("v%s slot %s", up.Value("version"), up.Value("slot")); got != "v1 slot a" && got != "v2 slot b" {
		t.Errorf("after a cut at byte %d: %s came up, want v1 in slot a or v2 in slot b", cutAt, got)
		return got
	}
	return fmt.Sprintf("v%s slot %s up", up.Value("version"), up.Value("slot"))
}

// slotHash is the sha256 of a whole slot partition of a disk image.
func slotHash(t *testing.T, disk string, slot int) string {
	t.Helper()
	f, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := provision.Partition(f, provision.SlotPartition(slot))
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, p.Start, p.Size)); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
