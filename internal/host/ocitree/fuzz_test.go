package ocitree

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"alpinespine.org/spine/internal/host/ocitree/ocitest"
)

// FuzzUntarLayout: whatever the tar holds, only layout files land, and only inside dir.
func FuzzUntarLayout(f *testing.F) {
	for _, files := range [][]ocitest.File{
		{{Name: "index.json", Body: "{}"}, {Name: "oci-layout", Body: "{}"}},
		{{Name: "blobs/sha256/" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", Body: "x"}},
		{{Name: "../index.json", Body: "x"}, {Name: "/blobs/sha256/aa", Body: "x"}, {Name: "manifest.json", Body: "x"}},
		{{Name: "index.json", Body: "1"}, {Name: "./index.json", Body: "2"}},
	} {
		b, err := ocitest.Tar(files)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		dir := filepath.Join(base, "layout")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		_ = untarLayout(bytes.NewReader(data), dir)
		if ents, _ := os.ReadDir(base); len(ents) != 1 {
			t.Fatalf("wrote beside the layout: %v", ents)
		}
		err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			if rel != "index.json" && rel != "oci-layout" && !blobName.MatchString(filepath.ToSlash(rel)) {
				t.Errorf("unexpected file %s", rel)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}
