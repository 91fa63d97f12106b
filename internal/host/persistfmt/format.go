// Package persistfmt formats a machine's persist partition on the host: an ext4 filesystem
// made in a plain file (mkfs.ext4 -d) and encrypted in place offline as LUKS2 with
// cryptsetup, with the key derivation cost the operator chooses. bay0 opens what it writes
// with internal/bay0/persist.
package persistfmt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"alpinespine.org/spine/internal/bay0/persist"
	"alpinespine.org/spine/internal/format/luks2"
)

// Container layout. Format encrypts an ext4 image in place; cryptsetup makes room for the
// LUKS2 header by shifting the data, which needs the filesystem to be ReduceSize smaller
// than the partition. The header then takes ReduceSize/2 (metadata and keyslots), and the
// encrypted data segment runs to the end of the partition.
const (
	ReduceSize = 16 << 20
	// MinSize is the smallest partition Format accepts: the header plus 16 MiB of ext4.
	MinSize = ReduceSize + 16<<20
	// SectorSize is the encryption sector, the ext4 block size.
	SectorSize = luks2.SectorSize
	// Cipher is the data and keyslot cipher (AES-256 in XTS mode: a 512-bit key).
	Cipher  = luks2.Cipher
	keyBits = 8 * luks2.KeySize
)

// Supported key derivation functions.
const (
	KDFArgon2id = luks2.KDFArgon2id
	KDFArgon2i  = luks2.KDFArgon2i
	KDFPBKDF2   = luks2.KDFPBKDF2
)

// KDF is the cost of the keyslot's key derivation Format sets up: what an attacker pays for each guess, and
// what the machine pays once per unlock. bay0 derives the key in its own memory on the
// target, so MemoryKiB must fit the target's RAM with room to spare.
type KDF struct {
	// Type is KDFArgon2id, KDFArgon2i or KDFPBKDF2.
	Type string
	// MemoryKiB is argon2's memory cost (cryptsetup --pbkdf-memory); unused for pbkdf2.
	MemoryKiB int
	// Iterations, if nonzero, fixes the time cost (--pbkdf-force-iterations): argon2
	// passes, or pbkdf2 iterations. Zero lets cryptsetup benchmark this host for IterTime;
	// the target may well be slower than the host.
	Iterations int
	// IterTime is the unlock time cryptsetup aims for on this host (--iter-time) when
	// Iterations is zero.
	IterTime time.Duration
	// Parallel is argon2's number of lanes (--pbkdf-parallel).
	Parallel int
}

// DefaultKDF is argon2id with 128 MiB, four passes and one lane: cryptsetup's minimum time
// cost at a memory cost that bay0 accepts on a 512 MiB machine (at most half its memory, see
// DefaultLimits). The time cost is fixed rather than benchmarked because the host that formats
// is not the machine that unlocks. Raise both for machines with more memory.
func DefaultKDF() KDF {
	return KDF{Type: KDFArgon2id, MemoryKiB: 128 << 10, Iterations: 4, Parallel: 1}
}

// TestKDF is as cheap as cryptsetup allows for argon2id (8 MiB, 4 passes): for tests and
// throwaway machines only.
func TestKDF() KDF {
	return KDF{Type: KDFArgon2id, MemoryKiB: 8 << 10, Iterations: 4, Parallel: 1}
}

// Limits cryptsetup (and bay0's memory) put on the cost parameters.
const (
	minArgonMemoryKiB = luks2.MinArgonMemoryKiB
	maxArgonMemoryKiB = luks2.MaxArgonMemoryKiB
	minArgonPasses    = 4
	minPBKDF2Iter     = 1000
	maxParallel       = luks2.MaxParallel
)

// args renders the KDF as cryptsetup options.
func (k KDF) args() ([]string, error) {
	a := []string{"--pbkdf", k.Type}
	switch k.Type {
	case KDFArgon2id, KDFArgon2i:
		if k.MemoryKiB < minArgonMemoryKiB || k.MemoryKiB > maxArgonMemoryKiB {
			return nil, fmt.Errorf("kdf memory %d KiB is outside %d KiB..%d KiB", k.MemoryKiB, minArgonMemoryKiB, maxArgonMemoryKiB)
		}
		if k.Parallel < 1 || k.Parallel > maxParallel {
			return nil, fmt.Errorf("kdf parallelism %d is outside 1..%d", k.Parallel, maxParallel)
		}
		if k.Iterations != 0 && k.Iterations < minArgonPasses {
			return nil, fmt.Errorf("kdf time cost %d is below %d passes", k.Iterations, minArgonPasses)
		}
		a = append(a, "--pbkdf-memory", strconv.Itoa(k.MemoryKiB), "--pbkdf-parallel", strconv.Itoa(k.Parallel))
	case KDFPBKDF2:
		if k.Iterations != 0 && k.Iterations < minPBKDF2Iter {
			return nil, fmt.Errorf("kdf iterations %d are below %d", k.Iterations, minPBKDF2Iter)
		}
		a = append(a, "--hash", "sha256")
	default:
		return nil, fmt.Errorf("unknown kdf %q (want %s, %s or %s)", k.Type, KDFArgon2id, KDFArgon2i, KDFPBKDF2)
	}
	switch {
	case k.Iterations > 0:
		a = append(a, "--pbkdf-force-iterations", strconv.Itoa(k.Iterations))
	case k.IterTime >= time.Millisecond:
		a = append(a, "--iter-time", strconv.FormatInt(k.IterTime.Milliseconds(), 10))
	default:
		return nil, errors.New("kdf needs a time cost: iterations or an iteration time of at least 1ms")
	}
	return a, nil
}

// tool is an external program Format runs, with the Debian package that provides it.
type tool struct {
	Name, Package string
}

// tools are the programs Format needs on the host.
var tools = []tool{{"mkfs.ext4", "e2fsprogs"}, {"cryptsetup", "cryptsetup-bin"}}

// Format writes out, a file of size bytes holding a LUKS2 container (Cipher, 4096-byte
// sectors, one keyslot for passphrase with cost kdf) over an empty ext4 filesystem whose root
// belongs to root with mode RootMode. It needs neither root nor device-mapper: the
// filesystem is made in a plain file (mkfs.ext4 -d) and encrypted in place offline
// (cryptsetup reencrypt --encrypt). The passphrase reaches cryptsetup on a pipe, never on
// its command line; the caller keeps ownership of the slice (and wipes it).
//
// The result is not reproducible: the volume key, the salts and the filesystem UUID are
// random, as they must be. out appears only when it is complete.
func Format(ctx context.Context, out string, size int64, passphrase []byte, kdf KDF) error {
	if size < MinSize || size%SectorSize != 0 {
		return fmt.Errorf("format persist: size %d is not a multiple of %d of at least %d bytes", size, SectorSize, MinSize)
	}
	if err := persist.CheckPassphrase(passphrase); err != nil {
		return fmt.Errorf("format persist: %w", err)
	}
	kdfArgs, err := kdf.args()
	if err != nil {
		return fmt.Errorf("format persist: %w", err)
	}
	for _, t := range tools {
		if _, err := exec.LookPath(t.Name); err != nil {
			return fmt.Errorf("format persist: %s is missing (install the Debian package %s): %w", t.Name, t.Package, err)
		}
	}
	dir, err := os.MkdirTemp(filepath.Dir(out), ".persist-*")
	if err != nil {
		return fmt.Errorf("format persist: %w", err)
	}
	defer os.RemoveAll(dir)
	root := filepath.Join(dir, "root")
	if err := os.Mkdir(root, persist.RootMode); err != nil {
		return fmt.Errorf("format persist: %w", err)
	}
	if err := os.Chmod(root, persist.RootMode); err != nil { // the umask may have narrowed it
		return fmt.Errorf("format persist: %w", err)
	}
	img := filepath.Join(dir, "persist.img")
	f, err := os.Create(img)
	if err != nil {
		return fmt.Errorf("format persist: %w", err)
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("format persist: size image: %w", err)
	}
	mkfs := mkfsArgs(root, img, size-ReduceSize)
	if err := run(ctx, nil, "mkfs.ext4", mkfs...); err != nil {
		return fmt.Errorf("format persist: %w", err)
	}
	// --key-file=- reads the passphrase from stdin up to its end, newline included, so
	// exactly the passphrase bytes are sent. --disable-locks: no /run/cryptsetup as non-root.
	enc := append([]string{"reencrypt", "--encrypt", "--type", "luks2", "--batch-mode", "--disable-locks",
		"--cipher", Cipher, "--key-size", strconv.Itoa(keyBits), "--sector-size", strconv.Itoa(SectorSize),
		"--reduce-device-size", strconv.Itoa(ReduceSize/1024) + "k", "--label", persist.Partition,
		"--key-file=-"}, kdfArgs...)
	enc = append(enc, img)
	if err := run(ctx, passphrase, "cryptsetup", enc...); err != nil {
		return fmt.Errorf("format persist: %w", err)
	}
	if err := os.Rename(img, out); err != nil {
		return fmt.Errorf("format persist: %w", err)
	}
	return nil
}

// Reserve is the space of /persist only bay0 may use: ext4's reserved blocks, which only
// root in the initial user namespace (CAP_SYS_RESOURCE) can allocate, never a persona's mapped
// ids. bay0's own writes (the boot counter) use it when the personas' space is full, so they
// never depend on space the personas share. It is ReserveMin or 1% of the filesystem,
// whichever is larger.
const ReserveMin = 1 << 20

// mkfsArgs are mkfs.ext4's arguments for a filesystem of fsSize bytes in img, populated from
// root:
//   - -O quota,project and quotatype=prjquota: project quotas, kept by the kernel in hidden
//     inodes; bay0 mounts with prjquota and gives each persona's subtree a project and a hard
//     limit (persist.EnsureSubtree). -I 256: the project id lives in the larger inode.
//   - -i: one inode per persist.InodeRatio bytes, the ratio a persona's inode limit follows.
//   - -m: Reserve, as a percentage of the filesystem.
//   - lazy_*_init=0: the guest kernel has nothing left to zero in the background.
//   - root_owner: mkfs -d would otherwise give the root to whoever runs spine.
func mkfsArgs(root, img string, fsSize int64) []string {
	reserve := max(float64(ReserveMin)*100/float64(fsSize), 1)
	return []string{"-q", "-F", "-t", "ext4", "-b", strconv.Itoa(SectorSize), "-I", "256",
		"-i", strconv.Itoa(persist.InodeRatio), "-m", strconv.FormatFloat(reserve, 'f', 4, 64),
		"-O", "quota,project", "-L", persist.Partition, "-d", root,
		"-E", "quotatype=prjquota,root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0",
		img, strconv.FormatInt(fsSize/SectorSize, 10)}
}

// run runs a tool with stdin, in the C locale, and returns its stderr in the error.
func run(ctx context.Context, stdin []byte, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, args[0], err, bytes.TrimSpace(stderr.Bytes()))
	}
	return nil
}
