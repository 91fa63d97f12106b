// Package kmod loads kernel modules without modprobe: it reads depmod's
// modules.dep, orders modules so that every dependency loads before its user,
// and reads and writes a load list. Spine's own kernel has no modules; only the
// boot benchmark uses this, to boot bay0 on Debian's generic kernel for
// comparison (bench/modinit loads the list, then starts bay0).
//
// The load list has one module per line:
//
//	# comment
//	kernel/drivers/md/dm-mod.ko
//	kernel/drivers/watchdog/i6300esb.ko nowayout=1
//
// The path is relative to /lib/modules/<release>; the rest of the line is the
// module's parameters, passed to finit_module(2) as they are.
package kmod

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
)

// maxLine bounds one line of modules.dep or of a load list; real modules.dep
// lines are a few hundred bytes.
const maxLine = 1 << 20

// Errors returned (wrapped) by this package.
var (
	// ErrSyntax means a modules.dep or load list line is malformed.
	ErrSyntax = errors.New("kmod: syntax error")
	// ErrUnknownModule means a module name is not in modules.dep.
	ErrUnknownModule = errors.New("kmod: unknown module")
)

// moduleSuffixes are the file name endings of modules, compressed or not.
var moduleSuffixes = []string{".ko", ".ko.xz", ".ko.gz", ".ko.zst"}

// Name returns the module name of a module path, as the kernel and modprobe
// spell it: "kernel/drivers/md/dm-verity.ko" -> "dm_verity".
func Name(p string) string {
	base := path.Base(p)
	for _, s := range moduleSuffixes {
		if strings.HasSuffix(base, s) {
			base = strings.TrimSuffix(base, s)
			break
		}
	}
	return normalize(base)
}

// normalize spells a module name with underscores, as the kernel does.
func normalize(name string) string { return strings.ReplaceAll(name, "-", "_") }

// validPath reports whether p is a clean relative path to a module file.
func validPath(p string) bool {
	if p == "" || strings.HasPrefix(p, "/") || path.Clean(p) != p || p == ".." || strings.HasPrefix(p, "../") {
		return false
	}
	if strings.ContainsFunc(p, func(r rune) bool { return r <= ' ' || r == 0x7f || r == ':' || r == '#' }) {
		return false
	}
	return slices.ContainsFunc(moduleSuffixes, func(s string) bool {
		return strings.HasSuffix(p, s) && len(path.Base(p)) > len(s)
	})
}

// ParseDeps parses modules.dep as depmod writes it: one line per module,
// "path: dep dep ...", the dependencies being every module it needs, direct or
// not, with the one to load first last. Paths are relative to
// /lib/modules/<release>. Blank lines and duplicate modules are errors.
func ParseDeps(r io.Reader) (map[string][]string, error) {
	deps := make(map[string][]string)
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, maxLine)
	for line := 1; sc.Scan(); line++ {
		mod, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || !validPath(mod) {
			return nil, fmt.Errorf("%w: modules.dep line %d: want \"path.ko: deps...\"", ErrSyntax, line)
		}
		if _, dup := deps[mod]; dup {
			return nil, fmt.Errorf("%w: modules.dep line %d: %q listed twice", ErrSyntax, line, mod)
		}
		if rest != "" && !strings.HasPrefix(rest, " ") {
			return nil, fmt.Errorf("%w: modules.dep line %d: no space after the colon", ErrSyntax, line)
		}
		list := strings.Fields(rest)
		if strings.Join(list, " ") != strings.TrimPrefix(rest, " ") {
			return nil, fmt.Errorf("%w: modules.dep line %d: irregular spacing", ErrSyntax, line)
		}
		for _, d := range list {
			if !validPath(d) || d == mod {
				return nil, fmt.Errorf("%w: modules.dep line %d: bad dependency %q", ErrSyntax, line, d)
			}
		}
		deps[mod] = list
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("kmod: read modules.dep: %w", err)
	}
	return deps, nil
}

// Resolve returns the paths of the named modules and of everything they
// depend on, each once, in an order where every module comes after all its
// dependencies. The order is deterministic: requested modules in the order
// given, each preceded by its not-yet-listed dependencies in the order
// modprobe would load them. Names may use '-' or '_'.
func Resolve(deps map[string][]string, names []string) ([]string, error) {
	// An empty path marks a name that several files share; it is an error
	// only when that name is asked for.
	byName := make(map[string]string, len(deps))
	for p := range deps {
		n := Name(p)
		if _, dup := byName[n]; dup {
			byName[n] = ""
			continue
		}
		byName[n] = p
	}
	const (
		visiting = 1
		done     = 2
	)
	state := make(map[string]int)
	var order []string
	var visit func(p, from string) error
	visit = func(p, from string) error {
		switch state[p] {
		case done:
			return nil
		case visiting:
			return fmt.Errorf("kmod: dependency cycle through %q", p)
		}
		list, ok := deps[p]
		if !ok {
			return fmt.Errorf("%w: %q, a dependency of %q, is not in modules.dep", ErrUnknownModule, p, from)
		}
		state[p] = visiting
		// modules.dep lists the module to load first last.
		for _, d := range slices.Backward(list) {
			if err := visit(d, p); err != nil {
				return err
			}
		}
		state[p] = done
		order = append(order, p)
		return nil
	}
	for _, name := range names {
		p, ok := byName[normalize(name)]
		if !ok {
			return nil, fmt.Errorf("%w: %q is not in modules.dep", ErrUnknownModule, name)
		}
		if p == "" {
			return nil, fmt.Errorf("kmod: module %q: several files in modules.dep have this name", name)
		}
		if err := visit(p, name); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// ParseBuiltin parses modules.builtin (one module path per line) and returns
// the names of the modules built into the kernel, which need no loading.
func ParseBuiltin(r io.Reader) (map[string]bool, error) {
	names := make(map[string]bool)
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, maxLine)
	for line := 1; sc.Scan(); line++ {
		if !validPath(sc.Text()) {
			return nil, fmt.Errorf("%w: modules.builtin line %d: want a module path", ErrSyntax, line)
		}
		names[Name(sc.Text())] = true
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("kmod: read modules.builtin: %w", err)
	}
	return names, nil
}

// LoadItem is one line of a load list: a module file and its parameters.
type LoadItem struct {
	Path   string // relative to /lib/modules/<release>, e.g. "kernel/drivers/md/dm-mod.ko"
	Params string // finit_module(2) parameters, e.g. "nowayout=1"; may be empty
}

// Validate reports whether the item can be written to a load list and read
// back unchanged.
func (it LoadItem) Validate() error {
	if !validPath(it.Path) {
		return fmt.Errorf("%w: bad module path %q", ErrSyntax, it.Path)
	}
	if strings.TrimSpace(it.Params) != it.Params ||
		strings.ContainsFunc(it.Params, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }) {
		return fmt.Errorf("%w: module %q: bad parameters %q", ErrSyntax, it.Path, it.Params)
	}
	return nil
}

// ParseLoadList parses a load list (see the package documentation). Lines
// that are empty or start with '#' are skipped. A line with a bad path, a
// control character or a module listed twice is an error.
func ParseLoadList(r io.Reader) ([]LoadItem, error) {
	var items []LoadItem
	seen := make(map[string]bool)
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, maxLine)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if text == "" || text[0] == '#' {
			continue
		}
		p, params, _ := strings.Cut(text, " ")
		it := LoadItem{Path: p, Params: params}
		if err := it.Validate(); err != nil {
			return nil, fmt.Errorf("load list line %d: %w", line, err)
		}
		if seen[p] {
			return nil, fmt.Errorf("%w: load list line %d: %q listed twice", ErrSyntax, line, p)
		}
		seen[p] = true
		items = append(items, it)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("kmod: read load list: %w", err)
	}
	return items, nil
}

// FormatLoadList writes items as a load list, one per line, in order.
// Precondition: every item passes Validate (ParseLoadList would reject it
// otherwise).
func FormatLoadList(items []LoadItem) []byte {
	var b bytes.Buffer
	b.WriteString("# Kernel modules bay0 loads, in order (path relative to /lib/modules/<release>, parameters).\n")
	for _, it := range items {
		b.WriteString(it.Path)
		if it.Params != "" {
			b.WriteByte(' ')
			b.WriteString(it.Params)
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}
