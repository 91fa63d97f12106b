package tree

import (
	"io/fs"
	"path"
	"sort"
	"strings"
)

// What Prune removes: what the audit (package audit) refuses in a persona tree and a persona
// cannot need, because bay0 is its only supervisor and its tree never changes. The names mirror
// the audit's lists; a test checks that a pruned tree passes the audit. Shells stay: the audit
// allows them inside persona trees, and workloads run scripts.
var (
	prunedNames = set(
		// package managers
		"apt", "apt-get", "apt-cache", "aptitude", "dpkg", "rpm", "yum", "dnf", "microdnf", "apk",
		"opkg", "pacman", "zypper", "snap", "flatpak", "nix-env", "emerge", "xbps-install", "pkg",
		// other inits and service managers
		"init", "systemd", "systemctl", "openrc", "openrc-run", "openrc-init", "rc-service", "rc-update",
		"supervisord", "supervisorctl", "runit", "runit-init", "runsv", "runsvdir", "sv", "s6-svscan",
		"s6-supervise", "s6-rc", "initctl", "telinit", "upstart", "shepherd", "dinit")
	// Package manager tools beside the ones above, removed from bin and sbin directories.
	prunedPrefixes = []string{"dpkg-", "apt-"}
	// Package databases, package manager state and service manager configuration.
	prunedDirs = set("var/lib/dpkg", "var/lib/rpm", "lib/apk", "var/lib/apt", "var/cache/apt", "etc/apt",
		"etc/systemd", "lib/systemd", "usr/lib/systemd", "etc/init.d", "etc/runit", "etc/s6")
)

func set(names ...string) map[string]bool {
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

// Prune removes package managers and their databases, other inits and service managers and
// their configuration from the tree, and returns what it removed (tree-relative, sorted).
// Use it on trees unpacked from images and packages, not on the operator's own files, which the
// audit judges as they are.
func (t *Tree) Prune() ([]string, error) {
	var doomed []string
	err := fs.WalkDir(t.root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == "." {
			return nil
		}
		if prunedDir(p) {
			doomed = append(doomed, p)
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if !d.IsDir() && prunable(p) {
			doomed = append(doomed, p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, p := range doomed {
		if err := t.root.RemoveAll(p); err != nil {
			return nil, err
		}
	}
	sort.Strings(doomed)
	return doomed, nil
}

// prunedDir matches a pruned directory at any depth (an image may keep a whole system under
// /opt/x), as the audit does.
func prunedDir(p string) bool {
	for d := range prunedDirs {
		if p == d || strings.HasSuffix(p, "/"+d) {
			return true
		}
	}
	return false
}

func prunable(p string) bool {
	base := path.Base(p)
	if prunedNames[base] {
		return true
	}
	switch path.Base(path.Dir(p)) {
	case "bin", "sbin":
		for _, pre := range prunedPrefixes {
			if strings.HasPrefix(base, pre) {
				return true
			}
		}
	}
	return false
}
