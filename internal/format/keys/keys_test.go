package keys

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func generate(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "keys")
	if err := Generate(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestGenerateFiles(t *testing.T) {
	dir := generate(t)
	st, err := os.Stat(filepath.Join(dir, PrivateFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s mode %v, want 0600", PrivateFile, st.Mode().Perm())
	}
	for _, tc := range []struct{ name, pemType string }{
		{PrivateFile, "PRIVATE KEY"},
		{PublicFile, "PUBLIC KEY"},
	} {
		data, err := os.ReadFile(filepath.Join(dir, tc.name))
		if err != nil {
			t.Fatal(err)
		}
		block, rest := pem.Decode(data)
		if block == nil || block.Type != tc.pemType || len(bytes.TrimSpace(rest)) != 0 {
			t.Errorf("%s is not a single PEM %q block:\n%s", tc.name, tc.pemType, data)
		}
	}
	priv, err := LoadPrivate(filepath.Join(dir, PrivateFile))
	if err != nil {
		t.Fatal(err)
	}
	pubs, err := LoadPublic(filepath.Join(dir, PublicFile))
	if err != nil {
		t.Fatal(err)
	}
	if !priv.Public().(ed25519.PublicKey).Equal(pubs[0]) {
		t.Error("spine.pub is not the public half of spine.key")
	}
	msg := []byte("manifest")
	if i, err := Verify(pubs, msg, ed25519.Sign(priv, msg)); err != nil || i != 0 {
		t.Errorf("Verify = %d, %v", i, err)
	}
}

// TestOpenSSL checks that OpenSSL reads both files: the point of the standard encodings.
func TestOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatal("openssl not found: apt-get install openssl")
	}
	dir := generate(t)
	for _, args := range [][]string{
		{"pkey", "-in", filepath.Join(dir, PrivateFile), "-noout"},
		{"pkey", "-pubin", "-in", filepath.Join(dir, PublicFile), "-noout"},
	} {
		if out, err := exec.Command(openssl, args...).CombinedOutput(); err != nil {
			t.Errorf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// OpenSSL's own view of the public key must be ours.
	out, err := exec.Command(openssl, "pkey", "-in", filepath.Join(dir, PrivateFile), "-pubout").Output()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(filepath.Join(dir, PublicFile))
	if !bytes.Equal(out, want) {
		t.Errorf("openssl derives public key\n%s\nspine.pub holds\n%s", out, want)
	}
}

func TestGenerateRefusesOverwrite(t *testing.T) {
	for _, existing := range []string{PrivateFile, PublicFile} {
		t.Run(existing, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, existing)
			if err := os.WriteFile(p, []byte("precious"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := Generate(dir); err == nil {
				t.Fatal("Generate overwrote an existing key")
			}
			if data, _ := os.ReadFile(p); string(data) != "precious" {
				t.Errorf("%s was changed: %q", existing, data)
			}
			other := PublicFile
			if existing == PublicFile {
				other = PrivateFile
			}
			if _, err := os.Lstat(filepath.Join(dir, other)); err == nil {
				t.Errorf("%s written although %s exists", other, existing)
			}
		})
	}
	// A second Generate into the same directory changes nothing.
	dir := generate(t)
	before, _ := os.ReadFile(filepath.Join(dir, PrivateFile))
	if err := Generate(dir); err == nil {
		t.Fatal("second Generate succeeded")
	}
	after, _ := os.ReadFile(filepath.Join(dir, PrivateFile))
	if !bytes.Equal(before, after) {
		t.Error("second Generate changed spine.key")
	}
}

func TestParseRefuses(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecPriv, _ := x509.MarshalPKCS8PrivateKey(ec)
	ecPub, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	pemOf := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }

	for name, data := range map[string][]byte{
		"empty":     nil,
		"not pem":   []byte("hello"),
		"wrong pem": pemOf("PUBLIC KEY", ecPub),
		"garbage":   pemOf("PRIVATE KEY", []byte{1, 2, 3}),
		"ecdsa":     pemOf("PRIVATE KEY", ecPriv),
	} {
		if _, err := ParsePrivate(data); err == nil {
			t.Errorf("ParsePrivate(%s) succeeded", name)
		}
	}
	for name, data := range map[string][]byte{
		"empty":     nil,
		"wrong pem": pemOf("PRIVATE KEY", ecPriv),
		"garbage":   pemOf("PUBLIC KEY", []byte{1, 2, 3}),
		"ecdsa":     pemOf("PUBLIC KEY", ecPub),
	} {
		if _, err := ParsePublic(data); err == nil {
			t.Errorf("ParsePublic(%s) succeeded", name)
		}
	}
	if _, err := LoadPublic(filepath.Join(t.TempDir(), "missing.pub")); err == nil {
		t.Error("LoadPublic of a missing file succeeded")
	}
}

func TestVerify(t *testing.T) {
	pub1, priv1, _ := ed25519.GenerateKey(rand.Reader)
	pub2, _, _ := ed25519.GenerateKey(rand.Reader)
	msg := []byte("manifest bytes")
	sig := ed25519.Sign(priv1, msg)

	if i, err := Verify([]ed25519.PublicKey{pub2, pub1}, msg, sig); err != nil || i != 1 {
		t.Errorf("rotation: Verify = %d, %v; want 1", i, err)
	}
	if _, err := Verify([]ed25519.PublicKey{pub2}, msg, sig); !errors.Is(err, ErrUntrusted) {
		t.Errorf("other key: %v, want ErrUntrusted", err)
	}
	if _, err := Verify(nil, msg, sig); !errors.Is(err, ErrUntrusted) {
		t.Errorf("no keys: %v, want ErrUntrusted", err)
	}
	bad := bytes.Clone(sig)
	bad[10] ^= 1
	if _, err := Verify([]ed25519.PublicKey{pub1}, msg, bad); !errors.Is(err, ErrUntrusted) {
		t.Errorf("flipped signature: %v", err)
	}
	if _, err := Verify([]ed25519.PublicKey{pub1}, append(msg, '!'), sig); !errors.Is(err, ErrUntrusted) {
		t.Errorf("changed message: %v", err)
	}
	if _, err := Verify([]ed25519.PublicKey{pub1}, msg, sig[:63]); err == nil {
		t.Error("short signature accepted")
	}
	enc, err := EncodePublic(pub1)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParsePublic(enc)
	if err != nil || !back.Equal(pub1) {
		t.Errorf("EncodePublic/ParsePublic round trip: %v", err)
	}
}

// TestEncodingMatchesX509: the fixed-header encodings are byte for byte what crypto/x509 writes,
// and keys that OpenSSL generates parse to the same key x509 reads.
func TestEncodingMatchesX509(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ours, err := EncodePublic(pub)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(pub)
	if want := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}); !bytes.Equal(ours, want) {
		t.Errorf("public key PEM\n%s\nx509 writes\n%s", ours, want)
	}
	der, _ = x509.MarshalPKCS8PrivateKey(priv)
	if !bytes.Equal(append(bytes.Clone(pkcs8Prefix), priv.Seed()...), der) {
		t.Errorf("private key DER differs from x509's %x", der)
	}

	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatal("openssl not found: apt-get install openssl")
	}
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "k.pem")
	if out, err := exec.Command(openssl, "genpkey", "-algorithm", "ed25519", "-out", keyFile).CombinedOutput(); err != nil {
		t.Fatalf("openssl genpkey: %v\n%s", err, out)
	}
	pubPEM, err := exec.Command(openssl, "pkey", "-in", keyFile, "-pubout").Output()
	if err != nil {
		t.Fatal(err)
	}
	privPEM, _ := os.ReadFile(keyFile)
	gotPriv, err := ParsePrivate(privPEM)
	if err != nil {
		t.Fatalf("ParsePrivate(openssl key): %v", err)
	}
	gotPub, err := ParsePublic(pubPEM)
	if err != nil {
		t.Fatalf("ParsePublic(openssl key): %v", err)
	}
	block, _ := pem.Decode(privPEM)
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !gotPriv.Equal(k) || !gotPub.Equal(gotPriv.Public()) {
		t.Error("the keys parsed from OpenSSL's files differ from x509's reading")
	}
}

// FuzzParsePublic: trusted keys cross into PID 1; the parser never panics and accepts only
// what x509 accepts as an Ed25519 key.
func FuzzParsePublic(f *testing.F) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	good, _ := EncodePublic(pub)
	f.Add(good)
	f.Add([]byte("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := ParsePublic(data)
		if err != nil {
			return
		}
		block, _ := pem.Decode(data)
		x, xerr := x509.ParsePKIXPublicKey(block.Bytes)
		if xerr != nil || !k.Equal(x) {
			t.Errorf("ParsePublic accepted %x; x509 says %v, %v", block.Bytes, x, xerr)
		}
	})
}
