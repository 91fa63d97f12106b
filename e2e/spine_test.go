//go:build e2e

package e2e

import (
	"bytes"
	"io"
	"os"
	"slices"
	"strings"
	"testing"

	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/host/provision"
	"alpinespine.org/spine/internal/host/vm/vmtest"
)

// Article I §2: the running Spine is a read-only SquashFS on dm-verity, checked by bay0 itself
// (Article I §3, "bay0 validation"); and, read from the machine's state rather than from bay0's
// word, the slot it ran from holds exactly the bytes that were signed after a whole boot with
// its personas, an unlocked /persist and a clean power-off.
func TestSpineRootIsReadOnlyVerity(t *testing.T) {
	t.Parallel()
	img := buildSpine(t, spineOpts{})
	disk := makeDisk(t, img, img, nil)
	v := vmtest.Boot(t, machine(disk))
	root := v.WaitEvent(t, event.RootChecked, bootTimeout, kv("fstype", "squashfs"))
	if !strings.HasPrefix(root.Value("source"), "/dev/dm-") || !slices.Contains(strings.Split(root.Value("options"), ","), "ro") {
		t.Errorf("root: %s, want a read-only dm device", root)
	}
	waitUp(t, v, "tiny", 1, "a", bootTimeout)
	v.WaitEvent(t, event.PersonasUp, bootTimeout)
	v.Kill(t)

	wantSlotHolds(t, disk, "spine-a", img)
}

// wantSlotHolds fails unless the named partition of disk starts with exactly the bytes of img:
// the machine's own state, read from the disk after the boot.
func wantSlotHolds(t *testing.T, disk, partition, img string) {
	t.Helper()
	want, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	part, err := provision.Partition(f, partition)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if _, err := io.ReadFull(io.NewSectionReader(f, part.Start, part.Size), got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && got[i] == want[i] {
			i++
		}
		t.Fatalf("%s changed while the machine ran: first difference at byte %d of %d", partition, i, len(want))
	}
}
