package debtree

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"

	"alpinespine.org/spine/internal/host/tree"
)

// Python's bytecode is compiled when the tree is built, not at the persona's first start: a
// persona's tree is read-only, so without .pyc files every start of a Python workload compiles
// every module it imports again, which costs seconds (and under emulation tens of seconds)
// before its first answer. Debian compiles them in a maintainer script (py3compile), which
// never runs here.
//
// The tree's own python3 compiles them, since the build host's Python may be another version
// or missing: it runs chrooted in the tree, in namespaces of its own (a user namespace mapping
// only the builder's own ids, a mount namespace, no network). The .pyc files are
// hash-based and unchecked (PEP 552): they carry a hash of their source instead of its
// time, so the same tree gives the same bytes, and Python never looks at the source's time
// (the tree never changes). PYTHONHASHSEED=0 fixes the order of the frozensets in constants.

// pythonDirRE matches the directories of /usr/lib whose modules are compiled: the standard
// library (python3.11) and the packages' (python3).
var pythonDirRE = regexp.MustCompile(`^python3(\.[0-9]+)?$`)

// CompilePython compiles every Python module of the tree's /usr/lib/python3* directories with
// the tree's own /usr/bin/python3 and returns how many .pyc files the tree holds then. A tree
// without /usr/bin/python3 is left alone (0, nil). Modules that do not compile (the deliberately
// broken test data some packages ship) are skipped, as py3compile skips them.
func CompilePython(ctx context.Context, dst *tree.Tree) (int, error) {
	if _, mode, err := dst.Lookup("/usr/bin/python3"); err != nil || !mode.IsRegular() {
		return 0, nil
	}
	root := dst.Dir()
	ents, err := os.ReadDir(filepath.Join(root, "usr", "lib"))
	if err != nil {
		return 0, fmt.Errorf("compile python: %w", err)
	}
	var dirs []string
	for _, e := range ents {
		if e.IsDir() && pythonDirRE.MatchString(e.Name()) {
			dirs = append(dirs, "/usr/lib/"+e.Name())
		}
	}
	if len(dirs) == 0 {
		return 0, nil
	}
	sort.Strings(dirs)
	args := append([]string{"-s", "-m", "compileall", "-f", "-q", "-j", "1", "--invalidation-mode", "unchecked-hash"}, dirs...)
	cmd := exec.CommandContext(ctx, "/usr/bin/python3", args...)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "PYTHONHASHSEED=0", "PYTHONDONTWRITEBYTECODE=1"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Chroot:      root,
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWNET | syscall.CLONE_NEWIPC,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	var exit *exec.ExitError
	// compileall exits 1 when some module did not compile; anything else is a failure.
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 1 && strings.Contains(out.String(), "Error compiling")) {
		return 0, fmt.Errorf("compile python with the tree's python3: %w: %s", err, lastLines(out.String(), 5))
	}
	return normalizeCaches(root, dirs)
}

// normalizeCaches gives the __pycache__ directories and .pyc files the tree's modes, whatever
// the builder's umask, and counts the .pyc files.
func normalizeCaches(root string, dirs []string) (int, error) {
	n := 0
	for _, d := range dirs {
		err := filepath.WalkDir(filepath.Join(root, d), func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			switch {
			case e.IsDir() && e.Name() == "__pycache__":
				return os.Chmod(p, tree.DirMode)
			case e.Type().IsRegular() && strings.HasSuffix(p, ".pyc"):
				n++
				return os.Chmod(p, tree.FileMode)
			}
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("compile python: %w", err)
		}
	}
	return n, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ")
}
