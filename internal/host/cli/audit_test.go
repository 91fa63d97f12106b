package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/format/audit"
)

const auditPolicy = `{"persona": [{"name": "app", "exec": ["/bin/app"], "cpus": 0.5, "memory": "16MiB", "pids": 8}]}
`

// cleanTree writes the smallest tree the constitution allows, with a persona "app" whose
// tree holds its own shell (fine: inside the persona, that is the persona's business).
func cleanTree(t *testing.T) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "tree")
	for _, d := range []string{"bin", "etc/spine", "personas/app/bin", "proc", "sys", "dev", "run", "tmp", "persist"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(root, "bin/bay0"), "\x7fELF bay0 stand-in", 0o755)
	writeFile(t, filepath.Join(root, "etc/spine/policy.json"), auditPolicy, 0o644)
	writeFile(t, filepath.Join(root, "personas/app/bin/app"), "app", 0o755)
	writeFile(t, filepath.Join(root, "personas/app/bin/sh"), "a shell", 0o755)
	return root
}

func TestAuditCleanDemo(t *testing.T) {
	d := demo(t)
	r := mustSpine(t, nil, "audit", d.img)
	if !strings.Contains(r.stdout, "no violations") {
		t.Errorf("audit of the demo image: %v", r)
	}
	// The same tree, unpacked (as root, so modes are kept), audits clean as a directory too.
	unsquashfs := lookTool(t, "unsquashfs", "squashfs-tools")
	dir := filepath.Join(t.TempDir(), "demo")
	if out, err := exec.Command(unsquashfs, "-d", dir, "-no-progress", d.img).CombinedOutput(); err != nil {
		t.Fatalf("unsquashfs: %v\n%s", err, out)
	}
	if r := spine(t, nil, "audit", dir); r.code != 0 || !strings.Contains(r.stdout, "no violations") {
		t.Errorf("audit of the unpacked demo: %v", r)
	}
	if r := spine(t, nil, "audit", cleanTree(t)); r.code != 0 {
		t.Errorf("audit of the clean test tree: %v", r)
	}
}

// TestAuditRules has one case per rule, on a real directory: the clean tree plus one breach.
func TestAuditRules(t *testing.T) {
	for _, tc := range []struct {
		name string
		add  func(t *testing.T, root string)
		want string // a line of the output
	}{
		{"shell outside persona", file("bin/sh", 0o755), "/bin/sh: shell outside a persona tree"},
		{"bash outside persona", file("bin/bash", 0o755), "/bin/bash: shell outside a persona tree"},
		{"package manager", file("personas/app/usr/bin/dpkg", 0o755), "/personas/app/usr/bin/dpkg: package manager"},
		{"package manager apk", file("personas/app/sbin/apk", 0o755), "/personas/app/sbin/apk: package manager"},
		{"systemd", file("personas/app/lib/systemd/systemd", 0o755), "/personas/app/lib/systemd/systemd: another init or service manager"},
		{"init", file("personas/app/sbin/init", 0o755), "/personas/app/sbin/init: another init or service manager"},
		{"supervisord", file("personas/app/usr/bin/supervisord", 0o755), "/personas/app/usr/bin/supervisord: another init or service manager"},
		{"runit", file("personas/app/sbin/runit", 0o755), "/personas/app/sbin/runit: another init or service manager"},
		{"s6-svscan", file("personas/app/bin/s6-svscan", 0o755), "/personas/app/bin/s6-svscan: another init or service manager"},
		{"setuid", file("personas/app/bin/su", 0o755|os.ModeSetuid), "/personas/app/bin/su: setuid"},
		{"setgid", file("personas/app/bin/wall", 0o755|os.ModeSetgid), "/personas/app/bin/wall: setgid"},
		{"device node", func(t *testing.T, root string) {
			if err := unix.Mknod(filepath.Join(root, "personas/app/null"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
				t.Fatalf("mknod (needs root): %v", err)
			}
		}, "/personas/app/null: device node"},
		{"world-writable", file("personas/app/bin/open", 0o777), "/personas/app/bin/open: world-writable"},
		{"etc other", file("etc/resolv.conf", 0o644), "/etc/resolv.conf: writable configuration or state path"},
		{"var", file("var/lib/state", 0o644), "/var/lib/state: writable configuration or state path"},
		{"unreferenced persona tree", file("personas/ghost/bin/ghost", 0o755), "/personas/ghost: persona tree that the policy does not reference"},
		{"fault injection bay0", func(t *testing.T, root string) {
			writeFile(t, filepath.Join(root, "bin/bay0"), "\x7fELF..."+audit.FaultMarker+"...", 0o755)
		}, "/bin/bay0: bay0 is a test build with fault injection"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := cleanTree(t)
			tc.add(t, root)
			r := spine(t, nil, "audit", root)
			if r.code != 1 {
				t.Fatalf("audit: %v", r)
			}
			if !hasLine(r.stdout, tc.want) {
				t.Errorf("audit output has no line %q:\n%s", tc.want, r.stdout)
			}
			if !strings.Contains(r.stderr, "violations") {
				t.Errorf("stderr %q", r.stderr)
			}
		})
	}
}

func file(rel string, mode os.FileMode) func(*testing.T, string) {
	return func(t *testing.T, root string) { writeFile(t, filepath.Join(root, rel), "x", mode) }
}

func hasLine(out, line string) bool {
	for _, l := range strings.Split(out, "\n") {
		if l == line {
			return true
		}
	}
	return false
}

// TestAuditListsEverything: many breaches at once, every one listed, exit 1.
func TestAuditListsEverything(t *testing.T) {
	root := cleanTree(t)
	want := []string{
		"/bin/sh: shell outside a persona tree",
		"/etc/hosts: writable configuration or state path",
		"/personas/app/bin/su: setuid",
		"/personas/app/bin/wall: setgid",
		"/personas/app/sbin/systemd: another init or service manager",
		"/personas/app/tmp: world-writable",
		"/personas/app/usr/bin/apt-get: package manager",
		"/personas/spare: persona tree that the policy does not reference",
	}
	file("bin/sh", 0o755)(t, root)
	file("etc/hosts", 0o644)(t, root)
	file("personas/app/bin/su", 0o755|os.ModeSetuid)(t, root)
	file("personas/app/bin/wall", 0o755|os.ModeSetgid)(t, root)
	file("personas/app/sbin/systemd", 0o755)(t, root)
	file("personas/app/usr/bin/apt-get", 0o755)(t, root)
	file("personas/spare/x", 0o644)(t, root)
	if err := os.Mkdir(filepath.Join(root, "personas/app/tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(root, "personas/app/tmp"), 0o777|os.ModeSticky)
	r := spine(t, nil, "audit", root)
	if r.code != 1 {
		t.Fatalf("audit: %v", r)
	}
	for _, w := range want {
		if !hasLine(r.stdout, w) {
			t.Errorf("missing %q", w)
		}
	}
	if n := strings.Count(r.stdout, "\n"); n != len(want)+1 { // bin/sh is also outside the layout
		t.Errorf("%d lines, want %d:\n%s", n, len(want)+1, r.stdout)
	}
	if !strings.Contains(r.stderr, "9 violations") {
		t.Errorf("stderr %q", r.stderr)
	}
}

// TestAuditImage audits SquashFS images: a device node made by a mksquashfs pseudo-file
// definition (no mknod needed) and a fault-injection bay0 are found in the image itself.
func TestAuditImage(t *testing.T) {
	mksquashfs := lookTool(t, "mksquashfs", "squashfs-tools")
	root := cleanTree(t)
	img := filepath.Join(t.TempDir(), "dev.sqfs")
	out, err := exec.Command(mksquashfs, root, img, "-noappend", "-quiet", "-no-progress", "-all-root",
		"-p", "dev/null c 666 0 0 1 3").CombinedOutput()
	if err != nil {
		t.Fatalf("mksquashfs: %v\n%s", err, out)
	}
	r := spine(t, nil, "audit", img)
	if r.code != 1 {
		t.Fatalf("audit: %v", r)
	}
	for _, w := range []string{"/dev/null: device node", "/dev/null: world-writable", "/dev/null: mount point must be empty"} {
		if !hasLine(r.stdout, w) {
			t.Errorf("audit of the image has no line %q:\n%s", w, r.stdout)
		}
	}

	writeFile(t, filepath.Join(root, "bin/bay0"), "\x7fELF..."+audit.FaultMarker, 0o755)
	img2 := filepath.Join(t.TempDir(), "fault.sqfs")
	if out, err := exec.Command(mksquashfs, root, img2, "-noappend", "-quiet", "-no-progress", "-all-root").CombinedOutput(); err != nil {
		t.Fatalf("mksquashfs: %v\n%s", err, out)
	}
	if r := spine(t, nil, "audit", img2); r.code != 1 || !hasLine(r.stdout, "/bin/bay0: bay0 is a test build with fault injection") {
		t.Errorf("audit of a fault-injection image: %v", r)
	}
	if r := spine(t, nil, "audit", filepath.Join(t.TempDir(), "missing")); r.code != 1 {
		t.Errorf("audit of a missing path: %v", r)
	}
}

// TestAuditRealFaultBay0: a bay0 really built with the faultinject tag is refused, by the
// audit and by the builder, while the ordinary build is not.
func TestAuditRealFaultBay0(t *testing.T) {
	fault, err := faultBay0Once()
	if err != nil {
		t.Fatal(err)
	}
	root := cleanTree(t)
	writeFile(t, filepath.Join(root, "bin/bay0"), string(read(t, fault)), 0o755)
	if r := spine(t, nil, "audit", root); r.code != 1 || !hasLine(r.stdout, "/bin/bay0: bay0 is a test build with fault injection") {
		t.Errorf("audit of a tree with a fault-injection bay0: %v", r)
	}
	writeFile(t, filepath.Join(root, "bin/bay0"), string(read(t, bay0(t))), 0o755)
	if r := spine(t, nil, "audit", root); r.code != 0 {
		t.Errorf("audit of a tree with the ordinary bay0: %v", r)
	}
	out := t.TempDir()
	r := spine(t, epoch, "build", "--kernel", "none", "--config", smallProject(t), "--key", sharedKeys(t).key, "--out", filepath.Join(out, "f.img"), "--bay0", fault)
	if r.code != 1 || !strings.Contains(r.stderr, "/bin/bay0: bay0 is a test build with fault injection") {
		t.Errorf("build with a fault-injection bay0: %v", r)
	}
	if ents, _ := os.ReadDir(out); len(ents) != 0 {
		t.Errorf("refused build left %v", ents)
	}
}
