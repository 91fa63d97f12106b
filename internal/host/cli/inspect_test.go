package cli

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestInspect(t *testing.T) {
	d := demo(t)
	i := inspect(t, d.img)
	r := mustSpine(t, nil, "inspect", d.img)
	for _, want := range []string{"demo", "root hash:     " + i.RootHash, "salt:          " + i.Salt, "heartbeat web",
		"version:       1", "constitution:  0.1", "build time:    1700000000"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("inspect does not print %q:\n%s", want, r.stdout)
		}
	}

	raw := mustSpine(t, nil, "inspect", "--json", d.img).stdout
	var fields map[string]any
	if err := json.Unmarshal([]byte(raw), &fields); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"name", "version", "root_hash", "salt", "hash_algorithm", "data_block_size",
		"hash_block_size", "data_blocks", "hash_offset", "constitution"} {
		if _, ok := fields[k]; !ok {
			t.Errorf("inspect --json has no %q:\n%s", k, raw)
		}
	}
	size := int64(len(read(t, d.img)))
	if i.HashAlgorithm != "sha256" || i.DataBlockSize != 4096 || i.HashBlockSize != 4096 || i.Constitution != "0.1" ||
		len(i.RootHash) != 64 || len(i.Salt) != 64 || i.HashOffset != i.DataBlocks*4096 || int64(i.HashOffset+i.HashSize) >= size {
		t.Errorf("inspect --json: %+v (image %d bytes)", i, size)
	}

	// --manifest and --signature give what OpenSSL needs to check the signature by itself.
	dir := t.TempDir()
	manifest, sig := filepath.Join(dir, "manifest.json"), filepath.Join(dir, "manifest.sig")
	mb := mustSpine(t, nil, "inspect", "--manifest", d.img).stdout
	sb := mustSpine(t, nil, "inspect", "--signature", d.img).stdout
	if len(sb) != 64 {
		t.Fatalf("signature is %d bytes, want 64", len(sb))
	}
	if !bytes.Contains(read(t, d.img), []byte(mb+sb)) {
		t.Error("--manifest and --signature are not the bytes stored in the image")
	}
	writeFile(t, manifest, mb, 0o644)
	writeFile(t, sig, sb, 0o644)
	openssl := lookTool(t, "openssl", "openssl")
	verify := func(in string) error {
		return exec.Command(openssl, "pkeyutl", "-verify", "-pubin", "-inkey", d.keys.pub, "-rawin", "-in", in, "-sigfile", sig).Run()
	}
	if err := verify(manifest); err != nil {
		t.Errorf("openssl pkeyutl -verify: %v", err)
	}
	// And OpenSSL refuses a manifest that differs by one byte: the check is real.
	writeFile(t, manifest+".bad", strings.Replace(mb, `"version":1`, `"version":2`, 1), 0o644)
	if err := verify(manifest + ".bad"); err == nil {
		t.Error("openssl accepted a changed manifest")
	}

	if r := spine(t, nil, "inspect", filepath.Join(dir, "missing.img")); r.code != 1 {
		t.Errorf("inspect of a missing file: %v", r)
	}
	if r := spine(t, nil, "inspect", manifest); r.code != 1 || !strings.Contains(r.stderr, "footer") {
		t.Errorf("inspect of a non-image: %v", r)
	}
}

// TestVeritysetup cross-checks the hash tree with cryptsetup's own verifier: the data area
// and the hash area cut out of the image at the offsets inspect reports.
func TestVeritysetup(t *testing.T) {
	d := demo(t)
	veritysetup := lookTool(t, "veritysetup", "cryptsetup-bin")
	i := inspect(t, d.img)
	img := read(t, d.img)
	dir := t.TempDir()
	data, hash := filepath.Join(dir, "data"), filepath.Join(dir, "hash")
	writeFile(t, data, string(img[:i.DataBlocks*i.DataBlockSize]), 0o644)
	writeFile(t, hash, string(img[i.HashOffset:i.HashOffset+i.HashSize]), 0o644)

	run := func() ([]byte, error) {
		return exec.Command(veritysetup, "verify", data, hash, i.RootHash).CombinedOutput()
	}
	if out, err := run(); err != nil {
		t.Fatalf("veritysetup verify %s: %v\n%s", i.RootHash, err, out)
	}
	// A dump names the same parameters.
	out, err := exec.Command(veritysetup, "dump", hash).CombinedOutput()
	if err != nil {
		t.Fatalf("veritysetup dump: %v\n%s", err, out)
	}
	fields := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = strings.TrimSpace(v)
		}
	}
	for k, want := range map[string]string{"UUID": i.UUID, "Data blocks": strconv.FormatUint(i.DataBlocks, 10),
		"Hash algorithm": "sha256", "Salt": i.Salt, "Hash type": "1"} {
		if fields[k] != want {
			t.Errorf("veritysetup dump: %s is %q, want %q\n%s", k, fields[k], want, out)
		}
	}

	f, err := os.OpenFile(data, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := []byte{0}
	off := int64(i.DataBlocks*i.DataBlockSize) / 2
	f.ReadAt(b, off)
	b[0] ^= 0x01
	f.WriteAt(b, off)
	f.Close()
	if out, err := run(); err == nil {
		t.Errorf("veritysetup verify accepted a flipped data byte:\n%s", out)
	}
}

// TestInspectShowsKernel: a Spine built with --kernel IMAGE names that image's release (read
// from its own boot header) and sha256 in its manifest, and inspect shows both.
func TestInspectShowsKernel(t *testing.T) {
	kern := make([]byte, 4096)
	copy(kern[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(kern[0x20e:], 1024-0x200) // the version string's offset
	copy(kern[1024:], "6.1.192-spine.2 (spine@spine) #1 SMP\x00")
	image := filepath.Join(t.TempDir(), "bzImage")
	writeFile(t, image, string(kern), 0o644)
	img := filepath.Join(t.TempDir(), "k.img")
	mustSpine(t, epoch, "build", "--kernel", image, "--config", smallProject(t), "--key", sharedKeys(t).key, "--out", img, "--bay0", bay0(t))
	var m struct {
		Kernel       string `json:"kernel"`
		KernelSHA256 string `json:"kernel_sha256"`
	}
	if err := json.Unmarshal([]byte(mustSpine(t, nil, "inspect", "--json", img).stdout), &m); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(kern)
	if m.Kernel != "6.1.192-spine.2" || m.KernelSHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("inspect --json: kernel %q sha256 %q, want 6.1.192-spine.2 %x", m.Kernel, m.KernelSHA256, sum)
	}
	if out := mustSpine(t, nil, "inspect", img).stdout; !strings.Contains(out, "kernel:        6.1.192-spine.2\n") ||
		!strings.Contains(out, "kernel sha256: "+m.KernelSHA256+"\n") {
		t.Errorf("inspect:\n%s", out)
	}
}
