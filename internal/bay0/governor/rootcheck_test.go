package governor

import (
	"strings"
	"testing"

	"alpinespine.org/spine/internal/bay0/mountinfo"
)

const sampleMountinfo = `21 1 254:1 / / ro,nodev,relatime - squashfs /dev/dm-1 ro,errors=continue
22 21 0:5 / /dev rw,nosuid,noexec - devtmpfs devtmpfs rw,size=1024k
`

func TestCheckRoot(t *testing.T) {
	root, err := mountinfo.Find(strings.NewReader(sampleMountinfo), "/")
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckRoot(root); err != nil {
		t.Fatalf("a verity SquashFS root read-only: %v", err)
	}
	for _, bad := range []string{
		strings.Replace(sampleMountinfo, "/ / ro,", "/ / rw,", 1),
		strings.Replace(sampleMountinfo, "squashfs /dev/dm-1", "ext4 /dev/dm-1", 1),
		strings.Replace(sampleMountinfo, "/dev/dm-1", "/dev/vda2", 1),
	} {
		root, err := mountinfo.Find(strings.NewReader(bad), "/")
		if err != nil {
			t.Fatal(err)
		}
		if err := CheckRoot(root); err == nil {
			t.Errorf("accepted root in:\n%s", bad)
		}
	}
	if _, err := mountinfo.Find(strings.NewReader("22 21 0:5 / /dev rw - devtmpfs devtmpfs rw\n"), "/"); err == nil {
		t.Error("found a root where there is none")
	}
}
