package vm

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"time"
)

// probeTimeout bounds the KVM probe. A working KVM runs the probe guest in about 0.1 s; on
// these machines /dev/kvm opens and the probe does finish, but only after ~3 s, and a Linux
// guest then makes no progress at all. A slow probe therefore means "use TCG".
const probeTimeout = time.Second

// The probe guest reports success by writing probeValue to QEMU's isa-debug-exit port, which
// makes QEMU exit with status probeValue<<1 | 1.
const (
	probePort   = 0xf4
	probeValue  = 0x2a
	probeStatus = probeValue<<1 | 1
)

// DetectAccel returns AccelKVM if /dev/kvm opens read-write and a tiny probe guest runs
// under KVM within a second, else AccelTCG. It starts one short QEMU process, so a caller
// booting many machines should call it once and set Config.Accel.
func DetectAccel(ctx context.Context, qemu string) string {
	return detectAccel(ctx, qemu, "/dev/kvm", probeTimeout)
}

func detectAccel(ctx context.Context, qemu, kvmDev string, timeout time.Duration) string {
	f, err := os.OpenFile(kvmDev, os.O_RDWR, 0)
	if err != nil {
		return AccelTCG
	}
	f.Close()
	if ok, _ := probeKVM(ctx, qemu, timeout); ok {
		return AccelKVM
	}
	return AccelTCG
}

// probeKVM boots probeImage under KVM and reports whether it signalled success in time.
func probeKVM(ctx context.Context, qemu string, timeout time.Duration) (bool, error) {
	img, err := os.CreateTemp("", "vm-kvm-probe-*.bin")
	if err != nil {
		return false, err
	}
	defer os.Remove(img.Name())
	_, err = img.Write(probeImage())
	if cerr := img.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu,
		"-M", "pc", "-accel", "kvm", "-nodefaults", "-no-user-config", "-display", "none",
		"-device", "isa-debug-exit,iobase=0xf4,iosize=1", "-kernel", img.Name())
	cmd.SysProcAttr = sysProcAttr()
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == probeStatus {
		return true, nil
	}
	return false, err
}

// probeImage returns a Multiboot (v1) kernel using the "a.out kludge" header, which QEMU's
// -kernel loads at 1 MiB and enters in 32-bit protected mode. Its code writes probeValue
// to probePort and halts.
func probeImage() []byte {
	const (
		magic     = 0x1BADB002
		flagAOut  = 1 << 16 // load addresses come from the header, not from an ELF
		loadAddr  = 0x100000
		headerLen = 8 * 4
	)
	code := []byte{
		0xB0, probeValue, // mov al, probeValue
		0xE6, probePort, // out probePort, al
		0xFA,       // cli
		0xF4,       // hlt
		0xEB, 0xFD, // jmp back to hlt
	}
	hdr := []uint32{
		magic, flagAOut, -(magic + flagAOut) & 0xffffffff, // checksum: the three sum to 0
		loadAddr,             // header_addr: the header is the first thing loaded
		loadAddr,             // load_addr
		0,                    // load_end_addr: 0 loads the whole file
		0,                    // bss_end_addr: no bss
		loadAddr + headerLen, // entry_addr: the code right after the header
	}
	out := make([]byte, 0, headerLen+len(code))
	for _, w := range hdr {
		out = binary.LittleEndian.AppendUint32(out, w)
	}
	return append(out, code...)
}
