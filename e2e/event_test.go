//go:build e2e

package e2e

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/host/vm/vmtest"
)

// kv is an event attribute to wait for.
var kv = event.KV

// waitUp waits for bay0's event that Spine name vversion is up on slot.
func waitUp(t *testing.T, v *vmtest.VM, name string, version uint64, slot string, timeout time.Duration) event.Event {
	t.Helper()
	return v.WaitEvent(t, event.SlotUp, timeout, kv("slot", slot), kv("version", strconv.FormatUint(version, 10)), kv("name", name))
}

// sawEvent reports whether bay0 printed an event of kind k with attrs whose attribute key
// contains substr.
func sawEvent(v *vmtest.VM, k event.Kind, key, substr string, attrs ...event.Attr) bool {
	for _, e := range v.Events(k, attrs...) {
		if strings.Contains(e.Value(key), substr) {
			return true
		}
	}
	return false
}

// wantContains fails the test unless e's attribute key contains substr.
func wantContains(t *testing.T, e event.Event, key, substr string) {
	t.Helper()
	if !strings.Contains(e.Value(key), substr) {
		t.Errorf("%s: %s does not mention %q", e, key, substr)
	}
}
