package cli

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"alpinespine.org/spine/internal/format/bootctl"

	"alpinespine.org/spine/internal/host/persistfmt"
	"alpinespine.org/spine/internal/host/provision"
)

// TestDiskPersist: spine disk formats persist with the file's passphrase (and only that),
// at the requested cost.
func TestDiskPersist(t *testing.T) {
	lookTool(t, "cryptsetup", "cryptsetup-bin")
	d := demo(t)
	dir := t.TempDir()
	pass := filepath.Join(dir, "pass")
	if err := os.WriteFile(pass, []byte("disk test passphrase\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "disk.img")
	mustSpine(t, nil, "disk", "--a", d.img, "--out", out, "--persist-size", "32MiB", "--passphrase-file", pass, "--kdf", "test")
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	part, err := provision.Partition(f, provision.PersistPartition)
	if err != nil {
		t.Fatal(err)
	}
	raw := filepath.Join(dir, "persist.raw")
	b := make([]byte, part.Size)
	if _, err := f.ReadAt(b, part.Start); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(raw, b, 0o600); err != nil {
		t.Fatal(err)
	}
	dump, err := exec.Command("cryptsetup", "luksDump", raw).CombinedOutput()
	if err != nil || !strings.Contains(string(dump), "PBKDF:      argon2id") || !strings.Contains(string(dump), "Memory:     8192") {
		t.Errorf("luksDump: %v\n%s", err, dump)
	}
	for _, c := range []struct {
		pass string
		ok   bool
	}{{"disk test passphrase", true}, {"disk test passphrase\n", false}} {
		cmd := exec.Command("cryptsetup", "open", "--test-passphrase", "--disable-locks", "--key-file=-", raw)
		cmd.Stdin = strings.NewReader(c.pass)
		if err := cmd.Run(); (err == nil) != c.ok {
			t.Errorf("--test-passphrase %q: %v, want ok=%v", c.pass, err, c.ok)
		}
	}
}

func TestDiskRefusesWithoutPassphrase(t *testing.T) {
	d := demo(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "disk.img")
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		msg  string
	}{
		// The test's stdin is not a terminal, and there is no default passphrase.
		{nil, "no passphrase"},
		{[]string{"--passphrase-file", empty}, "empty"},
		{[]string{"--passphrase-file", filepath.Join(dir, "missing")}, "passphrase file"},
		{[]string{"--passphrase-file", empty, "--kdf", "test", "--kdf-memory", "1GiB"}, "--kdf test fixes the cost"},
		{[]string{"--passphrase-file", empty, "--kdf-time", "soon"}, "--kdf-time"},
	} {
		r := spine(t, nil, append([]string{"disk", "--a", d.img, "--out", out}, c.args...)...)
		if r.code != 1 || !strings.Contains(r.stderr, c.msg) {
			t.Errorf("spine disk %q: %v; want exit 1 mentioning %q", c.args, r, c.msg)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("a refused spine disk wrote the disk")
	}
}

func TestKDFFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want persistfmt.KDF
	}{
		{nil, persistfmt.DefaultKDF()},
		{[]string{"--kdf", "test"}, persistfmt.TestKDF()},
		{[]string{"--kdf-memory", "1GiB", "--kdf-time", "6", "--kdf-parallel", "2"}, persistfmt.KDF{Type: "argon2id", MemoryKiB: 1 << 20, Iterations: 6, Parallel: 2}},
		{[]string{"--kdf-time", "2s"}, persistfmt.KDF{Type: "argon2id", MemoryKiB: 128 << 10, IterTime: 2 * time.Second, Parallel: 1}},
		{[]string{"--kdf", "pbkdf2", "--kdf-time", "500000"}, persistfmt.KDF{Type: "pbkdf2", MemoryKiB: 128 << 10, Iterations: 500000, Parallel: 1}},
	} {
		fs := flag.NewFlagSet("disk", flag.ContinueOnError)
		k := addKDFFlags(fs)
		if err := fs.Parse(c.args); err != nil {
			t.Fatal(err)
		}
		got, err := k.kdf(fs)
		if err != nil || got != c.want {
			t.Errorf("%q: %+v, %v; want %+v", c.args, got, err, c.want)
		}
	}
}

// TestDiskUpdateOffline stages a newer Spine into a stopped machine's disk, and refuses a
// second one while the first has not committed.
func TestDiskUpdateOffline(t *testing.T) {
	dir := t.TempDir()
	d := demo(t)
	disk := filepath.Join(dir, "disk.img")
	pass := filepath.Join(dir, "pass")
	writeFile(t, pass, "a long enough passphrase\n", 0o600)
	mustSpine(t, nil, "disk", "--a", d.img, "--out", disk, "--passphrase-file", pass, "--kdf", "test")
	v2 := filepath.Join(dir, "v2.spine")
	mustSpine(t, epoch, "build", "--kernel", "none", "--config", "../../../demo/spine.toml", "--key", d.keys.key, "--bay0", bay0(t), "--version", "2", "--out", v2)
	r := mustSpine(t, nil, "disk", "--update", disk, v2, "--pub", d.keys.pub)
	if !strings.Contains(r.stdout, "staged demo v2 in slot b") {
		t.Fatalf("spine disk --update: %v", r)
	}
	rec, err := provision.Record(disk)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Primary != 1 || rec.Slots[1].State != bootctl.Trial || rec.Slots[0].State != bootctl.Good {
		t.Fatalf("record after offline staging: %+v", rec)
	}
	r = spine(t, nil, "disk", "--update", disk, v2, "--pub", d.keys.pub)
	if r.code != 1 || !strings.Contains(r.stderr, "not yet committed") {
		t.Fatalf("update during a trial: %v", r)
	}
}
