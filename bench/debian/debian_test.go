package debian

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestExtractVmlinux: a bzImage-like file (setup code holding a false xz magic, an xz stream
// with the x86 filter, trailing data) gives back the ELF kernel; a file with no stream fails.
func TestExtractVmlinux(t *testing.T) {
	payload := append([]byte("\x7fELF"), bytes.Repeat([]byte("kernel code \xe8\x00\x00\x00\x00"), 5000)...)
	cmd := exec.Command("xz", "-c", "--check=crc32", "--x86", "--lzma2")
	cmd.Stdin = bytes.NewReader(payload)
	stream, err := cmd.Output()
	if err != nil {
		t.Fatalf("xz: %v", err)
	}
	setup := append([]byte("setup code "+xzMagic+"\x00\x01 bad crc "), make([]byte, 100)...)
	bz := append(append(setup, stream...), "trailing size and data"...)
	if off, err := FindXZ(bz); err != nil || off != len(setup) {
		t.Fatalf("FindXZ = %d, %v; want %d", off, err, len(setup))
	}
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "vmlinux")
	if err := os.WriteFile(src, bz, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := extractVmlinux(context.Background(), src, dst); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, payload) {
		t.Fatalf("extracted %d bytes, want the %d-byte payload", len(got), len(payload))
	}
	if _, err := FindXZ(setup); !errors.Is(err, ErrNoXZ) {
		t.Fatalf("no stream: %v", err)
	}
}
