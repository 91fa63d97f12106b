package ocitree

import (
	"archive/tar"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
)

// blobName is the only shape of blob path a layout has (image-spec image-layout.md).
var blobName = regexp.MustCompile(`^blobs/[a-z0-9]+/[a-f0-9]{32,128}$`)

// untarLayout unpacks the files of an OCI layout from a tar into dir. Only oci-layout,
// index.json and blobs/<alg>/<hex> are taken, as regular files; everything else (directories,
// links, docker-archive extras such as manifest.json) is skipped, so no name from the archive
// ever reaches the filesystem unchecked.
func untarLayout(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	seen := map[string]bool{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		name := strings.TrimPrefix(path.Clean("/"+hdr.Name), "/")
		if hdr.Typeflag != tar.TypeReg || !(name == "oci-layout" || name == "index.json" || blobName.MatchString(name)) {
			continue
		}
		if seen[name] {
			return fmt.Errorf("%s appears twice", name)
		}
		seen[name] = true
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, tr); err != nil {
			f.Close()
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	if !seen["index.json"] {
		return fmt.Errorf("no index.json: not an OCI layout")
	}
	return nil
}
