//go:build faultinject

package fault

import "alpinespine.org/spine/internal/format/audit"

const enabled = true

// marker is printed and, above all, linked into the binary so the audit can refuse it.
const marker = audit.FaultMarker
