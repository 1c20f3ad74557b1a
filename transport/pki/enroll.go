package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// SerialString renders a certificate serial number the way Coffer names it everywhere
// (transport.Peer.Serial, revocations, the CLI): lower-case hex without leading zeros.
func SerialString(n *big.Int) string {
	if n == nil {
		return ""
	}
	return n.Text(16)
}

// ParseSerial parses a serial number written in hex, optionally with colons (as openssl
// prints it) or a 0x prefix, and returns it in SerialString form. It fails with ErrInvalid
// on anything else.
func ParseSerial(s string) (string, error) {
	h := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), ":", ""))
	h = strings.TrimPrefix(h, "0x")
	n, ok := new(big.Int).SetString(h, 16)
	if h == "" || !ok || n.Sign() <= 0 {
		return "", fmt.Errorf("pki: serial %q: %w: want a positive hex number", s, ErrInvalid)
	}
	return SerialString(n), nil
}

// NewSerial returns a fresh random 127-bit certificate serial number.
func NewSerial() (*big.Int, error) {
	n, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("pki: serial: %w", err)
	}
	return n, nil
}

// NewKeyAndCSR generates an ECDSA P-256 private key and a certificate signing request for
// commonName signed by it (proof of possession). The key never leaves the caller: only
// the CSR is sent to be signed.
func NewKeyAndCSR(commonName string) (csrDER, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: new key: %w", err)
	}
	csrDER, err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: commonName},
	}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: certificate request: %w", err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: new key: %w", err)
	}
	return csrDER, keyPEM, nil
}

// ParseCSR parses a DER certificate signing request and checks its self-signature (the
// requester holds the private key). It returns the public key, which must be ECDSA P-256
// or Ed25519. Errors wrap ErrInvalid.
func ParseCSR(der []byte) (crypto.PublicKey, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("pki: certificate request: %w: %w", ErrInvalid, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("pki: certificate request: %w: signature: %w", ErrInvalid, err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("pki: certificate request: %w: ECDSA curve %s, want P-256", ErrInvalid, k.Curve.Params().Name)
		}
	default:
		if _, ok := csr.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || csr.PublicKeyAlgorithm != x509.Ed25519 {
			return nil, fmt.Errorf("pki: certificate request: %w: key type %T, want ECDSA P-256 or Ed25519", ErrInvalid, csr.PublicKey)
		}
	}
	return csr.PublicKey, nil
}

// Sign issues a certificate for pub (a key the CA never sees the private half of) with
// the given serial, like Issue otherwise: role in the OU, principal in the CN, vault
// scopes as URI SANs, followed by the issuer's certificate when the CA is an issuer.
// Bad requests fail with ErrInvalid.
func (ca *CA) Sign(pub crypto.PublicKey, serial *big.Int, req IssueRequest, now time.Time) (certPEM []byte, err error) {
	if serial == nil || serial.Sign() <= 0 {
		return nil, fmt.Errorf("pki: sign %s: %w: serial must be positive", req.CommonName, ErrInvalid)
	}
	tmpl, err := ca.template(req, now)
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("pki: sign %s: %w", req.CommonName, err)
	}
	return ca.withChain(der), nil
}

// NewAnonymousIdentity returns an identity with no certificate that trusts the CAs in
// caPEM: an agent that is enrolling and has no certificate yet. An endpoint built on it
// can only dial (never listen), speaks the enrollment protocol, and still verifies every
// server's certificate against the CA. Errors wrap ErrInvalid.
func NewAnonymousIdentity(caPEM []byte) (*Identity, error) {
	cas, err := parseCerts(caPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: anonymous identity CA: %w", err)
	}
	roots := x509.NewCertPool()
	for _, c := range cas {
		if !c.IsCA {
			return nil, fmt.Errorf("pki: anonymous identity: %w: %q in the CA file is not a CA", ErrInvalid, c.Subject.CommonName)
		}
		roots.AddCert(c)
	}
	id := &Identity{roots: roots, anonymous: true}
	// The secret only keys this endpoint's stateless resets; random is right for a
	// short-lived client.
	var seed [32]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return nil, fmt.Errorf("pki: anonymous identity: %w", err)
	}
	id.secret = sha256.Sum256(seed[:])
	return id, nil
}

// Anonymous reports whether the identity has no certificate (NewAnonymousIdentity).
func (id *Identity) Anonymous() bool { return id.anonymous }

// anonymousClientTLS is ClientTLS for an identity without a certificate: it presents
// none and verifies the server like ClientTLS does.
func (id *Identity) anonymousClientTLS(alpn ...string) *tls.Config {
	roots := id.roots
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         append([]string(nil), alpn...),
		InsecureSkipVerify: true, // host names are not checked; see ClientTLS
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyServer(cs, roots)
		},
	}
}

// EnrollServerTLS returns the TLS 1.3 server configuration for the enrollment protocol:
// it presents this identity, asks for no client certificate and advertises alpn only.
// Session tickets are off, so no session of this protocol can be resumed elsewhere.
func (id *Identity) EnrollServerTLS(alpn string) *tls.Config {
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{id.cert},
		ClientAuth:             tls.NoClientCert,
		NextProtos:             []string{alpn},
		SessionTicketsDisabled: true,
	}
}
