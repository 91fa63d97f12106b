package governor

import (
	"io"

	"alpinespine.org/spine/internal/policy"
)

// startPersonas launches every persona of the policy under supervision. (Issue 5 fills this in.)
func startPersonas(console io.Writer, pol policy.Policy) error { return nil }
