// Package provision writes a whole machine disk: the GPT with the bay0-state, spine-a, spine-b
// and persist partitions, the Spine images in their slots, the first boot-control record and
// the encrypted persist container. It works on plain files, without root, loop devices or
// device-mapper.
package provision

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"alpinespine.org/spine/internal/bay0/persist"
	"alpinespine.org/spine/internal/format/bootctl"
	"alpinespine.org/spine/internal/format/disk"
	"alpinespine.org/spine/internal/format/image"
	"alpinespine.org/spine/internal/format/manifest"
	"alpinespine.org/spine/internal/host/persistfmt"
	"alpinespine.org/spine/internal/host/uefi/fat"
)

// Partition names; bay0 finds partitions by these names, never by their order.
const (
	StatePartition   = "bay0-state"
	PersistPartition = persist.Partition
	// ESPPartition is the EFI system partition, where the firmware finds the boot program.
	ESPPartition = "esp"
)

// DefaultESPSize is the EFI system partition's size unless Options say otherwise: FAT32's
// minimum rounded up, room for two boot programs of a kernel with its initramfs.
const DefaultESPSize = 64 * mib

// BootProgramPath is where UEFI firmware looks for the boot program of a disk it has no boot
// entry for (UEFI specification, "Removable Media Boot Behavior"): \EFI\BOOT\BOOTX64.EFI on
// x86-64. The disk needs no firmware boot entry, so it boots the same on any machine.
const BootProgramPath = "EFI/BOOT/BOOTX64.EFI"

// SlotPartition names the partition of slot 0 (A) or 1 (B).
func SlotPartition(slot int) string { return "spine-" + bootctl.SlotName(slot) }

// Options describe a machine disk.
type Options struct {
	Out         string
	A, B        string // image paths; B may be empty
	SlotSize    int64  // bytes per slot; 0 picks room for twice the larger image
	PersistSize int64  // bytes; at least persistfmt.MinSize when Passphrase is set
	// Passphrase, if set, formats the persist partition as LUKS2 over ext4 with KDF (zero:
	// persistfmt.DefaultKDF). Without it the partition stays zeros, and bay0 refuses to boot
	// such a machine: only tests of that refusal want it. The caller wipes the slice.
	Passphrase []byte
	KDF        persistfmt.KDF
	Seed       string // makes GUIDs reproducible
	// ESP, if set, adds an EFI system partition (FAT32, the first partition) holding these
	// files, e.g. the signed boot program at BootProgramPath.
	ESP []fat.File
	// ESPSize is the EFI system partition's size in bytes; 0 means DefaultESPSize.
	ESPSize int64
	// Time stamps the files of the EFI system partition.
	Time time.Time
	// Unchecked lays out images that do not even open (tests of the boot law write damaged
	// images on purpose); the slot then records the file size and version 0.
	Unchecked bool
}

const mib = 1 << 20

// Create writes the disk. The file appears only when it is complete.
func Create(o Options) error {
	if o.A == "" {
		return fmt.Errorf("slot A needs an image")
	}
	var inits [2]*bootctl.SlotInit
	var sizes [2]int64
	for i, p := range []string{o.A, o.B} {
		if p == "" {
			continue
		}
		init, err := slotInit(p, o.Unchecked)
		if err != nil {
			return err
		}
		inits[i] = &init
		sizes[i] = int64(init.ImageSize)
	}
	slot := o.SlotSize
	if slot == 0 {
		slot = roundMiB(2 * max(sizes[0], sizes[1]))
		slot = max(slot, 16*mib)
	}
	if slot%mib != 0 {
		return fmt.Errorf("slot size %d is not a whole number of MiB", slot)
	}
	for i, s := range sizes {
		if s > slot {
			return fmt.Errorf("image for slot %s is %d bytes, larger than the %d-byte slot", bootctl.SlotName(i), s, slot)
		}
	}
	persist := o.PersistSize
	if persist == 0 {
		persist = 64 * mib
	}
	tmp := o.Out + ".tmp"
	specs := []disk.PartitionSpec{
		{Name: StatePartition, Size: 1 * mib},
		{Name: SlotPartition(0), Size: slot},
		{Name: SlotPartition(1), Size: slot},
		{Name: PersistPartition, Size: roundMiB(persist)},
	}
	espSize := o.ESPSize
	if espSize == 0 {
		espSize = DefaultESPSize
	}
	if o.ESP != nil {
		if espSize < fat.MinSize || espSize%mib != 0 {
			return fmt.Errorf("EFI system partition of %d bytes: want a whole number of MiB, at least %d", espSize, int64(fat.MinSize))
		}
		specs = append([]disk.PartitionSpec{{Name: ESPPartition, Size: espSize, Type: disk.EFISystem}}, specs...)
	}
	parts, err := disk.Create(tmp, specs, o.Seed)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			os.Remove(tmp)
		}
	}()
	f, err := os.OpenFile(tmp, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open disk: %w", err)
	}
	defer f.Close()
	for i, p := range []string{o.A, o.B} {
		if p == "" {
			continue
		}
		part, err := disk.Find(parts, SlotPartition(i))
		if err != nil {
			return err
		}
		if err := copyInto(f, part.Start, p); err != nil {
			return fmt.Errorf("write slot %s: %w", bootctl.SlotName(i), err)
		}
	}
	if o.ESP != nil {
		if err := writeESP(f, parts, o); err != nil {
			return err
		}
	}
	if o.Passphrase != nil {
		if err := formatPersist(f, parts, o); err != nil {
			return err
		}
	}
	state, err := disk.Find(parts, StatePartition)
	if err != nil {
		return err
	}
	rec := bootctl.Initial(inits[0], inits[1])
	if err := WriteRecord(f, state, rec); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync disk: %w", err)
	}
	if err := os.Rename(tmp, o.Out); err != nil {
		return fmt.Errorf("rename disk into place: %w", err)
	}
	ok = true
	return nil
}

// slotInit describes an image for the first record.
func slotInit(p string, unchecked bool) (bootctl.SlotInit, error) {
	im, f, err := image.OpenFile(p)
	if err == nil {
		f.Close()
		var m manifest.Manifest
		if m, err = im.Manifest(); err == nil {
			return bootctl.SlotInit{Version: m.Version, ImageSize: im.Footer.ImageSize}, nil
		}
		err = fmt.Errorf("image %q: %w", p, err)
	}
	if !unchecked {
		return bootctl.SlotInit{}, err
	}
	st, serr := os.Stat(p)
	if serr != nil {
		return bootctl.SlotInit{}, serr
	}
	return bootctl.SlotInit{ImageSize: uint64(st.Size())}, nil
}

// writeESP writes the FAT32 file system of the EFI system partition in place.
func writeESP(f *os.File, parts []disk.Partition, o Options) error {
	part, err := disk.Find(parts, ESPPartition)
	if err != nil {
		return err
	}
	err = fat.Write(io.NewOffsetWriter(f, part.Start), fat.Volume{Size: part.Size, HiddenSectors: uint32(part.Start / disk.SectorSize),
		Label: "SPINE ESP", Seed: o.Seed, Time: o.Time, Files: o.ESP})
	if err != nil {
		return fmt.Errorf("write EFI system partition: %w", err)
	}
	return nil
}

// formatPersist formats the persist container beside the disk and copies it in.
func formatPersist(f *os.File, parts []disk.Partition, o Options) error {
	part, err := disk.Find(parts, PersistPartition)
	if err != nil {
		return err
	}
	kdf := o.KDF
	if kdf == (persistfmt.KDF{}) {
		kdf = persistfmt.DefaultKDF()
	}
	img := o.Out + ".persist.tmp"
	defer os.Remove(img)
	if err := persistfmt.Format(context.Background(), img, part.Size, o.Passphrase, kdf); err != nil {
		return err
	}
	if err := copyInto(f, part.Start, img); err != nil {
		return fmt.Errorf("write persist partition: %w", err)
	}
	return nil
}

// WriteRecord writes both copies of a fresh record (a new disk has no older copy to keep).
func WriteRecord(f io.WriterAt, state disk.Partition, rec bootctl.Record) error {
	b, err := rec.MarshalBinary()
	if err != nil {
		return err
	}
	for c := 0; c < 2; c++ {
		if _, err := f.WriteAt(b, state.Start+int64(c)*bootctl.RecordSize); err != nil {
			return fmt.Errorf("write boot-control record: %w", err)
		}
	}
	return nil
}

// Record reads the boot-control record of a disk image file.
func Record(path string) (bootctl.Record, error) {
	f, err := os.Open(path)
	if err != nil {
		return bootctl.Record{}, fmt.Errorf("open disk: %w", err)
	}
	defer f.Close()
	state, err := Partition(f, StatePartition)
	if err != nil {
		return bootctl.Record{}, err
	}
	rec, _, err := bootctl.Load(io.NewSectionReader(f, state.Start, state.Size))
	return rec, err
}

// Partition finds a named partition of a disk image file.
func Partition(f *os.File, name string) (disk.Partition, error) {
	st, err := f.Stat()
	if err != nil {
		return disk.Partition{}, fmt.Errorf("stat disk: %w", err)
	}
	parts, err := disk.ReadPartitions(f, st.Size())
	if err != nil {
		return disk.Partition{}, err
	}
	return disk.Find(parts, name)
}

func copyInto(dst *os.File, off int64, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	_, err = io.Copy(io.NewOffsetWriter(dst, off), in)
	return err
}

func roundMiB(n int64) int64 { return (n + mib - 1) / mib * mib }
