package vm

import (
	"slices"
	"strings"
	"testing"
)

func TestFirmwareArgs(t *testing.T) {
	t.Parallel()
	cfg := withDefaults(Config{Disk: "/d/disk.img", Firmware: &Firmware{Code: "/fw/code.fd", Vars: "/m/vars.fd"}})
	if err := validate(cfg); err != nil {
		t.Fatal(err)
	}
	a := buildArgs("qemu", cfg, AccelTCG)
	for _, want := range [][]string{
		{"-M", "q35,smm=on"},
		{"-global", "driver=cfi.pflash01,property=secure,value=on"},
		{"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=/fw/code.fd"},
		{"-drive", "if=pflash,format=raw,unit=1,file=/m/vars.fd"},
		{"-device", "i6300esb", "-action", "watchdog=reset"},
		{"-device", "virtio-blk-pci,drive=disk0"},
	} {
		if !hasSeq(a, want) {
			t.Errorf("args lack %q:\n%s", want, strings.Join(a, " "))
		}
	}
	// Nothing but the disk reaches the machine: no kernel, initrd or command line.
	for _, bad := range []string{"-kernel", "-initrd", "-append"} {
		if slices.Contains(a, bad) {
			t.Errorf("firmware boot passes %s:\n%s", bad, strings.Join(a, " "))
		}
	}
	for name, c := range map[string]Config{
		"kernel too":  {Kernel: "/k", Disk: "/d", Firmware: &Firmware{Code: "/c", Vars: "/v"}},
		"initrd too":  {Initrd: "/i", Disk: "/d", Firmware: &Firmware{Code: "/c", Vars: "/v"}},
		"cmdline too": {Cmdline: "quiet", Disk: "/d", Firmware: &Firmware{Code: "/c", Vars: "/v"}},
		"no disk":     {Firmware: &Firmware{Code: "/c", Vars: "/v"}},
		"no vars":     {Disk: "/d", Firmware: &Firmware{Code: "/c"}},
		"comma":       {Disk: "/d", Firmware: &Firmware{Code: "/c", Vars: "/v,x=y"}},
	} {
		if err := validate(withDefaults(c)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
