// Package debtree unpacks Debian packages and their dependencies into a persona's tree: apt
// resolves the closure, apt-get downloads the .debs into a cache kept between builds, and the
// data of each package is unpacked by package tree. No maintainer script ever runs, nothing is
// installed on the build host, and no package database is written.
//
// The closure is the listed packages and, recursively, their Depends and Pre-Depends, as apt's
// own solver picks them for an empty system. Recommends, Suggests and the Essential set are not
// pulled in: a persona gets what its workload needs, not a Debian system.
package debtree

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"alpinespine.org/spine/internal/host/tree"
)

// Arch is the Debian architecture of every Spine.
const Arch = "amd64"

// ErrBadName refuses a package name that is not a Debian package name (optionally pinned to a
// version with "=").
var ErrBadName = errors.New("not a Debian package name")

// Debian policy §5.6.1 (Package) and §5.6.12 (Version); anything else could be read by apt as
// an option or a pattern.
var (
	nameRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)
	versionRE = regexp.MustCompile(`^[0-9A-Za-z.+~:-]+$`)
	archRE    = regexp.MustCompile(`^[a-z0-9-]+$`)
)

// CheckName checks one entry of a package list: "name" or "name=version".
func CheckName(s string) error {
	name, version, pinned := strings.Cut(s, "=")
	if !nameRE.MatchString(name) || pinned && !versionRE.MatchString(version) {
		return fmt.Errorf("%q: %w", s, ErrBadName)
	}
	return nil
}

// Package is one resolved binary package.
type Package struct {
	Name    string
	Version string
	Arch    string // "amd64" or "all"
}

// String renders the package as apt pins it: "name=version".
func (p Package) String() string { return p.Name + "=" + p.Version }

// FileName is the name apt-get download gives the package's .deb (an epoch's ':' is escaped).
func (p Package) FileName() string {
	return p.Name + "_" + strings.ReplaceAll(p.Version, ":", "%3a") + "_" + p.Arch + ".deb"
}

// Result says what Install put into a tree.
type Result struct {
	// Packages is the resolved closure, sorted by name.
	Packages []Package
	// Downloaded counts the packages that were not in the cache yet.
	Downloaded int
	// Bytecode counts the .pyc files of the tree's Python (CompilePython), 0 without one.
	Bytecode int
}

// Install resolves names, fetches the closure into cacheDir and unpacks it into dst, in the
// order of Result.Packages (a file shipped by two packages comes from the later one), then
// compiles the tree's Python modules, if it has Python (CompilePython).
func Install(ctx context.Context, dst *tree.Tree, names []string, cacheDir string) (Result, error) {
	pkgs, err := Resolve(ctx, names)
	if err != nil {
		return Result{}, err
	}
	debs, n, err := Fetch(ctx, cacheDir, pkgs)
	if err != nil {
		return Result{}, err
	}
	for i, deb := range debs {
		if err := Unpack(ctx, dst, deb); err != nil {
			return Result{}, fmt.Errorf("unpack %s: %w", pkgs[i], err)
		}
	}
	pyc, err := CompilePython(ctx, dst)
	if err != nil {
		return Result{}, err
	}
	return Result{Packages: pkgs, Downloaded: n, Bytecode: pyc}, nil
}

// Resolve asks apt which packages an empty system needs to have names installed: it simulates
// the installation against an empty dpkg status, so nothing on the build host counts as
// installed and nothing is written. The result is sorted by name.
func Resolve(ctx context.Context, names []string) ([]Package, error) {
	if len(names) == 0 {
		return nil, errors.New("no packages listed")
	}
	for _, n := range names {
		if err := CheckName(n); err != nil {
			return nil, err
		}
	}
	status, err := os.CreateTemp("", "spine-dpkg-status-")
	if err != nil {
		return nil, fmt.Errorf("resolve packages: %w", err)
	}
	status.Close()
	defer os.Remove(status.Name())
	args := []string{"install", "--simulate", "--quiet", "--no-install-recommends",
		"-o", "Dir::State::status=" + status.Name(),
		"-o", "APT::Install-Suggests=false",
		"-o", "APT::Architecture=" + Arch,
		// A simulation needs no lock, and must not wait for an apt run elsewhere on the host.
		"-o", "Debug::NoLocking=true",
		"--"}
	out, err := apt(ctx, "", "apt-get", append(args, names...)...)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", strings.Join(names, " "), err)
	}
	pkgs, err := parseSimulation(bytes.NewReader(out))
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", strings.Join(names, " "), err)
	}
	return pkgs, nil
}

// instRE matches a line of apt-get --simulate: "Inst NAME (VERSION RELEASE... [ARCH])".
var instRE = regexp.MustCompile(`^Inst (\S+) \((\S+) [^\[]*\[([^\]]+)\]\)`)

// parseSimulation reads the packages apt-get --simulate would unpack, sorted by name.
func parseSimulation(r io.Reader) ([]Package, error) {
	seen := map[string]bool{}
	var pkgs []Package
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "Inst ") {
			continue
		}
		m := instRE.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("unexpected apt output %q", line)
		}
		p := Package{Name: strings.TrimSuffix(m[1], ":"+m[3]), Version: m[2], Arch: m[3]}
		if !nameRE.MatchString(p.Name) || !versionRE.MatchString(p.Version) || !archRE.MatchString(p.Arch) {
			return nil, fmt.Errorf("unexpected apt output %q", line)
		}
		if p.Arch != Arch && p.Arch != "all" {
			return nil, fmt.Errorf("apt chose %s for %s, a Spine runs %s", p.Name, p.Arch, Arch)
		}
		if seen[p.Name] {
			return nil, fmt.Errorf("apt lists %s twice", p.Name)
		}
		seen[p.Name] = true
		pkgs = append(pkgs, p)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(pkgs) == 0 {
		return nil, errors.New("apt resolved nothing to install")
	}
	sort.Slice(pkgs, func(i, j int) bool { return pkgs[i].Name < pkgs[j].Name })
	return pkgs, nil
}

// Fetch makes sure every package's .deb is in cacheDir, downloading only the missing ones with
// apt-get download (which checks them against the signed archive), and returns their paths in
// the order of pkgs and how many it downloaded. A .deb enters the cache in one rename, so an
// interrupted download leaves nothing that a later build would trust.
func Fetch(ctx context.Context, cacheDir string, pkgs []Package) ([]string, int, error) {
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, 0, fmt.Errorf("package cache: %w", err)
	}
	paths := make([]string, len(pkgs))
	var missing []Package
	for i, p := range pkgs {
		paths[i] = filepath.Join(cacheDir, p.FileName())
		if _, err := os.Stat(paths[i]); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return paths, 0, nil
	}
	tmp, err := os.MkdirTemp(cacheDir, ".download-")
	if err != nil {
		return nil, 0, fmt.Errorf("package cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	args := []string{"download", "--quiet", "-o", "APT::Architecture=" + Arch, "--"}
	for _, p := range missing {
		args = append(args, p.Name+":"+p.Arch+"="+p.Version)
	}
	if _, err := apt(ctx, tmp, "apt-get", args...); err != nil {
		return nil, 0, fmt.Errorf("download packages: %w", err)
	}
	for _, p := range missing {
		if err := os.Rename(filepath.Join(tmp, p.FileName()), filepath.Join(cacheDir, p.FileName())); err != nil {
			return nil, 0, fmt.Errorf("download %s: %w", p, err)
		}
	}
	return paths, len(missing), nil
}

// Unpack applies the data of one .deb (dpkg-deb --fsys-tarfile) to dst. Its control scripts are
// never read.
func Unpack(ctx context.Context, dst *tree.Tree, deb string) error {
	cmd := exec.CommandContext(ctx, "dpkg-deb", "--fsys-tarfile", deb)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("dpkg-deb (apt-get install dpkg): %w", err)
	}
	aerr := dst.Apply(out, tree.Plain)
	// Drain what is left so that dpkg-deb is not killed by a broken pipe and its own error,
	// if any, is the one reported.
	_, _ = io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("dpkg-deb --fsys-tarfile %s: %w: %s", filepath.Base(deb), err, strings.TrimSpace(stderr.String()))
	}
	return aerr
}

// apt runs an apt tool in dir with a fixed locale, so that its output can be parsed.
func apt(ctx context.Context, dir, tool string, args ...string) ([]byte, error) {
	path, err := exec.LookPath(tool)
	if err != nil {
		return nil, fmt.Errorf("%s not found (a Debian build host is required): %w", tool, err)
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s (run `apt-get update` if the package lists are missing or stale)",
			tool, args[0], err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}
