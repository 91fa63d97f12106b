//go:build faultinject

package fault

import "alpinespine.org/spine/internal/format/audit"

const enabled = true

// marker is printed and, above all, linked into the binary so the audit can refuse it.
const marker = audit.FaultMarker

// builtin is the fault kind fixed at link time (BuiltinVar); empty unless the build set it.
var builtin string

func builtinKind() string { return builtin }
