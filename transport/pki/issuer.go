package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"time"
)

// IssuerValidity is how long a meta server's issuing CA is valid (capped at the root's
// expiry).
const IssuerValidity = 5 * 365 * 24 * time.Hour

// IssuerName is the common name of the issuing CA of the meta server with the given ID.
func IssuerName(metaID string) string { return "coffer issuer " + metaID }

// SignIssuer signs, with the root CA, an issuing CA certificate for pub, the key a meta
// server generated for itself: CommonName IssuerName(metaID), path length 0 (it signs
// leaves only), valid for validity (0: IssuerValidity; capped at the root's expiry).
// Only a root signs issuers: an issuer's SignIssuer fails with ErrInvalid.
func (ca *CA) SignIssuer(pub crypto.PublicKey, metaID string, validity time.Duration, now time.Time) ([]byte, error) {
	if ca.issuer {
		return nil, fmt.Errorf("pki: sign issuer %s: %w: only the root CA signs issuing CAs (this is %q)", metaID, ErrInvalid, ca.cert.Subject.CommonName)
	}
	if metaID == "" {
		return nil, fmt.Errorf("pki: sign issuer: %w: empty meta server ID", ErrInvalid)
	}
	if validity < 0 {
		return nil, fmt.Errorf("pki: sign issuer %s: %w: negative validity %v", metaID, ErrInvalid, validity)
	}
	if validity == 0 {
		validity = IssuerValidity
	}
	notAfter := now.Add(validity)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("pki: sign issuer %s: %w", metaID, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: IssuerName(metaID), Organization: []string{"coffer"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("pki: sign issuer %s: %w", metaID, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// LoadIssuer loads a meta server's issuing CA: its certificate (certPEM), its private key
// and the cluster root (rootPEM) that must have signed it. It fails with ErrInvalid when
// the certificate is not a CA, the root did not sign it, or the key does not match.
func LoadIssuer(rootPEM, certPEM, keyPEM []byte) (*CA, error) {
	ca, err := LoadCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: load issuer: %w", err)
	}
	roots, err := parseCerts(rootPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: load issuer: root: %w", err)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	if _, err := ca.cert.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: ca.cert.NotBefore.Add(backdate),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("pki: load issuer %q: %w: not signed by the cluster root: %w", ca.cert.Subject.CommonName, ErrInvalid, err)
	}
	if bytes.Equal(ca.cert.RawSubject, ca.cert.RawIssuer) {
		return nil, fmt.Errorf("pki: load issuer %q: %w: a self-signed root is not an issuer", ca.cert.Subject.CommonName, ErrInvalid)
	}
	ca.rootPEM = bytes.Clone(rootPEM)
	ca.issuer = true
	return ca, nil
}

// NewKey generates an ECDSA P-256 private key and returns it in PEM (PKCS#8).
func NewKey() (crypto.Signer, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: new key: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: new key: %w", err)
	}
	return key, keyPEM, nil
}

// ParseKey parses a PEM private key (PKCS#8 or SEC 1). Errors wrap ErrInvalid.
func ParseKey(keyPEM []byte) (crypto.Signer, error) {
	k, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return k, nil
}

// NewCSR returns a PEM certificate signing request for commonName signed by key (proof
// of possession).
func NewCSR(key crypto.Signer, commonName string) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: commonName},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("pki: certificate request: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// CSRFromPEM returns the DER of the first CERTIFICATE REQUEST block of data (also
// accepting "NEW CERTIFICATE REQUEST", as older openssl writes). Errors wrap ErrInvalid.
func CSRFromPEM(data []byte) ([]byte, error) {
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, fmt.Errorf("pki: certificate request: %w: no PEM CERTIFICATE REQUEST block", ErrInvalid)
		}
		if b.Type == "CERTIFICATE REQUEST" || b.Type == "NEW CERTIFICATE REQUEST" {
			return b.Bytes, nil
		}
	}
}

// ParseCSRName is ParseCSR that also returns the request's common name, which the
// signer compares with the principal it was told to certify (a request for another
// name is refused, never silently renamed).
func ParseCSRName(der []byte) (crypto.PublicKey, string, error) {
	pub, err := ParseCSR(der)
	if err != nil {
		return nil, "", err
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, "", fmt.Errorf("pki: certificate request: %w: %w", ErrInvalid, err)
	}
	return pub, csr.Subject.CommonName, nil
}

// CertInfo is what Coffer shows of a certificate: who, which role, when it is valid and
// who signed it.
type CertInfo struct {
	Serial    string
	Principal string
	Role      string // the OU; "" for a CA
	NotBefore time.Time
	NotAfter  time.Time
	Issuer    string // the signer's common name
	IsCA      bool
}

// ParseCertInfo describes the first certificate of a PEM chain. Errors wrap ErrInvalid.
func ParseCertInfo(certPEM []byte) (CertInfo, error) {
	certs, err := parseCerts(certPEM)
	if err != nil {
		return CertInfo{}, fmt.Errorf("pki: certificate: %w", err)
	}
	c := certs[0]
	info := CertInfo{Serial: SerialString(c.SerialNumber), Principal: c.Subject.CommonName, NotBefore: c.NotBefore,
		NotAfter: c.NotAfter, Issuer: c.Issuer.CommonName, IsCA: c.IsCA}
	if len(c.Subject.OrganizationalUnit) == 1 {
		info.Role = c.Subject.OrganizationalUnit[0]
	}
	return info, nil
}
