// Package manifest defines the signed description of a Spine image: what it is, which version,
// and the dm-verity parameters and root hash that pin every byte of its filesystem.
//
// The manifest is JSON. Its exact bytes are what the Ed25519 signature covers, so the encoder
// is canonical (fixed field order, no whitespace) and the decoder is strict (unknown fields,
// trailing data and out-of-range values are errors).
package manifest

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sync"
)

// FormatVersion is the only manifest format this code reads and writes.
const FormatVersion = 1

// Constitution is the version of the law a Spine is built under.
const Constitution = "0.1"

// KernelPath is where a Spine carries its kernel image (bzImage with the EFI stub), relative to
// the Spine's root.
const KernelPath = "boot/vmlinuz"

// MaxSize bounds a manifest; anything larger is refused before it is parsed.
const MaxSize = 64 << 10

// ErrNotCanonical means the manifest bytes decode but are not what Marshal writes (another key
// order or case, a repeated key, whitespace, other escapes).
var ErrNotCanonical = errors.New("decode manifest: not in canonical form")

// Manifest describes one Spine image.
type Manifest struct {
	Format       int    `json:"format"`
	Name         string `json:"name"`
	Version      uint64 `json:"version"`
	Constitution string `json:"constitution"`
	Kernel       string `json:"kernel"`
	// KernelSHA256 is the hash of the kernel image the Spine carries at KernelPath, the kernel
	// stage 0 starts for this slot; empty for a Spine that carries none (it boots only under a
	// kernel the host hands QEMU).
	KernelSHA256 string `json:"kernel_sha256,omitempty"`
	// Bay0SHA256 is the hash of the Spine's /bin/bay0. A stage 1 whose own binary has this hash
	// (its initramfs says so) governs without starting the Spine's bay0 again; empty in a
	// Spine built before the field, whose bay0 is always started.
	Bay0SHA256    string   `json:"bay0_sha256,omitempty"`
	BuildTime     int64    `json:"build_time"`
	HashAlgorithm string   `json:"hash_algorithm"`
	DataBlockSize uint32   `json:"data_block_size"`
	HashBlockSize uint32   `json:"hash_block_size"`
	DataBlocks    uint64   `json:"data_blocks"`
	HashOffset    uint64   `json:"hash_offset"`
	HashSize      uint64   `json:"hash_size"`
	Salt          string   `json:"salt"`
	UUID          string   `json:"uuid"`
	RootHash      string   `json:"root_hash"`
	Personas      []string `json:"personas"`
	Sources       []Source `json:"sources,omitempty"`
}

// Source records where a persona's tree came from (a digest for OCI images, package versions
// for Debian packages), so that an image says what it contains.
type Source struct {
	Persona string `json:"persona"`
	Kind    string `json:"kind"`
	Ref     string `json:"ref"`
}

// The patterns are compiled on first use, not at every start of bay0: under TCG, compiling
// them cost each start (stage 1, every persona-init) tens of milliseconds.
var (
	nameRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z][a-z0-9._-]{0,63}$`) })
	hexRE  = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[0-9a-f]*$`) })
	uuidRE = sync.OnceValue(func() *regexp.Regexp {
		return regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	})
)

// Marshal renders the canonical bytes that are signed.
func (m Manifest) Marshal() ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// Parse decodes a manifest strictly and validates it. Only the canonical bytes Marshal writes
// are accepted.
func Parse(data []byte) (Manifest, error) {
	if len(data) > MaxSize {
		return Manifest{}, fmt.Errorf("manifest is %d bytes, more than %d", len(data), MaxSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return Manifest{}, fmt.Errorf("decode manifest: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Manifest{}, errors.New("decode manifest: trailing data after the JSON object")
	}
	if err := m.Validate(); err != nil {
		return Manifest{}, err
	}
	// encoding/json matches keys case-insensitively and lets a repeated key win, so the same
	// signed bytes could mean one thing here and another to a different JSON reader. Only the
	// canonical encoding has a single meaning; anything else was not written by Marshal.
	canon, err := m.Marshal()
	if err != nil {
		return Manifest{}, err
	}
	if !bytes.Equal(canon, data) {
		return Manifest{}, ErrNotCanonical
	}
	return m, nil
}

// Validate checks every field for range and self-consistency.
func (m Manifest) Validate() error {
	switch {
	case m.Format != FormatVersion:
		return fmt.Errorf("manifest format %d is not supported (want %d)", m.Format, FormatVersion)
	case !nameRE().MatchString(m.Name):
		return fmt.Errorf("manifest name %q must match %s", m.Name, nameRE())
	case m.Version == 0:
		return errors.New("manifest version must be at least 1")
	case m.Constitution == "":
		return errors.New("manifest constitution is empty")
	case m.HashAlgorithm != "sha256":
		return fmt.Errorf("manifest hash_algorithm %q is not sha256", m.HashAlgorithm)
	case m.DataBlockSize != 4096 || m.HashBlockSize != 4096:
		return fmt.Errorf("manifest block sizes %d/%d are not 4096/4096", m.DataBlockSize, m.HashBlockSize)
	case m.DataBlocks == 0 || m.DataBlocks > 1<<40/4096:
		return fmt.Errorf("manifest data_blocks %d is out of range", m.DataBlocks)
	case m.HashOffset != m.DataBlocks*uint64(m.DataBlockSize):
		return fmt.Errorf("manifest hash_offset %d does not follow the %d data blocks", m.HashOffset, m.DataBlocks)
	case m.HashSize == 0 || m.HashSize%uint64(m.HashBlockSize) != 0 || m.HashSize > m.HashOffset:
		return fmt.Errorf("manifest hash_size %d is out of range", m.HashSize)
	case len(m.RootHash) != 64 || !hexRE().MatchString(m.RootHash):
		return fmt.Errorf("manifest root_hash %q is not 64 lower-case hex digits", m.RootHash)
	case len(m.Salt) > 512 || len(m.Salt)%2 != 0 || !hexRE().MatchString(m.Salt):
		return fmt.Errorf("manifest salt %q is not at most 256 bytes of lower-case hex", m.Salt)
	case !uuidRE().MatchString(m.UUID):
		return fmt.Errorf("manifest uuid %q is not a lower-case UUID", m.UUID)
	case m.KernelSHA256 != "" && (len(m.KernelSHA256) != 64 || !hexRE().MatchString(m.KernelSHA256)):
		return fmt.Errorf("manifest kernel_sha256 %q is not 64 lower-case hex digits", m.KernelSHA256)
	case m.Bay0SHA256 != "" && (len(m.Bay0SHA256) != 64 || !hexRE().MatchString(m.Bay0SHA256)):
		return fmt.Errorf("manifest bay0_sha256 %q is not 64 lower-case hex digits", m.Bay0SHA256)
	}
	for _, p := range m.Personas {
		if !nameRE().MatchString(p) {
			return fmt.Errorf("manifest persona name %q must match %s", p, nameRE())
		}
	}
	return nil
}

// RootHashBytes decodes the root hash.
func (m Manifest) RootHashBytes() []byte { b, _ := hex.DecodeString(m.RootHash); return b }

// SaltBytes decodes the salt.
func (m Manifest) SaltBytes() []byte { b, _ := hex.DecodeString(m.Salt); return b }

// UUIDBytes decodes the verity superblock UUID.
func (m Manifest) UUIDBytes() [16]byte {
	var u [16]byte
	b, _ := hex.DecodeString(m.UUID[0:8] + m.UUID[9:13] + m.UUID[14:18] + m.UUID[19:23] + m.UUID[24:])
	copy(u[:], b)
	return u
}

// FormatUUID renders 16 bytes as a lower-case UUID string.
func FormatUUID(u [16]byte) string {
	h := hex.EncodeToString(u[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
