// Package keys handles the Ed25519 keys that sign Spine manifests, in the standard PEM
// encodings (PKCS#8 for private keys, PKIX for public keys) so that OpenSSL can check a
// signature too.
package keys

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// File names written by Generate.
const (
	PrivateFile = "spine.key"
	PublicFile  = "spine.pub"
)

// An Ed25519 key has exactly one DER encoding in each format (RFC 8410), so the keys are encoded
// and parsed as a fixed header and the key bytes. This keeps crypto/x509, and the net package it
// drags in, out of PID 1, which reads the trusted keys.
var (
	// pkixPrefix is SubjectPublicKeyInfo{AlgorithmIdentifier{id-Ed25519}, BIT STRING(32 bytes)}.
	pkixPrefix = []byte{0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00}
	// pkcs8Prefix is OneAsymmetricKey{v1, id-Ed25519, OCTET STRING(OCTET STRING(32-byte seed))}.
	pkcs8Prefix = []byte{0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20}
)

// ErrUntrusted means no trusted key verifies the signature.
var ErrUntrusted = errors.New("signature is not made by a trusted key")

// Generate writes a new key pair into dir (PrivateFile, mode 0600; PublicFile, 0644). It never
// overwrites an existing key.
func Generate(dir string) error {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	return WritePair(dir, priv)
}

// WritePair writes priv and its public key into dir as Generate does. Tests and benchmarks use
// it with a key from a fixed seed, so that what carries the trusted key (stage 0) is built once,
// not once per run.
func WritePair(dir string, priv ed25519.PrivateKey) error {
	pub := priv.Public().(ed25519.PublicKey)
	privDER := append(bytes.Clone(pkcs8Prefix), priv.Seed()...)
	pubPEM, err := EncodePublic(pub)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create key dir %q: %w", dir, err)
	}
	privPath, pubPath := filepath.Join(dir, PrivateFile), filepath.Join(dir, PublicFile)
	for _, p := range []string{privPath, pubPath} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("refuse to overwrite existing key %q", p)
		}
	}
	if err := WriteNew(privPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}), 0o600); err != nil {
		return err
	}
	if err := WriteNew(pubPath, pubPEM, 0o644); err != nil {
		os.Remove(privPath)
		return err
	}
	return nil
}

// WriteNew writes a new file with mode and syncs it; it never replaces an existing file, and
// removes what it wrote when it fails.
func WriteNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("create %q: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("write %q: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("sync %q: %w", path, err)
	}
	return f.Close()
}

// EncodePublic renders a public key as PKIX PEM.
func EncodePublic(pub ed25519.PublicKey) ([]byte, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("encode public key: %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	der := append(bytes.Clone(pkixPrefix), pub...)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// ParsePrivate decodes a PKCS#8 PEM Ed25519 private key.
func ParsePrivate(data []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("not a PEM \"PRIVATE KEY\" block")
	}
	seed, ok := bytes.CutPrefix(block.Bytes, pkcs8Prefix)
	if !ok || len(seed) != ed25519.SeedSize {
		return nil, errors.New("parse PKCS#8 key: not an Ed25519 private key")
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// ParsePublic decodes a PKIX PEM Ed25519 public key.
func ParsePublic(data []byte) (ed25519.PublicKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, errors.New("not a PEM \"PUBLIC KEY\" block")
	}
	key, ok := bytes.CutPrefix(block.Bytes, pkixPrefix)
	if !ok || len(key) != ed25519.PublicKeySize {
		return nil, errors.New("parse PKIX key: not an Ed25519 public key")
	}
	return ed25519.PublicKey(bytes.Clone(key)), nil
}

// LoadPrivate reads a private key file.
func LoadPrivate(path string) (ed25519.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read private key: %w", err)
	}
	k, err := ParsePrivate(data)
	if err != nil {
		return nil, fmt.Errorf("private key %q: %w", path, err)
	}
	return k, nil
}

// LoadPublic reads public key files; several make a trusted set (key rotation).
func LoadPublic(paths ...string) ([]ed25519.PublicKey, error) {
	var out []ed25519.PublicKey
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read public key: %w", err)
		}
		k, err := ParsePublic(data)
		if err != nil {
			return nil, fmt.Errorf("public key %q: %w", p, err)
		}
		out = append(out, k)
	}
	return out, nil
}

// Verify reports which trusted key signed msg, or ErrUntrusted.
func Verify(trusted []ed25519.PublicKey, msg, sig []byte) (int, error) {
	if len(sig) != ed25519.SignatureSize {
		return -1, fmt.Errorf("signature is %d bytes, want %d", len(sig), ed25519.SignatureSize)
	}
	for i, k := range trusted {
		if ed25519.Verify(k, msg, sig) {
			return i, nil
		}
	}
	return -1, ErrUntrusted
}
