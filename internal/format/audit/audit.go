// Package audit checks a Spine tree against the constitution: no shell, package manager, other
// init or service manager, setuid or setgid file, device node, world-writable path, writable
// configuration, or anything outside the layout bay0 expects. The builder refuses to sign a tree
// that breaks it, and stage 1 refuses to boot a signed one that does (a Spine forced past the
// build), so the forbidden amendments of Article IX cannot be signed into a machine.
package audit

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"alpinespine.org/spine/internal/format/manifest"
	"alpinespine.org/spine/internal/format/policy"
)

// File is one entry of the tree, with its path relative to the root ("" is the root itself).
type File struct {
	Path string
	Mode fs.FileMode
}

// Violation is one way in which a tree breaks the constitution.
type Violation struct {
	Path string
	Rule string
}

func (v Violation) String() string { return "/" + v.Path + ": " + v.Rule }

// FaultMarker is a string that only a bay0 built with the test-only fault-injection tag
// contains; an image whose bay0 carries it is refused.
const FaultMarker = "bay0-fault-injection-enabled"

// RuleFaultInjection is the violation of a bay0 built with test-only fault injection.
const RuleFaultInjection = "bay0 is a test build with fault injection"

// Reader returns the contents of a file of the tree, by relative path.
type Reader func(rel string) ([]byte, error)

var (
	shells = set("sh", "bash", "ash", "dash", "zsh", "ksh", "mksh", "csh", "tcsh", "fish", "busybox", "toybox", "rbash")
	pkgMgr = set("apt", "apt-get", "apt-cache", "aptitude", "dpkg", "rpm", "yum", "dnf", "microdnf", "apk",
		"opkg", "pacman", "zypper", "snap", "flatpak", "nix-env", "emerge", "xbps-install", "pkg")
	inits = set("init", "systemd", "systemctl", "openrc", "openrc-run", "openrc-init", "rc-service", "rc-update",
		"supervisord", "supervisorctl", "runit", "runit-init", "runsv", "runsvdir", "sv", "s6-svscan",
		"s6-supervise", "s6-rc", "initctl", "telinit", "upstart", "shepherd", "dinit")
	// Directories whose presence means a package database or a service manager's configuration.
	forbiddenDirs = map[string]string{
		"var/lib/dpkg": "package database", "var/lib/rpm": "package database", "lib/apk": "package database",
		"etc/systemd": "service manager configuration", "lib/systemd": "service manager",
		"usr/lib/systemd": "service manager", "etc/init.d": "service manager configuration",
		"etc/runit": "service manager configuration", "etc/s6": "service manager configuration",
	}
	mountpoints = set("proc", "sys", "dev", "run", "tmp", "persist")
)

func set(names ...string) map[string]bool {
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

// Check audits the tree as the builder does. read gives the contents of etc/spine/policy.json
// (to learn which persona trees are referenced) and of bin/bay0 (to refuse a fault-injection
// build).
func Check(files []File, read Reader) []Violation {
	out := Tree(files, read)
	if data, err := read("bin/bay0"); err != nil {
		out = append(out, Violation{Path: "bin/bay0", Rule: "no readable bay0: " + err.Error()})
	} else if bytes.Contains(data, []byte(FaultMarker)) {
		out = append(out, Violation{Path: "bin/bay0", Rule: RuleFaultInjection})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// Tree audits the tree's shape and its policy, without reading bay0 itself: what stage 1
// checks on a mounted Spine before it hands over, at the cost of one walk of the tree.
func Tree(files []File, read Reader) []Violation {
	var out []Violation
	add := func(p, rule string) { out = append(out, Violation{Path: p, Rule: rule}) }

	personas := map[string]bool{}
	if data, err := read(policy.Path); err != nil {
		add(policy.Path, "no readable persona policy: "+err.Error())
	} else if pol, err := policy.Parse(bytes.NewReader(data)); err != nil {
		add(policy.Path, "invalid persona policy: "+err.Error())
	} else if err := pol.Vet(); err != nil {
		add(policy.Path, "invalid persona policy: "+err.Error())
	} else {
		for _, p := range pol.Personas {
			personas[p.Name] = true
		}
	}
	seenTree := map[string]bool{}
	for _, f := range files {
		p := strings.Trim(f.Path, "/")
		if p == "" {
			continue
		}
		base := path.Base(p)
		inPersona := strings.HasPrefix(p, policy.TreeRoot+"/")
		t := f.Mode.Type()

		switch {
		case t&(fs.ModeDevice|fs.ModeCharDevice) != 0:
			add(p, "device node")
		case t&fs.ModeNamedPipe != 0:
			add(p, "named pipe")
		case t&fs.ModeSocket != 0:
			add(p, "socket")
		}
		if f.Mode&fs.ModeSetuid != 0 {
			add(p, "setuid")
		}
		if f.Mode&fs.ModeSetgid != 0 {
			add(p, "setgid")
		}
		if t != fs.ModeSymlink && f.Mode.Perm()&0o002 != 0 {
			add(p, "world-writable")
		}
		if t != fs.ModeDir {
			switch {
			case shells[base] && !inPersona:
				add(p, "shell outside a persona tree")
			case pkgMgr[base]:
				add(p, "package manager")
			case inits[base]:
				add(p, "another init or service manager")
			}
		}
		for dir, what := range forbiddenDirs {
			if p == dir || strings.HasSuffix(p, "/"+dir) {
				add(p, what)
			}
		}

		if inPersona {
			name := strings.SplitN(strings.TrimPrefix(p, policy.TreeRoot+"/"), "/", 2)[0]
			if !personas[name] && !seenTree[name] {
				seenTree[name] = true
				add(policy.TreeRoot+"/"+name, "persona tree that the policy does not reference")
			}
			continue
		}
		if v := layout(p, t); v != "" {
			add(p, v)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// layout enforces the shape of the Spine outside persona trees: /bin/bay0, /bin/persona-init
// (the init of every persona, which bay0 runs for each launch), the baked policy,
// the persona root and empty mount points. Anything else is writable configuration or clutter
// that nothing in the Spine is allowed to need.
func layout(p string, t fs.FileMode) string {
	isDir := t == fs.ModeDir
	switch {
	case p == "bin" || p == "etc" || p == "etc/spine" || p == policy.TreeRoot:
		if !isDir {
			return "must be a directory"
		}
		return ""
	case p == "boot":
		if !isDir {
			return "must be a directory"
		}
		return ""
	case p == manifest.KernelPath:
		if t != 0 {
			return "must be a regular file"
		}
		return ""
	case p == "bin/bay0" || p == "bin/persona-init" || p == policy.Path:
		if t != 0 {
			return "must be a regular file"
		}
		return ""
	case mountpoints[p]:
		if !isDir {
			return "mount point must be a directory"
		}
		return ""
	}
	top := strings.SplitN(p, "/", 2)[0]
	switch {
	case mountpoints[top]:
		return "mount point must be empty"
	case top == "etc" || top == "var" || top == "home" || top == "root" || top == "srv" || top == "usr/local":
		return "writable configuration or state path"
	}
	return "not part of the Spine layout"
}

// Dir lists a directory tree with lstat modes. progress, if not nil, is called after each
// entry: stage 1 walks a whole mounted Spine under a watchdog that wants to see it progress.
func Dir(root string, progress func()) ([]File, error) {
	var files []File
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if progress != nil {
			progress()
		}
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		if rel == "." {
			rel = ""
		}
		files = append(files, File{Path: filepath.ToSlash(rel), Mode: info.Mode()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("walk %q: %w", root, err)
	}
	return files, nil
}

// DirReader reads files of a directory tree.
func DirReader(root string) Reader {
	return func(rel string) ([]byte, error) { return os.ReadFile(filepath.Join(root, filepath.FromSlash(rel))) }
}
