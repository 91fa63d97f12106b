package kernel

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os/exec"
	"testing"

	"github.com/ulikunitz/xz"
)

// fakeELF returns n bytes that start with the ELF magic and are full of
// E8/E9 opcodes followed by plausible displacements, so that the x86 BCJ
// filter really rewrites them.
func fakeELF(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	copy(b, elfMagic)
	for i := len(elfMagic); i < n; i++ {
		switch r.IntN(8) {
		case 0:
			b[i] = 0xe8
		case 1:
			b[i] = 0xe9
		case 2, 3:
			b[i] = 0x00
		case 4:
			b[i] = 0xff
		default:
			b[i] = byte(r.IntN(16)) // compressible, but not trivially
		}
	}
	return b
}

// goXZ compresses data with ulikunitz/xz (LZMA2 only, no BCJ).
func goXZ(t testing.TB, data []byte, check byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := xz.WriterConfig{CheckSum: check}.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// toolXZ compresses data with the xz command, which can add the x86 BCJ
// filter as the kernel build does.
func toolXZ(t testing.TB, data []byte, args ...string) []byte {
	t.Helper()
	path, err := exec.LookPath("xz")
	if err != nil {
		t.Fatalf("xz not found (install the Debian package xz-utils): %v", err)
	}
	cmd := exec.Command(path, append([]string{"-c", "-T1"}, args...)...)
	cmd.Stdin = bytes.NewReader(data)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("xz %v: %v\n%s", args, err, stderr.Bytes())
	}
	return out
}

// bzImage wraps an xz stream the way a kernel image does: code before it,
// including a decoy magic, and data after it.
func bzImage(stream []byte) []byte {
	var b bytes.Buffer
	b.WriteString("MZ fake setup code\x00\x00")
	b.WriteString(xzMagic + "XZ-compressed data is corrupt\x00") // as in the real decompressor
	b.Write(bytes.Repeat([]byte{0x90}, 1000))
	b.Write(stream)
	b.Write([]byte{0x12, 0x34, 0x56, 0x00}) // appended uncompressed size
	b.WriteString(xzMagic + "trailing decompressor data")
	b.Write(bytes.Repeat([]byte{0xcc}, 5000))
	return b.Bytes()
}

func extract(t testing.TB, blob []byte) ([]byte, error) {
	t.Helper()
	var out bytes.Buffer
	err := ExtractVmlinux(bytes.NewReader(blob), int64(len(blob)), &out)
	return out.Bytes(), err
}

func TestExtractVmlinuxGoStream(t *testing.T) {
	want := fakeELF(200_000)
	for _, check := range []byte{xz.CRC32, xz.CRC64, xz.SHA256} {
		got, err := extract(t, bzImage(goXZ(t, want, check)))
		if err != nil {
			t.Fatalf("check %#x: %v", check, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("check %#x: output differs (%d bytes, want %d)", check, len(got), len(want))
		}
	}
}

func TestExtractVmlinuxXZTool(t *testing.T) {
	want := fakeELF(300_000)
	for _, args := range [][]string{
		{"--x86", "--lzma2=preset=6,dict=32MiB", "--check=crc32"}, // as scripts/xz_wrap.sh does
		{"--x86", "--lzma2", "--check=sha256", "--block-size=65536"},
		{"--x86=start=4096", "--lzma2", "--check=crc64"},
		{"--lzma2", "--check=none"},
		{"--x86", "--lzma2", "--check=crc32", "--block-size=1001"}, // odd sizes: padding in every block
	} {
		stream := toolXZ(t, want, args...)
		got, err := extract(t, bzImage(stream))
		if err != nil {
			t.Fatalf("xz %v: %v", args, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("xz %v: output differs (%d bytes, want %d)", args, len(got), len(want))
		}
	}
}

func TestExtractVmlinuxErrors(t *testing.T) {
	elf := fakeELF(50_000)
	good := goXZ(t, elf, xz.CRC32)
	notELF := goXZ(t, []byte("#!/bin/sh\necho this is no kernel\n"), xz.CRC32)
	tiny := goXZ(t, []byte("\x7fE"), xz.CRC32)

	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 0x40
	badFooter := bytes.Clone(good)
	badFooter[len(badFooter)-1] = 'X'

	tests := []struct {
		name string
		blob []byte
		want error
	}{
		{"empty", nil, ErrNoXZ},
		{"no stream", bytes.Repeat([]byte("not a kernel "), 10000), ErrNoXZ},
		{"only a decoy magic", []byte("abc" + xzMagic + "XZ-compressed data is corrupt"), ErrNoXZ},
		{"not ELF", bzImage(notELF), ErrNotELF},
		{"shorter than the ELF magic", bzImage(tiny), ErrNotELF},
		{"flipped bit", bzImage(flipped), ErrCorrupt},
		{"truncated", good[:len(good)-20], ErrCorrupt},
		{"bad footer magic", badFooter, ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := extract(t, tt.blob)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

// TestX86WriterChunking checks that the BCJ decoder carries its state across
// writes: any split of the input gives the same output.
func TestX86WriterChunking(t *testing.T) {
	in := fakeELF(20_000)
	decode := func(chunk int) []byte {
		var out bytes.Buffer
		w := newX86Writer(&out, 0)
		for p := in; len(p) > 0; {
			n := min(chunk, len(p))
			if _, err := w.Write(p[:n]); err != nil {
				t.Fatal(err)
			}
			p = p[n:]
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		return out.Bytes()
	}
	whole := decode(len(in))
	if bytes.Equal(whole, in) {
		t.Fatal("the filter changed nothing; the input exercises no branch")
	}
	for _, chunk := range []int{1, 3, 5, 7, 4096} {
		if got := decode(chunk); !bytes.Equal(got, whole) {
			t.Fatalf("chunk %d: output differs from a single write", chunk)
		}
	}
}

func FuzzExtractVmlinux(f *testing.F) {
	elf := fakeELF(3000)
	f.Add(bzImage(goXZ(f, elf, xz.CRC32)))
	f.Add(goXZ(f, elf, xz.SHA256))
	f.Add(goXZ(f, []byte("plain"), xz.CRC64))
	f.Add([]byte(xzMagic + "\x00\x01\x69\x22\xde\x36"))
	f.Fuzz(func(t *testing.T, blob []byte) {
		var out bytes.Buffer
		err := ExtractVmlinux(bytes.NewReader(blob), int64(len(blob)), &out)
		if err == nil && !bytes.HasPrefix(out.Bytes(), []byte(elfMagic)) {
			t.Fatalf("success without an ELF magic: %q", out.Bytes()[:min(8, out.Len())])
		}
	})
}
