package tree

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzApply: whatever the archive holds, Apply never panics and never writes beside the tree.
func FuzzApply(f *testing.F) {
	f.Add(mkTar(f, ent{name: "a/b", body: "x"}, ent{name: "a/.wh.b"}, ent{name: "a/.wh..wh..opq"}))
	f.Add(mkTar(f, ent{name: "l", typ: tar.TypeSymlink, link: "/../.."}, ent{name: "l/x", body: "x"},
		ent{name: "h", typ: tar.TypeLink, link: "l/x"}))
	f.Add(mkTar(f, ent{name: "d/", typ: tar.TypeDir, mode: 0o7777}, ent{name: "d", body: "file"},
		ent{name: "/abs/../../x", body: "x"}))
	f.Add(mkTar(f, ent{name: "s", typ: tar.TypeSymlink, link: "s"}, ent{name: "s/x", body: "x"}))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, kind := range []Kind{Layer, Plain} {
			tr, dir, outside := newTree(t)
			_ = tr.Apply(bytes.NewReader(data), kind)
			if ents, err := os.ReadDir(outside); err != nil || len(ents) != 0 {
				t.Fatalf("wrote outside the tree: %v %v", ents, err)
			}
			if ents, err := os.ReadDir(filepath.Dir(dir)); err != nil || len(ents) != 2 {
				t.Fatalf("wrote beside the tree: %v %v", ents, err)
			}
		}
	})
}
