// Package ocitest writes small OCI image layouts for tests. It is written by hand from the
// image-spec rather than with the library the reader uses, so that the reader is checked
// against the format and not against itself.
package ocitest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
)

// Media types of the image-spec.
const (
	MediaIndex    = "application/vnd.oci.image.index.v1+json"
	MediaManifest = "application/vnd.oci.image.manifest.v1+json"
	MediaConfig   = "application/vnd.oci.image.config.v1+json"
	MediaLayerGz  = "application/vnd.oci.image.layer.v1.tar+gzip"
	MediaLayer    = "application/vnd.oci.image.layer.v1.tar"
)

// File is one entry of a layer.
type File struct {
	Name string
	Type byte // tar.TypeReg when 0
	Body string
	Mode int64 // 0o644 when 0
	Link string
}

// Config is the part of the image config a persona uses.
type Config struct {
	Entrypoint []string `json:"Entrypoint,omitempty"`
	Cmd        []string `json:"Cmd,omitempty"`
	Env        []string `json:"Env,omitempty"`
	WorkingDir string   `json:"WorkingDir,omitempty"`
	User       string   `json:"User,omitempty"`
	StopSignal string   `json:"StopSignal,omitempty"`
}

// Image is one image to write.
type Image struct {
	Layers [][]File
	Config Config
	// Ref is the org.opencontainers.image.ref.name annotation (the tag); "" for none.
	Ref string
	// Uncompressed stores layers as plain tars instead of gzip.
	Uncompressed bool
	// OS and Arch default to linux/amd64.
	OS, Arch string
}

// Written says what was written for one image.
type Written struct {
	Digest string   // manifest digest, "sha256:..."
	Layers []string // layer blob digests, in order
	Config string   // config digest
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Write makes an OCI image layout in dir (created if missing) holding the images.
func Write(dir string, images ...Image) ([]Written, error) {
	var out []Written
	var index []descriptor
	for _, im := range images {
		var w Written
		var layers []descriptor
		var diffIDs []string
		for _, files := range im.Layers {
			raw, err := Tar(files)
			if err != nil {
				return nil, err
			}
			diffIDs = append(diffIDs, digest(raw))
			blob, media := raw, MediaLayer
			if !im.Uncompressed {
				if blob, err = gz(raw); err != nil {
					return nil, err
				}
				media = MediaLayerGz
			}
			d, err := writeBlob(dir, media, blob)
			if err != nil {
				return nil, err
			}
			layers = append(layers, d)
			w.Layers = append(w.Layers, d.Digest)
		}
		osName, arch := im.OS, im.Arch
		if osName == "" {
			osName = "linux"
		}
		if arch == "" {
			arch = "amd64"
		}
		cfg, err := json.Marshal(map[string]any{
			"architecture": arch, "os": osName, "config": im.Config,
			"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
		})
		if err != nil {
			return nil, err
		}
		cd, err := writeBlob(dir, MediaConfig, cfg)
		if err != nil {
			return nil, err
		}
		w.Config = cd.Digest
		man, err := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": MediaManifest, "config": cd, "layers": layers})
		if err != nil {
			return nil, err
		}
		md, err := writeBlob(dir, MediaManifest, man)
		if err != nil {
			return nil, err
		}
		if im.Ref != "" {
			md.Annotations = map[string]string{"org.opencontainers.image.ref.name": im.Ref}
		}
		w.Digest = md.Digest
		index = append(index, md)
		out = append(out, w)
	}
	idx, err := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": MediaIndex, "manifests": index})
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "index.json"), idx, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		return nil, err
	}
	return out, nil
}

// BlobPath is where a blob of the layout in dir lives.
func BlobPath(dir, digest string) string {
	return filepath.Join(dir, "blobs", "sha256", digest[len("sha256:"):])
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func writeBlob(dir, media string, b []byte) (descriptor, error) {
	d := descriptor{MediaType: media, Digest: digest(b), Size: int64(len(b))}
	p := BlobPath(dir, d.Digest)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return d, err
	}
	return d, os.WriteFile(p, b, 0o644)
}

func gz(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Tar renders files as a tar stream.
func Tar(files []File) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.Name, Typeflag: f.Type, Mode: f.Mode, Linkname: f.Link, Format: tar.FormatPAX}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(f.Body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("tar %s: %w", f.Name, err)
		}
		if _, err := tw.Write([]byte(f.Body)); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// TarDir writes the layout in dir as a tar file at out (what `skopeo copy ... oci-archive:`
// writes).
func TarDir(dir, out string) error {
	var names []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		names = append(names, filepath.ToSlash(rel))
		return err
	})
	if err != nil {
		return err
	}
	sort.Strings(names)
	var files []File
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			return err
		}
		files = append(files, File{Name: n, Body: string(b)})
	}
	b, err := Tar(files)
	if err != nil {
		return err
	}
	return os.WriteFile(out, b, 0o644)
}
