//go:build e2e

package e2e

import (
	"strings"
	"testing"

	"alpinespine.org/spine/internal/host/vm/vmtest"
)

// Article I §2: the running Spine is a read-only SquashFS on dm-verity, and bay0 checks it by
// itself (Article I §3, "bay0 validation"): its write probe must fail with EROFS.
func TestSpineRootIsReadOnlyVerity(t *testing.T) {
	t.Parallel()
	img := buildSpine(t, spineOpts{})
	disk := makeDisk(t, img, img, nil)
	v := vmtest.Boot(t, machine(disk))
	line := v.WaitFor(t, "bay0: root: ", bootTimeout)
	for _, want := range []string{"squashfs", "/dev/dm-", " ro ", "writes refused (EROFS)"} {
		if !strings.Contains(strings.ReplaceAll(line, "[", " ")+" ", want) {
			t.Errorf("root line %q lacks %q", line, want)
		}
	}
	v.WaitFor(t, "bay0: spine tiny v1 slot a up", bootTimeout)
	v.Kill(t)
}
