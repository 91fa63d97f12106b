package persist

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/bay0/dm"
	"alpinespine.org/spine/internal/bay0/halt"
	"alpinespine.org/spine/internal/format/event"
)

// MountFlags are the flags /persist is mounted with: no device nodes, no set-uid, no
// execution, whatever the filesystem holds (Article IV §2).
const MountFlags = unix.MS_NODEV | unix.MS_NOSUID | unix.MS_NOEXEC

// Activate maps the unsealed volume with dm-crypt as MapperName and returns the device node.
// It wipes the volume key whatever happens: after Activate the key is only in the kernel.
func Activate(v *Volume) (string, error) {
	defer v.Wipe()
	return dm.MapCrypt(dm.Crypt{
		Name:       MapperName,
		UUID:       "CRYPT-LUKS2-" + strings.ReplaceAll(v.UUID, "-", "") + "-" + MapperName,
		Device:     v.Device,
		Offset:     v.Offset,
		Length:     v.Length,
		Cipher:     v.Cipher,
		IVTweak:    v.IVTweak,
		SectorSize: v.SectorSize,
		Key:        v.Key,
	})
}

// MountData are the ext4 options /persist is mounted with: project quotas enforced, so that
// every persona's subtree has its hard limit (EnsureSubtree).
const MountData = "prjquota"

// Mount mounts the ext4 filesystem on dev at Root with MountFlags and MountData and gives its
// root back to bay0 (owner 0:0, RootMode), whatever it was. It returns the mountinfo entry,
// which proves the flags the kernel actually applied. If anything fails, dev is unmounted
// again.
func Mount(dev string) (MountEntry, error) {
	if err := unix.Mount(dev, Root, "ext4", MountFlags, MountData); err != nil {
		return MountEntry{}, fmt.Errorf("mount %s on %s: %w", dev, Root, err)
	}
	e, err := mountedEntry()
	if err == nil && !e.Secure() {
		err = fmt.Errorf("%s is mounted without nodev,nosuid,noexec: %s", Root, e.Line)
	}
	if err == nil && !quotaEnforced(e) {
		err = fmt.Errorf("%s is mounted without project quotas: %s", Root, e.Line)
	}
	if err == nil {
		err = ownRoot()
	}
	if err != nil {
		unix.Unmount(Root, 0)
		return MountEntry{}, err
	}
	return e, nil
}

// quotaEnforced reports whether the filesystem's own options (mountinfo's last field) include
// prjquota: the kernel enforces project quotas.
func quotaEnforced(e MountEntry) bool {
	f := strings.Fields(e.Line)
	return len(f) > 0 && strings.Contains(","+f[len(f)-1]+",", ","+MountData+",")
}

// ownRoot makes the filesystem root bay0's: root-owned, mode RootMode.
func ownRoot() error {
	if err := unix.Chown(Root, 0, 0); err != nil {
		return fmt.Errorf("chown %s: %w", Root, err)
	}
	if err := unix.Chmod(Root, RootMode); err != nil {
		return fmt.Errorf("chmod %s: %w", Root, err)
	}
	return nil
}

// Mounted reports whether /persist is mounted with nodev, nosuid and noexec; status uses it.
func Mounted() bool {
	e, err := mountedEntry()
	return err == nil && e.Secure()
}

func mountedEntry() (MountEntry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return MountEntry{}, fmt.Errorf("open mountinfo: %w", err)
	}
	defer f.Close()
	return FindMount(f, Root)
}

// Close syncs and unmounts /persist and removes the dm-crypt mapping, which drops the key
// from the kernel. What is not open is skipped, so Close is safe at any stage of a boot,
// and it tries every step even if one fails.
func Close() error {
	unix.Sync()
	var errs []error
	if _, err := mountedEntry(); err == nil {
		if err := unix.Unmount(Root, 0); err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w", Root, err))
		}
	}
	if mapped() {
		if err := dm.Remove(MapperName); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// CloseHook is the halt hook that closes /persist before the machine goes down (a clean
// poweroff or reboot; a watchdog reset or a power cut runs no hook, and ext4's journal covers
// those). It prints ClosedLine when it closed something.
func CloseHook(console io.Writer) halt.Hook {
	return func(halt.Action, string) error {
		was := Mounted() || mapped()
		if err := Close(); err != nil {
			return err
		}
		if was {
			fmt.Fprintln(console, ClosedLine)
			fmt.Fprintln(console, event.New(event.PersistClosed))
		}
		return nil
	}
}

// mapped reports whether the mapping exists. bay0 runs no udev, so /dev/mapper is empty;
// sysfs names every device-mapper device.
func mapped() bool {
	ents, err := os.ReadDir("/sys/block")
	if err != nil {
		return false
	}
	for _, e := range ents {
		b, err := os.ReadFile("/sys/block/" + e.Name() + "/dm/name")
		if err == nil && strings.TrimSpace(string(b)) == MapperName {
			return true
		}
	}
	return false
}
