package tomlconf

import (
	"strings"
	"testing"

	"alpinespine.org/spine/internal/format/policy"
)

const minimal = `
[[persona]]
name = "web"
exec = ["/bin/web"]
cpus = 0.5
memory = "64MiB"
pids = 32
`

// TestStrict checks that an unknown key anywhere is an error naming the key and its line.
func TestStrict(t *testing.T) {
	for _, tc := range []struct {
		name, doc, key, line string
	}{
		{"top level", "typo = 1\n" + minimal, `"typo"`, "line 1"},
		{"governor", "[governor]\npassphrase_attempt = 3\n" + minimal, `"governor.passphrase_attempt"`, "line 2"},
		{"persona", minimal + "memroy = \"1GiB\"\n", `"persona.memroy"`, "line 8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p policy.Policy
			err := DecodeStrict([]byte(tc.doc), &p)
			if err == nil {
				t.Fatal("Parse accepted an unknown key")
			}
			if !strings.Contains(err.Error(), tc.key) || !strings.Contains(err.Error(), tc.line) {
				t.Errorf("error %q does not name key %s at %s", err, tc.key, tc.line)
			}
		})
	}
}
