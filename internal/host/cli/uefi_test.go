package cli

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"alpinespine.org/spine/internal/format/disk"
	"alpinespine.org/spine/internal/host/provision"
	"alpinespine.org/spine/internal/host/uefi/efivars"
	"alpinespine.org/spine/internal/host/uefi/ovmf"
)

// helloEFI is an EFI application Debian ships (efitools); it stands in for a boot program.
const helloEFI = "/usr/lib/efitools/x86_64-linux-gnu/HelloWorld.efi"

func TestUEFIVars(t *testing.T) {
	if err := ovmf.Check(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	mustSpine(t, nil, "keygen", "--out", dir)
	vars := filepath.Join(dir, "vars.fd")
	r := mustSpine(t, nil, "uefi-vars", "--cert", filepath.Join(dir, "uefi.crt"), "--out", vars)
	if !strings.Contains(r.stdout, "Secure Boot on") {
		t.Errorf("uefi-vars says: %q", r.stdout)
	}
	b := read(t, vars)
	s, err := efivars.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"PK", "KEK"} {
		if _, ok := s.Get(n, efivars.GlobalVariable); !ok {
			t.Errorf("%s not enrolled", n)
		}
	}
	if _, ok := s.Get("db", efivars.ImageSecurityDatabase); !ok {
		t.Error("db not enrolled")
	}
	// The same certificate gives the same store.
	mustSpine(t, nil, "uefi-vars", "--cert", filepath.Join(dir, "uefi.crt"), "--out", vars+"2")
	if !bytes.Equal(b, read(t, vars+"2")) {
		t.Error("uefi-vars is not reproducible")
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--cert", filepath.Join(dir, "spine.pub"), "--out", vars + "3"}, "not a certificate"},
		{[]string{"--cert", filepath.Join(dir, "uefi.crt"), "--out", vars + "3", "--template", filepath.Join(dir, "uefi.crt")}, "not an EDK2 authenticated variable store"},
		{[]string{"--cert", filepath.Join(dir, "nothing"), "--out", vars + "3"}, "no such file"},
	} {
		r := spine(t, nil, append([]string{"uefi-vars"}, c.args...)...)
		if r.code != 1 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("uefi-vars %v: %v, want %q", c.args, r, c.want)
		}
		if _, err := os.Stat(vars + "3"); err == nil {
			t.Errorf("uefi-vars %v left a file behind", c.args)
		}
	}
}

// spine disk --boot-program puts the program, signed with the owner's key, on a FAT32 EFI
// system partition at the path firmware looks for; sbverify accepts what mtools reads back.
func TestDiskBootProgram(t *testing.T) {
	mtype := lookTool(t, "mtype", "mtools")
	sbverify := lookTool(t, "sbverify", "sbsigntool")
	d := demo(t)
	dir := t.TempDir()
	mustSpine(t, nil, "keygen", "--out", dir)
	key, crt := filepath.Join(dir, "uefi.key"), filepath.Join(dir, "uefi.crt")
	pass := filepath.Join(dir, "pass")
	writeFile(t, pass, "esp test\n", 0o600)
	out := filepath.Join(dir, "disk.img")
	args := []string{"disk", "--a", d.img, "--out", out, "--passphrase-file", pass, "--kdf", "test",
		"--boot-program", helloEFI, "--uefi-key", key, "--uefi-cert", crt}
	mustSpine(t, epoch, args...)
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	esp, err := provision.Partition(f, provision.ESPPartition)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if typ, _ := disk.ParseGUID(disk.EFISystem); esp.Type != typ || esp.Index != 1 {
		t.Errorf("ESP is partition %d of type %s", esp.Index, disk.FormatGUID(esp.Type))
	}
	vol := filepath.Join(dir, "esp.img")
	b := read(t, out)[esp.Start : esp.Start+esp.Size]
	if err := os.WriteFile(vol, b, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(mtype, "-i", vol, "::/EFI/BOOT/BOOTX64.EFI")
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	prog, err := cmd.Output()
	if err != nil {
		t.Fatalf("mtype: %v", err)
	}
	signed := filepath.Join(dir, "BOOTX64.EFI")
	if err := os.WriteFile(signed, prog, 0o644); err != nil {
		t.Fatal(err)
	}
	if o, err := exec.Command(sbverify, "--cert", crt, signed).CombinedOutput(); err != nil {
		t.Errorf("sbverify of the installed boot program: %v\n%s", err, o)
	}
	// Reproducible, ESP included (the disk's path seeds its GUIDs, so the same path again).
	mustSpine(t, epoch, args...)
	if !bytes.Equal(b, read(t, out)[esp.Start:esp.Start+esp.Size]) {
		t.Error("the EFI system partition differs between two identical runs")
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--boot-program", helloEFI}, "needs --uefi-key and --uefi-cert"},
		{[]string{"--uefi-key", key, "--uefi-cert", crt}, "give them with --pub"},
		{[]string{"--uefi-key", key}, "go together"},
		{[]string{"--boot-program", pass, "--uefi-key", key, "--uefi-cert", crt}, "not a signable PE"},
		{[]string{"--boot-program", helloEFI, "--uefi-key", filepath.Join(dir, "spine.key"), "--uefi-cert", crt}, "not an RSA key"},
		{[]string{"--boot-program", helloEFI, "--uefi-key", key, "--uefi-cert", crt, "--esp-size", "16MiB"}, "EFI system partition"},
	} {
		o := filepath.Join(dir, "bad.img")
		r := spine(t, nil, append([]string{"disk", "--a", d.img, "--out", o, "--passphrase-file", pass, "--kdf", "test"}, c.args...)...)
		if r.code != 1 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("disk %v: %v, want %q", c.args, r, c.want)
		}
		if _, err := os.Stat(o); err == nil {
			t.Errorf("disk %v wrote a disk", c.args)
		}
	}
}

// A firmware boot takes nothing from the host but the disk: kernel, initramfs and command line
// flags are refused, and so is a variable store that is not one.
func TestVMFirmwareFlags(t *testing.T) {
	dir := t.TempDir()
	diskPath := filepath.Join(dir, "disk.img")
	writeFile(t, diskPath, "disk", 0o644)
	vars := filepath.Join(dir, "vars.fd")
	if err := os.WriteFile(vars, read(t, ovmf.VarsTemplate), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--uefi-vars", vars, "--initrd", "x"}, "do not apply"},
		{[]string{"--uefi-vars", vars, "--kernel", "x"}, "do not apply"},
		{[]string{"--uefi-vars", vars, "--append", "quiet"}, "do not apply"},
		{[]string{"--uefi-vars", diskPath}, "not an EDK2 authenticated variable store"},
	} {
		r := spine(t, nil, append([]string{"vm", "--disk", diskPath}, c.args...)...)
		if r.code != 1 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("vm %v: %v, want %q", c.args, r, c.want)
		}
	}
	if r := spine(t, nil, "vm", "--disk", diskPath); r.code != 1 || !strings.Contains(r.stderr, "through UEFI firmware") {
		t.Errorf("vm without --initrd or --uefi-vars: %v, want the firmware default explained", r)
	}
}
