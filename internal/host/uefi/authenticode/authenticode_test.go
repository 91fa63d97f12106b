package authenticode

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"alpinespine.org/spine/internal/host/uefi/sbkeys"
)

// testPE returns a minimal x86-64 EFI application: headers, .text and .data, file-aligned.
func testPE(text, data int, seed int64) []byte {
	const headers, pe = 0x200, 0x80
	b := make([]byte, headers+text+data)
	b[0], b[1] = 'M', 'Z'
	binary.LittleEndian.PutUint32(b[dosLfanewOff:], pe)
	copy(b[pe:], "PE\x00\x00")
	coff := pe + 4
	binary.LittleEndian.PutUint16(b[coff:], 0x8664)  // x86-64
	binary.LittleEndian.PutUint16(b[coff+2:], 2)     // sections
	binary.LittleEndian.PutUint16(b[coff+16:], 240)  // optional header size
	binary.LittleEndian.PutUint16(b[coff+18:], 0x22) // executable, large address aware
	opt := coff + coffHeaderSize
	binary.LittleEndian.PutUint16(b[opt:], magicPE32Plus)
	binary.LittleEndian.PutUint32(b[opt+16:], 0x1000)     // entry point
	binary.LittleEndian.PutUint64(b[opt+24:], 0x10000000) // image base
	binary.LittleEndian.PutUint32(b[opt+32:], 0x1000)     // section alignment
	binary.LittleEndian.PutUint32(b[opt+36:], 0x200)      // file alignment
	binary.LittleEndian.PutUint32(b[opt+56:], 0x3000)     // size of image
	binary.LittleEndian.PutUint32(b[opt+optHeadersOff:], headers)
	binary.LittleEndian.PutUint16(b[opt+68:], 10)  // EFI application
	binary.LittleEndian.PutUint32(b[opt+108:], 16) // data directories
	sec := opt + 240
	for i, s := range []struct {
		name       string
		va, size   int
		off, flags int
	}{{".text", 0x1000, text, headers, 0x60000020}, {".data", 0x2000, data, headers + text, 0xC0000040}} {
		e := b[sec+i*sectionSize:]
		copy(e, s.name)
		binary.LittleEndian.PutUint32(e[8:], uint32(s.size))
		binary.LittleEndian.PutUint32(e[12:], uint32(s.va))
		binary.LittleEndian.PutUint32(e[16:], uint32(s.size))
		binary.LittleEndian.PutUint32(e[20:], uint32(s.off))
		binary.LittleEndian.PutUint32(e[36:], uint32(s.flags))
	}
	rand.New(rand.NewSource(seed)).Read(b[headers:])
	return b
}

type pair struct {
	signer   Signer
	key, crt string
}

// keys are generated once: RSA generation dominates the run time otherwise.
var keys = sync.OnceValues(func() ([2]pair, error) {
	var ps [2]pair
	dir, err := os.MkdirTemp("", "authenticode-test-")
	if err != nil {
		return ps, err
	}
	for i, cn := range []string{"owner", "stranger"} {
		d := filepath.Join(dir, cn)
		if err := sbkeys.Generate(d, cn); err != nil {
			return ps, err
		}
		ps[i].key, ps[i].crt = filepath.Join(d, sbkeys.KeyFile), filepath.Join(d, sbkeys.CertFile)
		p, err := sbkeys.Load(ps[i].key, ps[i].crt)
		if err != nil {
			return ps, err
		}
		ps[i].signer = Signer{Key: p.Key, Cert: p.Cert}
	}
	return ps, nil
})

func testKeys(t *testing.T) [2]pair {
	t.Helper()
	ps, err := keys()
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found (install the Debian package %s; scripts/deps.sh does)", name, pkg)
	}
	return p
}

func writeTemp(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "image.efi")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

var calculated = regexp.MustCompile(`Calculated message digest\s*:\s*([0-9A-F]+)`)
var current = regexp.MustCompile(`Current message digest\s*:\s*([0-9A-F]+)`)

// osslVerify runs osslsigncode verify and returns its output and the digests it reports.
func osslVerify(t *testing.T, path, ca string) (out string, cur, calc string, ok bool) {
	t.Helper()
	o, err := exec.Command(tool(t, "osslsigncode", "osslsigncode"), "verify", "-CAfile", ca, "-in", path).CombinedOutput()
	out = string(o)
	if m := current.FindStringSubmatch(out); m != nil {
		cur = strings.ToLower(m[1])
	}
	if m := calculated.FindStringSubmatch(out); m != nil {
		calc = strings.ToLower(m[1])
	}
	return out, cur, calc, err == nil && strings.Contains(out, "Succeeded")
}

func TestSignReferenceTools(t *testing.T) {
	ks := testKeys(t)
	sbverify := tool(t, "sbverify", "sbsigntool")
	for _, size := range [][2]int{{0x1000, 0x200}, {0x20000, 0x600}} {
		img := testPE(size[0], size[1], 1)
		signed, err := Sign(img, ks[0].signer)
		if err != nil {
			t.Fatal(err)
		}
		p := writeTemp(t, signed)
		if out, err := exec.Command(sbverify, "--cert", ks[0].crt, p).CombinedOutput(); err != nil {
			t.Errorf("sbverify --cert owner: %v\n%s", err, out)
		}
		if out, err := exec.Command(sbverify, "--cert", ks[1].crt, p).CombinedOutput(); err == nil {
			t.Errorf("sbverify accepts the owner's signature with the stranger's certificate:\n%s", out)
		}
		out, cur, calc, ok := osslVerify(t, p, ks[0].crt)
		if !ok {
			t.Errorf("osslsigncode verify:\n%s", out)
		}
		d, err := Digest(signed)
		if err != nil {
			t.Fatal(err)
		}
		if hex.EncodeToString(d) != calc || cur != calc {
			t.Errorf("digests: ours %x, osslsigncode current %s calculated %s", d, cur, calc)
		}
		if strings.Contains(out, "MISMATCH") {
			t.Errorf("osslsigncode finds a mismatch (checksum?):\n%s", out)
		}
	}
}

// sbsign, the Debian reference signer, hashes the same bytes.
func TestDigestMatchesSbsign(t *testing.T) {
	ks := testKeys(t)
	img := testPE(0x3000, 0x400, 2)
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.efi"), filepath.Join(dir, "out.efi")
	if err := os.WriteFile(in, img, 0o644); err != nil {
		t.Fatal(err)
	}
	if o, err := exec.Command(tool(t, "sbsign", "sbsigntool"), "--key", ks[0].key, "--cert", ks[0].crt, "--output", out, in).CombinedOutput(); err != nil {
		t.Fatalf("sbsign: %v\n%s", err, o)
	}
	theirs, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	_, cur, _, _ := osslVerify(t, out, ks[0].crt)
	d, err := Digest(theirs)
	if err != nil {
		t.Fatal(err)
	}
	ours, err := Sign(img, ks[0].signer)
	if err != nil {
		t.Fatal(err)
	}
	d2, _ := Digest(ours)
	if hex.EncodeToString(d) != cur || !bytes.Equal(d, d2) {
		t.Errorf("sbsign signed digest %s; ours of sbsign's file %x; ours of ours %x", cur, d, d2)
	}
}

func TestResignTamperStrip(t *testing.T) {
	ks := testKeys(t)
	sbverify := tool(t, "sbverify", "sbsigntool")
	img := testPE(0x2000, 0x200, 3)
	a, err := Sign(img, ks[1].signer)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Sign(a, ks[0].signer)
	if err != nil {
		t.Fatal(err)
	}
	// Re-signing replaces the signature: exactly one, the owner's.
	list, _ := exec.Command(sbverify, "--list", writeTemp(t, b)).CombinedOutput()
	if n := len(regexp.MustCompile(`(?m)^signature [0-9]+$`).FindAllString(string(list), -1)); n != 1 || !strings.Contains(string(list), "CN=owner") || strings.Contains(string(list), "stranger") {
		t.Errorf("after re-signing, sbverify --list:\n%s", list)
	}
	if again, _ := Sign(img, ks[0].signer); !bytes.Equal(again, b) {
		t.Error("signing twice gives different bytes, or re-signing differs from signing")
	}
	// A changed byte anywhere but the certificate table breaks the signature.
	for _, off := range []int{0x100, 0x200 + 17, len(img) - 1} {
		bad := bytes.Clone(b)
		bad[off] ^= 1
		if out, err := exec.Command(sbverify, "--cert", ks[0].crt, writeTemp(t, bad)).CombinedOutput(); err == nil {
			t.Errorf("byte %#x flipped: sbverify still accepts:\n%s", off, out)
		}
	}
	s, err := Strip(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s[:len(img)], stripChecksum(img, s)) || len(s) != len(img) {
		t.Error("Strip does not give back the unsigned image")
	}
	if out, err := exec.Command(sbverify, "--list", writeTemp(t, s)).CombinedOutput(); err != nil || strings.Contains(string(out), "signature 1") {
		t.Errorf("stripped image still lists a signature: %v\n%s", err, out)
	}
}

// stripChecksum returns img with the checksum Strip wrote into got, which img lacks.
func stripChecksum(img, got []byte) []byte {
	im, _ := parse(img)
	out := bytes.Clone(img)
	copy(out[im.checksumOff:im.checksumOff+4], got[im.checksumOff:])
	return out
}

func TestRefuses(t *testing.T) {
	good := testPE(0x1000, 0x200, 4)
	for name, damage := range map[string]func(b []byte) []byte{
		"empty":         func([]byte) []byte { return nil },
		"no MZ":         func(b []byte) []byte { b[0] = 'X'; return b },
		"no PE":         func(b []byte) []byte { b[0x80] = 'X'; return b },
		"lfanew beyond": func(b []byte) []byte { binary.LittleEndian.PutUint32(b[dosLfanewOff:], 1<<30); return b },
		"magic":         func(b []byte) []byte { b[0x98] = 0; return b },
		"few dirs":      func(b []byte) []byte { binary.LittleEndian.PutUint32(b[0x98+108:], 4); return b },
		"truncated":     func(b []byte) []byte { return b[:0x300] },
		"gap": func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[0x98+240+20:], 0x400) // .text starts after a gap
			return append(b, make([]byte, 0x200)...)
		},
		"headers too small": func(b []byte) []byte { binary.LittleEndian.PutUint32(b[0x98+optHeadersOff:], 0x100); return b },
		"table not at end": func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[0x98+112+32:], 0x200)
			binary.LittleEndian.PutUint32(b[0x98+112+36:], 8)
			return b
		},
	} {
		b := damage(bytes.Clone(good))
		if _, err := Digest(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzDigest(f *testing.F) {
	f.Add(testPE(0x200, 0x200, 5))
	f.Add(append(testPE(0x200, 0x200, 6), make([]byte, 16)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := Digest(b)
		if err != nil {
			return
		}
		// Removing the signature changes nothing the hash covers.
		s, err := Strip(b)
		if err != nil {
			t.Fatalf("Strip of an accepted image: %v", err)
		}
		d2, err := Digest(s)
		if err != nil || !bytes.Equal(d, d2) {
			t.Fatalf("stripped image: %v, digest %x want %x", err, d2, d)
		}
	})
}
