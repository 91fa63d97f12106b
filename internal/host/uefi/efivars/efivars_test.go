package efivars

import (
	"bytes"
	"crypto/x509"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"alpinespine.org/spine/internal/host/uefi/ovmf"
	"alpinespine.org/spine/internal/host/uefi/sbkeys"
)

func template(t testing.TB) []byte {
	t.Helper()
	if err := ovmf.Check(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(ovmf.VarsTemplate)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func testCert(t testing.TB) []byte {
	t.Helper()
	k, err := sbkeys.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	der, err := sbkeys.Certificate(k, "efivars test")
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestGUIDConstants(t *testing.T) {
	for s, g := range map[string]GUID{
		"8BE4DF61-93CA-11D2-AA0D-00E098032B8C": GlobalVariable,
		"D719B2CB-3D3A-4596-A3BC-DAD00E67656F": ImageSecurityDatabase,
		"A5C059A1-94E4-4AA7-87B5-AB155C2BF072": CertX509,
	} {
		if g.String() != s {
			t.Errorf("GUID %s prints as %s", s, g)
		}
	}
	// The on-disk order of EFI_CERT_X509_GUID as efitools writes it.
	if want := []byte{0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72}; !bytes.Equal(CertX509[:], want) {
		t.Errorf("EFI_CERT_X509_GUID bytes % x", CertX509[:])
	}
}

func TestEnrollOwner(t *testing.T) {
	tmpl := template(t)
	s, err := Parse(tmpl)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(s.Variables()); n != 0 {
		t.Fatalf("Debian's template holds %d variables, want an empty store (setup mode)", n)
	}
	cert := testCert(t)
	if err := s.EnrollOwner(cert); err != nil {
		t.Fatal(err)
	}
	out := s.Bytes()
	if len(out) != len(tmpl) {
		t.Fatalf("store is %d bytes, template %d", len(out), len(tmpl))
	}
	// Only the variable area changed: the firmware volume header, the store header and the
	// fault-tolerant-write areas are the template's.
	if !bytes.Equal(out[:s.start], tmpl[:s.start]) || !bytes.Equal(out[s.end:], tmpl[s.end:]) {
		t.Error("bytes outside the variable area changed")
	}
	r, err := Parse(out)
	if err != nil {
		t.Fatalf("re-parse: %v", err)
	}
	esl := SignatureList(OwnerGUID(cert), cert)
	for _, c := range []struct {
		name   string
		vendor GUID
		attr   uint32
		data   []byte
	}{
		{"PK", GlobalVariable, 0x27, esl},
		{"KEK", GlobalVariable, 0x27, esl},
		{"db", ImageSecurityDatabase, 0x27, esl},
		{"SecureBootEnable", SecureBootEnableDisable, 0x03, []byte{1}},
		{"VendorKeysNv", VendorKeysNv, 0x23, []byte{0}},
	} {
		v, ok := r.Get(c.name, c.vendor)
		if !ok {
			t.Errorf("%s missing", c.name)
			continue
		}
		if v.Attributes != c.attr || !bytes.Equal(v.Data, c.data) {
			t.Errorf("%s: attributes %#x, %d data bytes; want %#x, %d", c.name, v.Attributes, len(v.Data), c.attr, len(c.data))
		}
	}
	// The certificate in db is the one enrolled.
	db, _ := r.Get("db", ImageSecurityDatabase)
	got, err := x509.ParseCertificate(db.Data[signatureListHeader+signatureOwnerSize:])
	if err != nil || !bytes.Equal(got.Raw, cert) {
		t.Errorf("db certificate: %v", err)
	}

	// Reproducible: the same template and certificate give the same bytes.
	s2, _ := Parse(tmpl)
	if err := s2.EnrollOwner(cert); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s2.Bytes(), out) {
		t.Error("two enrolments of the same certificate differ")
	}
	// Enrolling again replaces: the old records are marked deleted, one live copy each.
	if err := r.EnrollOwner(cert); err != nil {
		t.Fatal(err)
	}
	r2, err := Parse(r.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if n := len(r2.Variables()); n != 5 {
		t.Errorf("%d live variables after a second enrolment, want 5", n)
	}
	if n := len(r2.records); n != 10 {
		t.Errorf("%d records after a second enrolment, want 10", n)
	}
	if err := s.EnrollOwner([]byte("not a certificate")); err == nil {
		t.Error("enrolled garbage as a certificate")
	}
}

// The signature list is the one efitools' cert-to-efi-sig-list writes for the same owner.
func TestSignatureListEfitools(t *testing.T) {
	tool, err := exec.LookPath("cert-to-efi-sig-list")
	if err != nil {
		t.Fatal("cert-to-efi-sig-list not found (install the Debian package efitools; scripts/deps.sh does)")
	}
	dir := t.TempDir()
	cert := testCert(t)
	pemPath, eslPath := filepath.Join(dir, "c.crt"), filepath.Join(dir, "c.esl")
	if err := os.WriteFile(pemPath, sbkeys.EncodeCert(cert), 0o644); err != nil {
		t.Fatal(err)
	}
	owner := OwnerGUID(cert)
	if out, err := exec.Command(tool, "-g", owner.String(), pemPath, eslPath).CombinedOutput(); err != nil {
		t.Fatalf("cert-to-efi-sig-list: %v\n%s", err, out)
	}
	want, err := os.ReadFile(eslPath)
	if err != nil {
		t.Fatal(err)
	}
	if got := SignatureList(owner, cert); !bytes.Equal(got, want) {
		t.Errorf("signature list differs from efitools'\n got % x\nwant % x", got[:48], want[:min(48, len(want))])
	}
}

// Debian's pre-enrolled stores (made by booting EDK2's EnrollDefaultKeys) parse, and hold PK,
// KEK and db as this package writes them: the reader agrees with the firmware's own writer.
func TestParseEnrolledByFirmware(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(filepath.Dir(ovmf.VarsTemplate), "OVMF_VARS_4M.ms.fd"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		vendor GUID
	}{{"PK", GlobalVariable}, {"KEK", GlobalVariable}, {"db", ImageSecurityDatabase}, {"SecureBootEnable", SecureBootEnableDisable}} {
		v, ok := s.Get(c.name, c.vendor)
		if !ok {
			t.Errorf("%s missing from the firmware's store", c.name)
			continue
		}
		if c.name != "SecureBootEnable" && (v.Attributes != attrKeys || GUID(v.Data[:16]) != CertX509) {
			t.Errorf("%s: attributes %#x, type %s", c.name, v.Attributes, GUID(v.Data[:16]))
		}
	}
}

func TestParseRefuses(t *testing.T) {
	tmpl := template(t)
	s, _ := Parse(tmpl)
	if err := s.EnrollOwner(testCert(t)); err != nil {
		t.Fatal(err)
	}
	good := s.Bytes()
	for name, damage := range map[string]func(b []byte) []byte{
		"short":           func(b []byte) []byte { return b[:100] },
		"fv signature":    func(b []byte) []byte { b[fvOffSig] = 'x'; return b },
		"fv checksum":     func(b []byte) []byte { b[fvOffSig+5]++; return b },
		"fv length":       func(b []byte) []byte { return b[:len(b)-4096] },
		"store signature": func(b []byte) []byte { b[0x48]++; return b },
		"store size":      func(b []byte) []byte { binary.LittleEndian.PutUint32(b[0x48+16:], 1<<30); return b },
		"store state":     func(b []byte) []byte { b[0x48+21] = 0xff; return b },
		"start id":        func(b []byte) []byte { b[0x64] = 0; return b },
		"name size":       func(b []byte) []byte { binary.LittleEndian.PutUint32(b[0x64+36:], 3); return b },
		"data size":       func(b []byte) []byte { binary.LittleEndian.PutUint32(b[0x64+40:], 1<<30); return b },
		"name NUL":        func(b []byte) []byte { b[0x64+varHeaderSize+2] = 0; b[0x64+varHeaderSize+3] = 0; return b },
		"garbage after":   func(b []byte) []byte { b[s.next+8] = 0; return b },
	} {
		if _, err := Parse(damage(bytes.Clone(good))); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzParse(f *testing.F) {
	tmpl := template(f)
	s, err := Parse(tmpl)
	if err != nil {
		f.Fatal(err)
	}
	// Records shaped like an enrolment, without the cost of an RSA key in every fuzz worker.
	for _, v := range []Variable{
		{Name: NamePK, Vendor: GlobalVariable, Attributes: attrKeys, Data: SignatureList(GUID{1}, []byte("certificate"))},
		{Name: NameSecureBootEnable, Vendor: SecureBootEnableDisable, Attributes: 3, Data: []byte{1}},
		{Name: NamePK, Vendor: GlobalVariable, Attributes: attrKeys, Data: []byte{2}},
	} {
		if err := s.Set(v); err != nil {
			f.Fatal(err)
		}
	}
	// Seed with the interesting head of an enrolled store (header and first records) so the
	// fuzzer mutates structure, not megabytes of erased flash.
	f.Add(shrink(s.Bytes(), 0x1000))
	f.Add(shrink(tmpl, 0x1000))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Parse(b)
		if err != nil {
			return
		}
		r, err := Parse(s.Bytes())
		if err != nil {
			t.Fatalf("re-parse of an accepted store: %v", err)
		}
		if len(r.records) != len(s.records) {
			t.Fatalf("re-parse: %d records, first parse %d", len(r.records), len(s.records))
		}
		// Appending to an accepted store keeps it parseable.
		if s.Set(Variable{Name: "x", Vendor: GlobalVariable, Attributes: 7, Data: []byte{1}}) == nil {
			if _, err := Parse(s.Bytes()); err != nil {
				t.Fatalf("parse after Set: %v", err)
			}
		}
	})
}

// shrink cuts a store down to n bytes with consistent headers: the firmware volume and store
// sizes say n, the checksum is fixed.
func shrink(b []byte, n int) []byte {
	out := bytes.Clone(b[:n])
	binary.LittleEndian.PutUint64(out[fvOffLength:], uint64(n))
	hl := int(binary.LittleEndian.Uint16(out[fvOffHeaderLen:]))
	binary.LittleEndian.PutUint32(out[hl+16:], uint32(n-hl))
	binary.LittleEndian.PutUint16(out[50:], 0)
	var sum uint16
	for i := 0; i < hl; i += 2 {
		sum += binary.LittleEndian.Uint16(out[i:])
	}
	binary.LittleEndian.PutUint16(out[50:], -sum)
	return out
}
