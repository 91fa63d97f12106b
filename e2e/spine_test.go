//go:build e2e

package e2e

import (
	"slices"
	"strings"
	"testing"

	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/host/vm/vmtest"
)

// Article I §2: the running Spine is a read-only SquashFS on dm-verity, and bay0 checks it by
// itself (Article I §3, "bay0 validation"): its write probe must fail with EROFS.
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
	v.Kill(t)
}
