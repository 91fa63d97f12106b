package kernel

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
)

// ErrConfig means a configuration is malformed or lacks what the fragment asks for.
var ErrConfig = errors.New("kernel: configuration")

// optionRE matches an option's name.
var optionRE = regexp.MustCompile(`^CONFIG_[A-Za-z0-9_]+$`)

// ParseConfig reads a kernel configuration (.config or fragment) into option -> value. An
// option that is off maps to "n", whether written "CONFIG_X=n" (fragments) or
// "# CONFIG_X is not set" (.config). Other comments and blank lines are skipped; any other line,
// or an option given twice, is an error naming its line.
func ParseConfig(b []byte) (map[string]string, error) {
	opts := make(map[string]string)
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		var name, val string
		switch {
		case strings.HasPrefix(line, "# CONFIG_") && strings.HasSuffix(line, " is not set"):
			name, val = strings.TrimSuffix(strings.TrimPrefix(line, "# "), " is not set"), "n"
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		default:
			var ok bool
			if name, val, ok = strings.Cut(line, "="); !ok || val == "" {
				return nil, fmt.Errorf("%w: line %d: %q is not CONFIG_NAME=value", ErrConfig, n, line)
			}
		}
		if !optionRE.MatchString(name) {
			return nil, fmt.Errorf("%w: line %d: %q is not an option name", ErrConfig, n, name)
		}
		if _, dup := opts[name]; dup {
			return nil, fmt.Errorf("%w: line %d: %s given twice", ErrConfig, n, name)
		}
		opts[name] = val
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	return opts, nil
}

// CheckConfig reports every option of fragment that the full configuration does not carry
// with the same value: Kconfig silently drops an option whose dependencies are missing, and a
// kernel without dm-verity or with SysRq must fail the build, not the machine. An option the
// fragment turns off may also be absent from full.
func CheckConfig(fragment, full []byte) error {
	want, err := ParseConfig(fragment)
	if err != nil {
		return fmt.Errorf("fragment: %w", err)
	}
	have, err := ParseConfig(full)
	if err != nil {
		return fmt.Errorf(".config: %w", err)
	}
	var bad []string
	for _, name := range slices.Sorted(maps.Keys(want)) {
		w, h := want[name], have[name]
		if h == "" {
			h = "n"
		}
		if w != h {
			bad = append(bad, fmt.Sprintf("%s=%s (got %s)", name, w, h))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: the kernel's Kconfig did not keep %s (a dependency is missing or the option is forced)", ErrConfig, strings.Join(bad, ", "))
	}
	return nil
}
