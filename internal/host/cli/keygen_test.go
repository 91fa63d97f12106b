package cli

import (
	"bytes"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestKeygen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	r := mustSpine(t, nil, "keygen", "--out", dir)
	key, pub := filepath.Join(dir, "spine.key"), filepath.Join(dir, "spine.pub")
	ukey, ucrt := filepath.Join(dir, "uefi.key"), filepath.Join(dir, "uefi.crt")
	for _, p := range []string{key, pub, ukey, ucrt} {
		if !strings.Contains(r.stdout, p) {
			t.Errorf("keygen does not say it wrote %s: %q", p, r.stdout)
		}
	}
	for _, p := range []string{key, ukey} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", p, st.Mode().Perm())
		}
	}
	for p, typ := range map[string]string{key: "PRIVATE KEY", pub: "PUBLIC KEY", ukey: "PRIVATE KEY", ucrt: "CERTIFICATE"} {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := pem.Decode(data); b == nil || b.Type != typ {
			t.Errorf("%s is not a PEM %q block", p, typ)
		}
	}

	openssl := lookTool(t, "openssl", "openssl")
	for _, args := range [][]string{
		{"pkey", "-in", key, "-noout"},
		{"pkey", "-pubin", "-in", pub, "-noout"},
		{"rsa", "-in", ukey, "-check", "-noout"},
		{"verify", "-CAfile", ucrt, ucrt},
	} {
		if out, err := exec.Command(openssl, args...).CombinedOutput(); err != nil {
			t.Errorf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	if out, err := exec.Command(openssl, "x509", "-in", ucrt, "-noout", "-subject").CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "CN = Alpine Spine Secure Boot") {
		t.Errorf("uefi.crt subject: %v %s", err, out)
	}

	// A second keygen into the same place is refused and leaves every file alone.
	all := []string{key, pub, ukey, ucrt}
	before := readAll(t, all)
	r = spine(t, nil, "keygen", "--out", dir)
	if r.code != 1 || !strings.Contains(r.stderr, "refuse to overwrite") {
		t.Errorf("second keygen: %v", r)
	}
	if !slices.EqualFunc(before, readAll(t, all), bytes.Equal) {
		t.Error("second keygen changed the keys")
	}
	// A directory from before the Secure Boot pair existed gains it; its Ed25519 pair is kept.
	os.Remove(ukey)
	os.Remove(ucrt)
	r = mustSpine(t, nil, "keygen", "--out", dir, "--uefi-cn", "Owner X")
	if !strings.Contains(r.stdout, "kept "+key) || !strings.Contains(r.stdout, "wrote "+ukey) {
		t.Errorf("keygen over an Ed25519-only directory: %v", r)
	}
	if !bytes.Equal(before[0], read(t, key)) || !bytes.Equal(before[1], read(t, pub)) {
		t.Error("keygen changed the kept Ed25519 pair")
	}
	if out, err := exec.Command(openssl, "x509", "-in", ucrt, "-noout", "-subject").CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "CN = Owner X") {
		t.Errorf("--uefi-cn: %v %s", err, out)
	}
	// Half a Secure Boot pair: refused, the lone file untouched.
	os.Remove(ucrt)
	lone := read(t, ukey)
	if r := spine(t, nil, "keygen", "--out", dir); r.code != 1 || !strings.Contains(r.stderr, "only one of") {
		t.Errorf("keygen over half a UEFI pair: %v", r)
	}
	if !bytes.Equal(lone, read(t, ukey)) {
		t.Error("keygen changed a lone uefi.key")
	}
	// Only the public half left: still refused, nothing written.
	dir2 := t.TempDir()
	writeFile(t, filepath.Join(dir2, "spine.pub"), "old", 0o644)
	if r := spine(t, nil, "keygen", "--out", dir2); r.code != 1 {
		t.Errorf("keygen over an existing spine.pub: %v", r)
	}
	if _, err := os.Stat(filepath.Join(dir2, "spine.key")); err == nil {
		t.Error("spine.key written beside an existing spine.pub")
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		{"keygen"},
		{"keygen", "--out", "x", "extra"},
		{"build", "--config", "x"},
		{"inspect"},
		{"verify", "img"},
		{"audit"},
		{"keygen", "--no-such-flag"},
		{"no-such-command"},
	} {
		if r := spine(t, nil, args...); r.code != 2 || r.stderr == "" {
			t.Errorf("spine %s: %v, want exit 2 with a message", strings.Join(args, " "), r)
		}
	}
	if r := spine(t, nil, "help"); r.code != 0 || !strings.Contains(r.stdout, "keygen") {
		t.Errorf("spine help: %v", r)
	}
}

func readAll(t *testing.T, paths []string) [][]byte {
	t.Helper()
	var out [][]byte
	for _, p := range paths {
		out = append(out, read(t, p))
	}
	return out
}

func read(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
