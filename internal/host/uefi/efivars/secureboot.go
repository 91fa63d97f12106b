package efivars

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"fmt"
)

// Names of the Secure Boot variables this package writes.
const (
	NamePK               = "PK"
	NameKEK              = "KEK"
	NameDB               = "db"
	NameSecureBootEnable = "SecureBootEnable"
	NameVendorKeysNv     = "VendorKeysNv"
)

// signatureListHeader is EFI_SIGNATURE_LIST without its entries: SignatureType,
// SignatureListSize, SignatureHeaderSize, SignatureSize; each EFI_SIGNATURE_DATA then starts
// with its 16-byte SignatureOwner.
const (
	signatureListHeader = 28
	signatureOwnerSize  = 16
)

// attrKeys are the attributes of PK, KEK and db: non-volatile, visible at boot and run time,
// writable only with a time-based authenticated write (signed by the key above them).
const attrKeys = AttrNonVolatile | AttrBootService | AttrRuntime | AttrTimeBasedAuthWrite

// SignatureList returns an EFI_SIGNATURE_LIST holding one DER certificate owned by owner.
func SignatureList(owner GUID, certDER []byte) []byte {
	b := make([]byte, signatureListHeader+signatureOwnerSize+len(certDER))
	copy(b, CertX509[:])
	binary.LittleEndian.PutUint32(b[16:], uint32(len(b)))
	binary.LittleEndian.PutUint32(b[20:], 0)
	binary.LittleEndian.PutUint32(b[24:], uint32(signatureOwnerSize+len(certDER)))
	copy(b[signatureListHeader:], owner[:])
	copy(b[signatureListHeader+signatureOwnerSize:], certDER)
	return b
}

// OwnerGUID is the SignatureOwner recorded with a certificate: derived from the certificate so
// the same certificate gives the same store, shaped as an RFC 4122 version 4 GUID.
func OwnerGUID(certDER []byte) GUID {
	sum := sha256.Sum256(append([]byte("alpinespine.org/spine/uefi-owner\x00"), certDER...))
	var g GUID
	copy(g[:], sum[:16])
	g[7] = g[7]&0x0f | 0x40 // version, in the little-endian third field
	g[8] = g[8]&0x3f | 0x80 // variant
	return g
}

// EnrollOwner enrolls one certificate as the platform key (PK), the only key exchange key
// (KEK) and the only allowed signer of boot programs (db), and switches Secure Boot on. With a
// PK present the firmware starts in user mode and enforces signatures; the keys are the owner's,
// not the platform vendor's (VendorKeysNv 0). Time stamps stay zero, so the owner's first
// signed update of any of them is accepted as newer.
func (s *Store) EnrollOwner(certDER []byte) error {
	if _, err := x509.ParseCertificate(certDER); err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	esl := SignatureList(OwnerGUID(certDER), certDER)
	for _, v := range []Variable{
		// db and KEK before PK: writing PK ends setup mode on a live machine, and the offline
		// store keeps the same order so it reads like a firmware enrolment.
		{Name: NameDB, Vendor: ImageSecurityDatabase, Attributes: attrKeys, Data: esl},
		{Name: NameKEK, Vendor: GlobalVariable, Attributes: attrKeys, Data: esl},
		{Name: NamePK, Vendor: GlobalVariable, Attributes: attrKeys, Data: esl},
		{Name: NameSecureBootEnable, Vendor: SecureBootEnableDisable, Attributes: AttrNonVolatile | AttrBootService, Data: []byte{1}},
		{Name: NameVendorKeysNv, Vendor: VendorKeysNv, Attributes: AttrNonVolatile | AttrBootService | AttrTimeBasedAuthWrite, Data: []byte{0}},
	} {
		if err := s.Set(v); err != nil {
			return fmt.Errorf("enroll: %w", err)
		}
	}
	return nil
}
