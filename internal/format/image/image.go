package image

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"alpinespine.org/spine/internal/format/keys"
	"alpinespine.org/spine/internal/format/manifest"
	"alpinespine.org/spine/internal/format/verity"
)

// Image is an opened Spine image whose footer has been checked. Nothing else is trusted yet:
// call Authenticate, then VerifyData (on the host) or hand the verity parameters to the kernel.
type Image struct {
	r             io.ReaderAt
	Footer        Footer
	ManifestBytes []byte
	Signature     []byte
}

// Open reads the footer at the end of the size bytes of r that hold the image (the file size,
// or the image size recorded for a slot) and the manifest and signature it points to.
func Open(r io.ReaderAt, size int64) (*Image, error) {
	if size < FooterSize {
		return nil, fmt.Errorf("%w: image is %d bytes, too short to hold a footer", ErrFooter, size)
	}
	fb := make([]byte, FooterSize)
	if _, err := r.ReadAt(fb, size-FooterSize); err != nil {
		return nil, fmt.Errorf("read footer: %w", err)
	}
	f, err := ParseFooter(fb)
	if err != nil {
		return nil, err
	}
	if f.ImageSize != uint64(size) {
		return nil, fmt.Errorf("%w: footer says the image is %d bytes but it is %d (truncated, or trailing data)", ErrFooter, f.ImageSize, size)
	}
	im := &Image{r: r, Footer: f,
		ManifestBytes: make([]byte, f.ManifestSize),
		Signature:     make([]byte, f.SignatureSize),
	}
	if _, err := r.ReadAt(im.ManifestBytes, int64(f.ManifestOffset)); err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	if _, err := r.ReadAt(im.Signature, int64(f.ManifestOffset)+int64(f.ManifestSize)); err != nil {
		return nil, fmt.Errorf("read signature: %w", err)
	}
	return im, nil
}

// Authenticate checks the signature over the manifest bytes against the trusted keys, then
// parses the manifest and checks that it agrees with the footer.
func (im *Image) Authenticate(trusted []ed25519.PublicKey) (manifest.Manifest, error) {
	if _, err := keys.Verify(trusted, im.ManifestBytes, im.Signature); err != nil {
		return manifest.Manifest{}, fmt.Errorf("check manifest signature: %w", err)
	}
	m, err := manifest.Parse(im.ManifestBytes)
	if err != nil {
		return manifest.Manifest{}, err
	}
	f := im.Footer
	if m.DataBlocks*uint64(m.DataBlockSize) != f.DataSize || m.HashOffset != f.HashOffset || m.HashSize != f.HashSize {
		return manifest.Manifest{}, fmt.Errorf("%w: footer disagrees with the signed manifest", ErrFooter)
	}
	if want := uint64(verity.HashAreaSize(VerityParams(m))); want != m.HashSize {
		return manifest.Manifest{}, fmt.Errorf("manifest hash_size %d, but %d data blocks need %d", m.HashSize, m.DataBlocks, want)
	}
	return m, nil
}

// VerifyData checks every data block and every hash block against the signed root hash.
func (im *Image) VerifyData(m manifest.Manifest, workers int) error {
	if im.r == nil {
		return errors.New("verify hash tree: the image was made from its parts and has no data")
	}
	data := io.NewSectionReader(im.r, 0, int64(im.Footer.DataSize))
	hash := io.NewSectionReader(im.r, int64(im.Footer.HashOffset), int64(im.Footer.HashSize))
	if err := verity.Verify(data, hash, VerityParams(m), m.RootHashBytes(), workers); err != nil {
		return fmt.Errorf("verify hash tree: %w", err)
	}
	return nil
}

// Check opens, authenticates and fully verifies an image.
func Check(r io.ReaderAt, size int64, trusted []ed25519.PublicKey, workers int) (manifest.Manifest, error) {
	im, err := Open(r, size)
	if err != nil {
		return manifest.Manifest{}, err
	}
	m, err := im.Authenticate(trusted)
	if err != nil {
		return manifest.Manifest{}, err
	}
	return m, im.VerifyData(m, workers)
}

// CheckFile is Check on a file, the whole file being the image.
func CheckFile(path string, trusted []ed25519.PublicKey, workers int) (manifest.Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return manifest.Manifest{}, fmt.Errorf("open image: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return manifest.Manifest{}, fmt.Errorf("stat image: %w", err)
	}
	return Check(f, st.Size(), trusted, workers)
}

// OpenFile opens an image file; the caller closes the returned file.
func OpenFile(path string) (*Image, *os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("open image: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("stat image: %w", err)
	}
	im, err := Open(f, st.Size())
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("image %q: %w", path, err)
	}
	return im, f, nil
}

// VerityParams are the hash tree parameters a manifest pins.
func VerityParams(m manifest.Manifest) verity.Params {
	return verity.Params{
		Algorithm:     m.HashAlgorithm,
		DataBlockSize: m.DataBlockSize,
		HashBlockSize: m.HashBlockSize,
		DataBlocks:    m.DataBlocks,
		Salt:          m.SaltBytes(),
		UUID:          m.UUIDBytes(),
	}
}

// Assembly is what Assemble needs besides the filesystem: the manifest's descriptive fields
// (the verity fields are filled in), the signing key, and the salt and UUID of the hash tree.
type Assembly struct {
	Manifest manifest.Manifest
	Key      ed25519.PrivateKey
	Salt     []byte
	UUID     [16]byte
	Workers  int
}

// Assemble writes the image at out from a SquashFS file: pads it to whole blocks, builds the
// hash tree, fills in and signs the manifest, and appends the footer. The file appears at out
// only when complete (written beside it, synced, renamed).
func Assemble(out, squashfs string, a Assembly) (manifest.Manifest, error) {
	tmp, err := os.CreateTemp(filepath.Dir(out), filepath.Base(out)+".tmp-*")
	if err != nil {
		return manifest.Manifest{}, fmt.Errorf("create image: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	m, err := assemble(tmp, squashfs, a)
	if err != nil {
		return manifest.Manifest{}, err
	}
	if err := tmp.Sync(); err != nil {
		return manifest.Manifest{}, fmt.Errorf("sync image: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return manifest.Manifest{}, fmt.Errorf("close image: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return manifest.Manifest{}, fmt.Errorf("chmod image: %w", err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return manifest.Manifest{}, fmt.Errorf("rename image into place: %w", err)
	}
	ok = true
	return m, nil
}

func assemble(f *os.File, squashfs string, a Assembly) (manifest.Manifest, error) {
	src, err := os.Open(squashfs)
	if err != nil {
		return manifest.Manifest{}, fmt.Errorf("open squashfs: %w", err)
	}
	defer src.Close()
	n, err := io.Copy(f, src)
	if err != nil {
		return manifest.Manifest{}, fmt.Errorf("copy squashfs: %w", err)
	}
	if n == 0 {
		return manifest.Manifest{}, fmt.Errorf("squashfs %q is empty", squashfs)
	}
	dataSize := (n + blockSize - 1) / blockSize * blockSize
	if _, err := f.Write(make([]byte, dataSize-n)); err != nil {
		return manifest.Manifest{}, fmt.Errorf("pad squashfs: %w", err)
	}

	m := a.Manifest
	m.HashAlgorithm = "sha256"
	m.DataBlockSize, m.HashBlockSize = blockSize, blockSize
	m.DataBlocks = uint64(dataSize / blockSize)
	m.HashOffset = uint64(dataSize)
	m.Salt = fmt.Sprintf("%x", a.Salt)
	m.UUID = manifest.FormatUUID(a.UUID)
	params := VerityParams(m)
	hashArea, root, err := verity.Build(io.NewSectionReader(f, 0, dataSize), params, a.Workers)
	if err != nil {
		return manifest.Manifest{}, fmt.Errorf("build hash tree: %w", err)
	}
	m.HashSize = uint64(len(hashArea))
	m.RootHash = fmt.Sprintf("%x", root)
	mb, err := m.Marshal()
	if err != nil {
		return manifest.Manifest{}, err
	}
	sig := ed25519.Sign(a.Key, mb)
	footer, err := Footer{
		DataSize:       uint64(dataSize),
		HashOffset:     uint64(dataSize),
		HashSize:       uint64(len(hashArea)),
		ManifestOffset: uint64(dataSize) + uint64(len(hashArea)),
		ManifestSize:   uint32(len(mb)),
		SignatureSize:  uint32(len(sig)),
		ImageSize:      uint64(dataSize) + uint64(len(hashArea)) + uint64(len(mb)) + uint64(len(sig)) + FooterSize,
	}.MarshalBinary()
	if err != nil {
		return manifest.Manifest{}, err
	}
	for _, part := range [][]byte{hashArea, mb, sig, footer} {
		if _, err := f.Write(part); err != nil {
			return manifest.Manifest{}, fmt.Errorf("write image: %w", err)
		}
	}
	return m, nil
}

// Manifest parses the manifest without checking its signature (for inspection and for
// laying out disks; bay0 always authenticates).
func (im *Image) Manifest() (manifest.Manifest, error) { return manifest.Parse(im.ManifestBytes) }

// FromParts makes an Image from an already parsed footer and the manifest and signature
// bytes, for authenticating an offer before any data exists.
func FromParts(f Footer, manifestBytes, signature []byte) *Image {
	return &Image{Footer: f, ManifestBytes: manifestBytes, Signature: signature}
}
