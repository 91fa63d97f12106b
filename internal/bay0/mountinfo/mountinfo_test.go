package mountinfo

import (
	"errors"
	"strings"
	"testing"
)

const sample = `21 1 254:1 / / ro,nodev,relatime - squashfs /dev/dm-1 ro
36 21 98:0 / /with\040space rw,noatime shared:1 master:2 - ext4 /dev/my\134disk rw
40 21 253:1 / /persist rw,nosuid,nodev,noexec,relatime - ext4 /dev/dm-2 rw
41 40 0:30 / /persist rw,relatime - tmpfs tmpfs rw
`

func TestFind(t *testing.T) {
	e, err := Find(strings.NewReader(sample), "/with space")
	if err != nil || e.FSType != "ext4" || e.Source != `/dev/my\disk` || !e.Has("noatime") || e.Has("ro") {
		t.Fatalf("escaped entry with optional fields: %+v, %v", e, err)
	}
	e, err = Find(strings.NewReader(sample), "/persist")
	if err != nil || e.FSType != "tmpfs" || e.Secure() {
		t.Fatalf("the topmost mount must win: %+v, %v", e, err)
	}
	root, _ := Find(strings.NewReader(sample), "/")
	if !root.Has("ro") || root.Source != "/dev/dm-1" {
		t.Fatalf("root: %+v", root)
	}
	if _, err := Find(strings.NewReader(sample), "/data"); !errors.Is(err, ErrNotMounted) {
		t.Fatalf("absent mount point: %v", err)
	}
	if _, err := Find(strings.NewReader("garbage line\n"), "/"); !errors.Is(err, ErrNotMounted) {
		t.Fatalf("garbage: %v", err)
	}
}
