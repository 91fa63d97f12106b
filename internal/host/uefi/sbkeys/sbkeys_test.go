package sbkeys

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// testKey is generated once: RSA generation is the slow part of every test here.
var testKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := NewKey()
	if err != nil {
		panic(err)
	}
	return k
})

func openssl(t *testing.T, args ...string) string {
	t.Helper()
	p, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatal("openssl not found (scripts/deps.sh installs it)")
	}
	out, err := exec.Command(p, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestCertificateReproducible(t *testing.T) {
	k := testKey()
	a, err := Certificate(k, "owner")
	if err != nil {
		t.Fatal(err)
	}
	b, err := Certificate(k, "owner")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Error("the same key and name gave two different certificates")
	}
	c, err := Certificate(k, "other owner")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a, c) {
		t.Error("the common name does not reach the certificate")
	}
	cert, err := x509.ParseCertificate(a)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "owner" || !cert.IsCA || cert.SerialNumber.Sign() <= 0 {
		t.Errorf("certificate: CN %q, CA %v, serial %v", cert.Subject.CommonName, cert.IsCA, cert.SerialNumber)
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	if _, err := Certificate(k, ""); err == nil {
		t.Error("empty common name accepted")
	}
}

func TestGenerateOpenSSL(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	if err := Generate(dir, "Test Owner"); err != nil {
		t.Fatal(err)
	}
	key, crt := filepath.Join(dir, KeyFile), filepath.Join(dir, CertFile)
	if st, err := os.Stat(key); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("uefi.key: %v %v", st, err)
	}
	openssl(t, "rsa", "-in", key, "-check", "-noout")
	text := openssl(t, "x509", "-in", crt, "-noout", "-text")
	for _, want := range []string{"Subject: CN = Test Owner", "Issuer: CN = Test Owner", "Public-Key: (2048 bit)",
		"sha256WithRSAEncryption", "CA:TRUE", "Code Signing", "Not After : Dec 31 23:59:59 9999 GMT"} {
		if !strings.Contains(text, want) {
			t.Errorf("openssl x509 -text lacks %q:\n%s", want, text)
		}
	}
	openssl(t, "verify", "-CAfile", crt, crt)
	if a, b := openssl(t, "pkey", "-in", key, "-pubout"), openssl(t, "x509", "-in", crt, "-noout", "-pubkey"); a != b {
		t.Errorf("key and certificate hold different public keys:\n%s\n%s", a, b)
	}
	p, err := Load(key, crt)
	if err != nil {
		t.Fatal(err)
	}
	if p.Cert.Subject.CommonName != "Test Owner" {
		t.Errorf("loaded CN %q", p.Cert.Subject.CommonName)
	}
	before := [][]byte{read(t, key), read(t, crt)}
	if err := Generate(dir, "Test Owner"); err == nil || !strings.Contains(err.Error(), "refuse to overwrite") {
		t.Errorf("second Generate: %v", err)
	}
	if !bytes.Equal(before[0], read(t, key)) || !bytes.Equal(before[1], read(t, crt)) {
		t.Error("second Generate changed the keys")
	}
}

// An owner may bring keys made by openssl: PKCS#1 or PKCS#8, with their own certificate.
func TestLoadOpenSSLKeys(t *testing.T) {
	dir := t.TempDir()
	pk1, pk8, crt := filepath.Join(dir, "pkcs1.key"), filepath.Join(dir, "pkcs8.key"), filepath.Join(dir, "c.crt")
	openssl(t, "genrsa", "-traditional", "-out", pk1, "2048")
	openssl(t, "pkcs8", "-topk8", "-nocrypt", "-in", pk1, "-out", pk8)
	openssl(t, "req", "-new", "-x509", "-key", pk1, "-subj", "/CN=openssl owner", "-days", "10", "-out", crt)
	for _, k := range []string{pk1, pk8} {
		p, err := Load(k, crt)
		if err != nil {
			t.Fatalf("%s: %v", filepath.Base(k), err)
		}
		if p.Cert.Subject.CommonName != "openssl owner" {
			t.Errorf("CN %q", p.Cert.Subject.CommonName)
		}
	}
	// A key that is not the certificate's is refused by name.
	other := filepath.Join(dir, "other.key")
	openssl(t, "genrsa", "-out", other, "2048")
	if _, err := Load(other, crt); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("mismatched key: %v", err)
	}
	// An Ed25519 key is not a Secure Boot key.
	ed := filepath.Join(dir, "ed.key")
	openssl(t, "genpkey", "-algorithm", "ed25519", "-out", ed)
	if _, err := Load(ed, crt); err == nil || !strings.Contains(err.Error(), "not an RSA key") {
		t.Errorf("Ed25519 key: %v", err)
	}
	if _, err := ParseCert([]byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")); err == nil {
		t.Error("a public key PEM parsed as a certificate")
	}
}

func read(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
