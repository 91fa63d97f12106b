package update

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"alpinespine.org/spine/internal/format/image"
	"alpinespine.org/spine/internal/format/manifest"
	"alpinespine.org/spine/internal/host/squashfs"
)

// memSlot is a slot device in memory.
type memSlot struct{ b []byte }

func (s *memSlot) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(s.b)) {
		return 0, errors.New("eof")
	}
	n := copy(p, s.b[off:])
	if n < len(p) {
		return n, errors.New("short read")
	}
	return n, nil
}
func (s *memSlot) WriteAt(p []byte, off int64) (int, error) { return copy(s.b[off:], p), nil }
func (s *memSlot) Sync() error                              { return nil }

func makeImage(t *testing.T, key ed25519.PrivateKey, version uint64) (string, *image.Image) {
	t.Helper()
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	if err := os.MkdirAll(filepath.Join(tree, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "bin", "bay0"), bytes.Repeat([]byte("bay0"), 5000), 0o755); err != nil {
		t.Fatal(err)
	}
	sq := filepath.Join(dir, "fs")
	if err := squashfs.Make(context.Background(), tree, sq, 1); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "img")
	m := manifest.Manifest{Format: 1, Name: "t", Version: version, Constitution: "0.1", Personas: []string{}}
	if _, err := image.Assemble(out, sq, image.Assembly{Manifest: m, Key: key, Salt: []byte{1, 2}, UUID: [16]byte{1}}); err != nil {
		t.Fatal(err)
	}
	im, f, err := image.OpenFile(out)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return out, im
}

func keys(t *testing.T) (ed25519.PublicKey, ed25519.PrivateKey) {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func TestOfferRules(t *testing.T) {
	pub, priv := keys(t)
	otherPub, _ := keys(t)
	_, im := makeImage(t, priv, 5)
	offer, err := OfferFromImage(im)
	if err != nil {
		t.Fatal(err)
	}
	ok := Floor{Running: 4, MinVersion: 3, SlotSize: 1 << 30}
	cases := []struct {
		name    string
		trusted []ed25519.PublicKey
		floor   Floor
		mutate  func(*Offer)
		want    string
	}{
		{"accepted", []ed25519.PublicKey{pub}, ok, nil, ""},
		{"untrusted", []ed25519.PublicKey{otherPub}, ok, nil, "trusted key"},
		{"same version", []ed25519.PublicKey{pub}, Floor{Running: 5, SlotSize: 1 << 30}, nil, "not newer"},
		{"older", []ed25519.PublicKey{pub}, Floor{Running: 6, SlotSize: 1 << 30}, nil, "not newer"},
		{"below floor", []ed25519.PublicKey{pub}, Floor{Running: 1, MinVersion: 6, SlotSize: 1 << 30}, nil, "min_version"},
		{"slot too small", []ed25519.PublicKey{pub}, Floor{Running: 1, SlotSize: 4096}, nil, "slot holds"},
		{"tampered manifest", []ed25519.PublicKey{pub}, ok, func(o *Offer) { o.Manifest[3] ^= 1 }, "signature"},
		{"tampered signature", []ed25519.PublicKey{pub}, ok, func(o *Offer) { o.Signature[3] ^= 1 }, "signature"},
		{"tampered footer", []ed25519.PublicKey{pub}, ok, func(o *Offer) { o.Footer[20] ^= 1 }, "footer"},
		{"short manifest", []ed25519.PublicKey{pub}, ok, func(o *Offer) { o.Manifest = o.Manifest[1:] }, "disagrees"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := Offer{Footer: bytes.Clone(offer.Footer), Manifest: bytes.Clone(offer.Manifest), Signature: bytes.Clone(offer.Signature)}
			if c.mutate != nil {
				c.mutate(&o)
			}
			_, _, err := o.Check(c.trusted, c.floor)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.want != "" && (err == nil || !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("got %v, want a refusal mentioning %q", err, c.want)
			}
		})
	}
}

func TestWriteThenVerify(t *testing.T) {
	pub, priv := keys(t)
	path, im := makeImage(t, priv, 2)
	offer, _ := OfferFromImage(im)
	m, ft, err := offer.Check([]ed25519.PublicKey{pub}, Floor{Running: 1, SlotSize: 1 << 24})
	if err != nil {
		t.Fatal(err)
	}
	whole, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	slot := &memSlot{b: bytes.Repeat([]byte{0xee}, 1<<24)}
	var last int64
	if err := Write(slot, bytes.NewReader(whole[:BodySize(ft)]), ft, offer, nil, func(n int64) { last = n }); err != nil {
		t.Fatal(err)
	}
	if last != BodySize(ft) {
		t.Fatalf("progress ended at %d, want %d", last, BodySize(ft))
	}
	if !bytes.Equal(slot.b[:len(whole)], whole) {
		t.Fatal("the slot does not hold the image byte for byte")
	}
	if err := Verify(slot, ft, m, []ed25519.PublicKey{pub}, 2); err != nil {
		t.Fatalf("verify: %v", err)
	}
	slot.b[5000] ^= 1
	if err := Verify(slot, ft, m, []ed25519.PublicKey{pub}, 2); err == nil {
		t.Fatal("verify accepted a slot with a flipped data byte")
	}
}

func TestWriteShortBody(t *testing.T) {
	pub, priv := keys(t)
	path, im := makeImage(t, priv, 2)
	offer, _ := OfferFromImage(im)
	_, ft, err := offer.Check([]ed25519.PublicKey{pub}, Floor{Running: 1, SlotSize: 1 << 24})
	if err != nil {
		t.Fatal(err)
	}
	whole, _ := os.ReadFile(path)
	slot := &memSlot{b: make([]byte, 1<<24)}
	err = Write(slot, bytes.NewReader(whole[:100]), ft, offer, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "read update body") {
		t.Fatalf("a cut stream must fail the write, got %v", err)
	}
}
