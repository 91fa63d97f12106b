// Package sbkeys makes and loads the owner's UEFI Secure Boot key pair: an RSA private key
// (PKCS#8 PEM) and a self-signed X.509 certificate (PEM) that the firmware holds as PK, KEK and
// db and that signs the boot program.
//
// The key is random; the certificate is a pure function of the key and the common name (fixed
// validity, serial number derived from the public key, deterministic PKCS#1 v1.5 signature), so
// writing it again from the same key gives the same bytes.
package sbkeys

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"alpinespine.org/spine/internal/format/keys"
)

// File names written beside the Ed25519 pair by spine keygen.
const (
	KeyFile  = "uefi.key"
	CertFile = "uefi.crt"
)

// Bits is the RSA modulus size. 2048 bits is what every UEFI implementation must verify (the
// Microsoft UEFI CAs that ship in firmware are RSA-2048, and some firmware refuses larger db keys).
const Bits = 2048

// DefaultCommonName names the certificate when the owner gives no name.
const DefaultCommonName = "Alpine Spine Secure Boot"

// The certificate's validity. UEFI firmware has no trusted clock and does not check it; fixed
// dates keep the certificate reproducible. 9999-12-31T23:59:59Z is RFC 5280's "no expiry".
var (
	notBefore = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	notAfter  = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
)

// Pair is a loaded key and its certificate.
type Pair struct {
	Key  *rsa.PrivateKey
	Cert *x509.Certificate
}

// NewKey generates a new RSA key of Bits bits.
func NewKey() (*rsa.PrivateKey, error) {
	k, err := rsa.GenerateKey(rand.Reader, Bits)
	if err != nil {
		return nil, fmt.Errorf("generate RSA key: %w", err)
	}
	return k, nil
}

// Certificate returns the DER self-signed certificate of key with the given common name. It is
// a CA certificate (PK and KEK sign other keys) usable for code signing (db).
func Certificate(key *rsa.PrivateKey, commonName string) ([]byte, error) {
	if commonName == "" {
		return nil, errors.New("certificate: empty common name")
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("certificate: encode public key: %w", err)
	}
	// A positive 127-bit serial number from the public key: unique per key, same every time.
	sum := sha256.Sum256(pub)
	sum[0] &= 0x7f
	serial := new(big.Int).SetBytes(sum[:16])
	name := pkix.Name{CommonName: commonName}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               name,
		Issuer:                name,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
		BasicConstraintsValid: true,
		IsCA:                  true,
		SignatureAlgorithm:    x509.SHA256WithRSA,
	}
	// PKCS#1 v1.5 signatures use no randomness, so rand.Reader does not make the bytes vary.
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("certificate: sign: %w", err)
	}
	return der, nil
}

// EncodeKey renders key as PKCS#8 PEM.
func EncodeKey(key *rsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode RSA key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// EncodeCert renders a DER certificate as PEM.
func EncodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// ParseKey decodes an RSA private key from PEM, PKCS#8 ("PRIVATE KEY") or PKCS#1 ("RSA PRIVATE
// KEY"), the two forms openssl writes.
func ParseKey(data []byte) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	switch block.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse PKCS#8 key: %w", err)
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("parse PKCS#8 key: %T is not an RSA key", k)
		}
		return rk, nil
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse PKCS#1 key: %w", err)
		}
		return k, nil
	default:
		return nil, fmt.Errorf("PEM block %q is not an RSA private key", block.Type)
	}
}

// ParseCert decodes an X.509 certificate with an RSA key from PEM or DER.
func ParseCert(data []byte) (*x509.Certificate, error) {
	der := data
	if block, _ := pem.Decode(data); block != nil {
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %q is not a certificate", block.Type)
		}
		der = block.Bytes
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	if _, ok := c.PublicKey.(*rsa.PublicKey); !ok {
		return nil, fmt.Errorf("certificate %q: %T key, UEFI Secure Boot wants RSA", c.Subject.CommonName, c.PublicKey)
	}
	return c, nil
}

// LoadCert reads a certificate file (PEM or DER).
func LoadCert(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	c, err := ParseCert(data)
	if err != nil {
		return nil, fmt.Errorf("certificate %q: %w", path, err)
	}
	return c, nil
}

// Load reads a key and its certificate and checks that they belong together.
func Load(keyPath, certPath string) (Pair, error) {
	data, err := os.ReadFile(keyPath)
	if err != nil {
		return Pair{}, fmt.Errorf("read UEFI key: %w", err)
	}
	key, err := ParseKey(data)
	if err != nil {
		return Pair{}, fmt.Errorf("UEFI key %q: %w", keyPath, err)
	}
	cert, err := LoadCert(certPath)
	if err != nil {
		return Pair{}, err
	}
	if !key.PublicKey.Equal(cert.PublicKey.(*rsa.PublicKey)) {
		return Pair{}, fmt.Errorf("UEFI key %q does not match certificate %q", keyPath, certPath)
	}
	return Pair{Key: key, Cert: cert}, nil
}

// Sign signs a SHA-256 digest with PKCS#1 v1.5, the scheme Authenticode and UEFI use.
func (p Pair) Sign(digest []byte) ([]byte, error) {
	sig, err := rsa.SignPKCS1v15(nil, p.Key, crypto.SHA256, digest)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	return sig, nil
}

// Generate writes a new key (KeyFile, mode 0600) and its certificate (CertFile, 0644) into dir.
// It never overwrites an existing file.
func Generate(dir, commonName string) error {
	keyPath, certPath := filepath.Join(dir, KeyFile), filepath.Join(dir, CertFile)
	for _, p := range []string{keyPath, certPath} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("refuse to overwrite existing key %q", p)
		}
	}
	key, err := NewKey()
	if err != nil {
		return err
	}
	der, err := Certificate(key, commonName)
	if err != nil {
		return err
	}
	keyPEM, err := EncodeKey(key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create key dir %q: %w", dir, err)
	}
	if err := keys.WriteNew(keyPath, keyPEM, 0o600); err != nil {
		return err
	}
	if err := keys.WriteNew(certPath, EncodeCert(der), 0o644); err != nil {
		os.Remove(keyPath)
		return err
	}
	return nil
}
