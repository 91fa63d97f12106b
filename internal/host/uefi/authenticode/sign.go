package authenticode

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"fmt"
	"slices"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Object identifiers of PKCS#7 (RFC 2315), PKCS#9 and Authenticode.
var (
	oidSignedData      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
	oidContentType     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 3}
	oidMessageDigest   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 4}
	oidRSAEncryption   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidSHA256          = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidSpcIndirectData = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 2, 1, 4}
	oidSpcPEImageData  = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 2, 1, 15}
)

// obsolete is the file link every signer writes into SpcPeImageData: the BMPString
// "<<<Obsolete>>>" (the specification keeps the field, nothing reads it).
var obsolete = []byte("\x00<\x00<\x00<\x00O\x00b\x00s\x00o\x00l\x00e\x00t\x00e\x00>\x00>\x00>")

// Signer is a key and the certificate that names it.
type Signer struct {
	Key  *rsa.PrivateKey
	Cert *x509.Certificate
}

// Digest returns the SHA-256 Authenticode hash of a PE image, signed or not.
func Digest(b []byte) ([]byte, error) {
	im, err := parse(b)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	for _, r := range im.hashRegions(len(b)) {
		h.Write(b[r.off : r.off+r.size])
	}
	return h.Sum(nil), nil
}

// Sign returns a copy of the PE image b signed by s. A signature b already carries is
// replaced, not added to: the result has exactly one, s's. The result is a pure function of b,
// the key and the certificate (PKCS#1 v1.5 is deterministic and no signing time is recorded).
func Sign(b []byte, s Signer) ([]byte, error) {
	if s.Key == nil || s.Cert == nil {
		return nil, fmt.Errorf("sign: no key or certificate")
	}
	im, err := parse(b)
	if err != nil {
		return nil, err
	}
	out := b
	if im.certOff != 0 {
		out = b[:im.certOff]
	}
	// The table starts quadword aligned; the padding before it is image data, so it is hashed.
	out = append(bytes.Clone(out), make([]byte, (certAlign-len(out)%certAlign)%certAlign)...)
	putDir(out, im.certDirOff, 0, 0)
	binary.LittleEndian.PutUint32(out[im.checksumOff:], 0)
	digest, err := Digest(out)
	if err != nil {
		return nil, err
	}
	p7, err := signedData(digest, s)
	if err != nil {
		return nil, err
	}
	certOff := len(out)
	entry := make([]byte, winCertHeader, winCertHeader+len(p7)+certAlign)
	binary.LittleEndian.PutUint32(entry[0:], uint32(winCertHeader+len(p7)))
	binary.LittleEndian.PutUint16(entry[4:], winCertRevision)
	binary.LittleEndian.PutUint16(entry[6:], winCertPKCS7)
	entry = append(entry, p7...)
	entry = append(entry, make([]byte, (certAlign-len(entry)%certAlign)%certAlign)...)
	out = append(out, entry...)
	putDir(out, im.certDirOff, certOff, len(entry))
	binary.LittleEndian.PutUint32(out[im.checksumOff:], checksum(out))
	return out, nil
}

func putDir(b []byte, off, addr, size int) {
	binary.LittleEndian.PutUint32(b[off:], uint32(addr))
	binary.LittleEndian.PutUint32(b[off+4:], uint32(size))
}

// signedData returns the DER PKCS#7 SignedData (RFC 2315 §9) carrying an Authenticode
// SpcIndirectDataContent for digest, signed by s.
func signedData(digest []byte, s Signer) ([]byte, error) {
	content, err := spcIndirectData(digest)
	if err != nil {
		return nil, fmt.Errorf("sign: encode SpcIndirectDataContent: %w", err)
	}
	// The message digest covers the content's value, without its SEQUENCE tag and length
	// (Authenticode specification, "Authenticode-Specific Structures").
	inner := cryptobyte.String(content)
	var value cryptobyte.String
	if !inner.ReadASN1(&value, cbasn1.SEQUENCE) {
		return nil, fmt.Errorf("sign: malformed SpcIndirectDataContent")
	}
	contentDigest := sha256.Sum256(value)
	contentType, err := attribute(oidContentType, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oidSpcIndirectData) })
	if err != nil {
		return nil, fmt.Errorf("sign: encode attribute: %w", err)
	}
	messageDigest, err := attribute(oidMessageDigest, func(b *cryptobyte.Builder) { b.AddASN1OctetString(contentDigest[:]) })
	if err != nil {
		return nil, fmt.Errorf("sign: encode attribute: %w", err)
	}
	attrs := [][]byte{contentType, messageDigest}
	// DER orders a SET OF by the encodings of its elements.
	slices.SortFunc(attrs, bytes.Compare)
	// The signature covers the attributes encoded as a SET (tag 0x31), although they are
	// stored with the context tag [0] IMPLICIT (RFC 2315 §9.3).
	set := cryptobyte.NewBuilder(nil)
	set.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
		for _, a := range attrs {
			b.AddBytes(a)
		}
	})
	setDER, err := set.Bytes()
	if err != nil {
		return nil, fmt.Errorf("sign: encode attributes: %w", err)
	}
	attrDigest := sha256.Sum256(setDER)
	sig, err := rsa.SignPKCS1v15(nil, s.Key, crypto.SHA256, attrDigest[:])
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}

	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // ContentInfo
		b.AddASN1ObjectIdentifier(oidSignedData)
		b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // SignedData
				b.AddASN1Int64(1)
				b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) { algorithm(b, oidSHA256) })
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // contentInfo
					b.AddASN1ObjectIdentifier(oidSpcIndirectData)
					b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(content) })
				})
				b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(s.Cert.Raw) })
				b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // SignerInfo
						b.AddASN1Int64(1)
						b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // issuerAndSerialNumber
							b.AddBytes(s.Cert.RawIssuer)
							b.AddASN1BigInt(s.Cert.SerialNumber)
						})
						algorithm(b, oidSHA256)
						b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
							for _, a := range attrs {
								b.AddBytes(a)
							}
						})
						algorithm(b, oidRSAEncryption)
						b.AddASN1OctetString(sig)
					})
				})
			})
		})
	})
	der, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("sign: encode PKCS#7: %w", err)
	}
	return der, nil
}

// spcIndirectData returns the DER SpcIndirectDataContent: "this is a PE image, whose
// Authenticode SHA-256 hash is digest".
func spcIndirectData(digest []byte) ([]byte, error) {
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // SpcAttributeTypeAndOptionalValue
			b.AddASN1ObjectIdentifier(oidSpcPEImageData)
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // SpcPeImageData
				b.AddASN1BitString(nil)                                                                // flags: none
				b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { // file
					b.AddASN1(cbasn1.Tag(2).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { // SpcLink.file
						b.AddASN1(cbasn1.Tag(0).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(obsolete) })
					})
				})
			})
		})
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // DigestInfo
			algorithm(b, oidSHA256)
			b.AddASN1OctetString(digest)
		})
	})
	return b.Bytes()
}

// algorithm adds an AlgorithmIdentifier with NULL parameters.
func algorithm(b *cryptobyte.Builder, oid asn1.ObjectIdentifier) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		b.AddASN1NULL()
	})
}

// attribute returns one DER Attribute: SEQUENCE { type, SET { value } }.
func attribute(oid asn1.ObjectIdentifier, value func(*cryptobyte.Builder)) ([]byte, error) {
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		b.AddASN1(cbasn1.SET, value)
	})
	return b.Bytes()
}

// Strip returns a copy of the PE image b without its certificate table: what Sign signs, and
// what firmware with Secure Boot on refuses to run.
func Strip(b []byte) ([]byte, error) {
	im, err := parse(b)
	if err != nil {
		return nil, err
	}
	out := bytes.Clone(b)
	if im.certOff != 0 {
		out = out[:im.certOff]
	}
	putDir(out, im.certDirOff, 0, 0)
	binary.LittleEndian.PutUint32(out[im.checksumOff:], 0)
	binary.LittleEndian.PutUint32(out[im.checksumOff:], checksum(out))
	return out, nil
}
