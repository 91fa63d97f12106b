//go:build faultinject

package governor

import "alpinespine.org/spine/internal/format/audit"

const faultInjection = true

// faultMarker is printed and, above all, linked into the binary so the audit can refuse it.
const faultMarker = audit.FaultMarker
