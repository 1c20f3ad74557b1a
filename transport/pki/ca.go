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
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"time"

	"github.com/cofferhq/coffer/transport"
)

const (
	// CAValidity is how long a new cluster CA is valid.
	CAValidity = 10 * 365 * 24 * time.Hour
	// DefaultValidity is used by Issue when IssueRequest.Validity is zero.
	DefaultValidity = 365 * 24 * time.Hour
	// backdate is subtracted from NotBefore to tolerate clock skew between peers.
	backdate = 5 * time.Minute
)

// ErrInvalid marks bad input: malformed PEM, a key that does not match, an unknown role.
var ErrInvalid = errors.New("pki: invalid")

// CA is a cluster certificate authority. It is safe for concurrent use (it is immutable).
type CA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
	keyPEM  []byte
	// rootPEM is the cluster root CA certificate: certPEM itself for a root, the root
	// that signed it for an issuer (LoadIssuer). Issued certificates carry certPEM after
	// the leaf when the CA is an issuer, so peers that trust only the root verify them.
	rootPEM []byte
	issuer  bool
}

// NewCA creates a self-signed ECDSA P-256 root CA named commonName, valid from now
// (backdated by a few minutes for clock skew) for CAValidity. Its path length is 1: it
// signs leaf certificates and the issuing CAs of meta servers (SignIssuer), which sign
// only leaves.
func NewCA(commonName string, now time.Time) (*CA, error) {
	if commonName == "" {
		return nil, fmt.Errorf("pki: new CA: %w: empty common name", ErrInvalid)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: new CA: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("pki: new CA: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"coffer"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("pki: new CA: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, fmt.Errorf("pki: new CA: %w", err)
	}
	return LoadCA(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM)
}

// LoadCA parses a CA certificate and its private key (PKCS#8 or SEC 1 "EC PRIVATE KEY").
// It fails with ErrInvalid when the certificate is not a CA or the key does not match.
// The slices are not retained.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	certs, err := parseCerts(certPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: load CA: %w", err)
	}
	cert := certs[0]
	if !cert.IsCA {
		return nil, fmt.Errorf("pki: load CA: %w: certificate %q is not a CA", ErrInvalid, cert.Subject.CommonName)
	}
	signer, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: load CA: %w", err)
	}
	key, ok := signer.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("pki: load CA: %w: key is %T, want ECDSA", ErrInvalid, signer)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("pki: load CA: %w: key does not match certificate %q", ErrInvalid, cert.Subject.CommonName)
	}
	return &CA{
		cert:    cert,
		key:     key,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}),
		keyPEM:  bytes.Clone(keyPEM),
		rootPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}),
	}, nil
}

// RootPEM returns the cluster root CA certificate in PEM form (a fresh copy): the CA's
// own certificate for a root, the root that signed it for an issuer. It is what every
// node, agent and admin trusts.
func (ca *CA) RootPEM() []byte { return bytes.Clone(ca.rootPEM) }

// IsIssuer reports whether the CA is a meta server's issuing CA (LoadIssuer) rather than
// the cluster root.
func (ca *CA) IsIssuer() bool { return ca.issuer }

// CertPEM returns the CA certificate in PEM form (a fresh copy).
func (ca *CA) CertPEM() []byte { return bytes.Clone(ca.certPEM) }

// KeyPEM returns the CA private key in PEM form (a fresh copy). Guard it.
func (ca *CA) KeyPEM() []byte { return bytes.Clone(ca.keyPEM) }

// Certificate returns the parsed CA certificate. The caller must not modify it.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// IssueRequest describes a certificate to issue.
type IssueRequest struct {
	CommonName string         // the principal name
	Role       transport.Role // node, admin or agent
	IPs        []net.IP       // IP SANs (informational: peers are not checked by address)
	DNS        []string       // DNS SANs (informational)
	Validity   time.Duration  // zero means DefaultValidity; capped at the CA's expiry
	// Vaults scopes an agent, restore-operator or replication certificate to these
	// vaults (URI SANs "coffer:vault:NAME"); empty means every vault, except for a
	// replication certificate, which must name at least one.
	Vaults []string
}

// Issue creates a new ECDSA P-256 key and a certificate for it signed by the CA. The role
// goes in the OrganizationalUnit and the principal in the CommonName. Node certificates get
// server and client auth EKUs; admin and agent certificates client auth only. Bad requests
// fail with ErrInvalid.
func (ca *CA) Issue(req IssueRequest, now time.Time) (certPEM, keyPEM []byte, err error) {
	tmpl, err := ca.template(req, now)
	if err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: issue %s: %w", req.CommonName, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, fmt.Errorf("pki: issue %s: %w", req.CommonName, err)
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: issue %s: %w", req.CommonName, err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: issue %s: %w", req.CommonName, err)
	}
	return ca.withChain(der), keyPEM, nil
}

// withChain returns the PEM of the certificate der followed, when the CA is an issuer,
// by the issuer's own certificate: the chain a peer trusting only the root verifies.
func (ca *CA) withChain(der []byte) []byte {
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if ca.issuer {
		out = append(out, ca.certPEM...)
	}
	return out
}

// template validates req and returns the certificate template for it, without serial.
func (ca *CA) template(req IssueRequest, now time.Time) (*x509.Certificate, error) {
	if req.CommonName == "" {
		return nil, fmt.Errorf("pki: issue: %w: empty common name", ErrInvalid)
	}
	var eku []x509.ExtKeyUsage
	switch req.Role {
	case transport.RoleNode, transport.RoleMeta:
		eku = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	case transport.RoleAdmin, transport.RoleAgent, transport.RoleRestore, transport.RoleReplication:
		eku = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	default:
		return nil, fmt.Errorf("pki: issue %s: %w: unknown role %q", req.CommonName, ErrInvalid, req.Role)
	}
	if req.Validity < 0 {
		return nil, fmt.Errorf("pki: issue %s: %w: negative validity %v", req.CommonName, ErrInvalid, req.Validity)
	}
	validity := req.Validity
	if validity == 0 {
		validity = DefaultValidity
	}
	notAfter := now.Add(validity)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	if req.Role == transport.RoleReplication && len(req.Vaults) == 0 {
		return nil, fmt.Errorf("pki: issue %s: %w: a replication certificate names the vaults it replicates", req.CommonName, ErrInvalid)
	}
	var uris []*url.URL
	for _, v := range req.Vaults {
		u, err := url.Parse(vaultURIPrefix + v)
		if v == "" || err != nil || u.String() != vaultURIPrefix+v {
			return nil, fmt.Errorf("pki: issue %s: %w: vault name %q cannot go in a certificate", req.CommonName, ErrInvalid, v)
		}
		uris = append(uris, u)
	}
	return &x509.Certificate{
		Subject: pkix.Name{
			CommonName:         req.CommonName,
			OrganizationalUnit: []string{string(req.Role)},
			Organization:       []string{"coffer"},
		},
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           eku,
		BasicConstraintsValid: true,
		IPAddresses:           req.IPs,
		DNSNames:              req.DNS,
		URIs:                  uris,
	}, nil
}

func newSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// parseCerts returns every CERTIFICATE block in data, in order; at least one.
func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate: %w", ErrInvalid, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no PEM CERTIFICATE block", ErrInvalid)
	}
	return out, nil
}

func parseKey(data []byte) (crypto.Signer, error) {
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, fmt.Errorf("%w: no PEM private key block", ErrInvalid)
		}
		switch b.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%w: private key: %w", ErrInvalid, err)
			}
			s, ok := k.(crypto.Signer)
			if !ok {
				return nil, fmt.Errorf("%w: private key of type %T cannot sign", ErrInvalid, k)
			}
			return s, nil
		case "EC PRIVATE KEY":
			k, err := x509.ParseECPrivateKey(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%w: private key: %w", ErrInvalid, err)
			}
			return k, nil
		}
	}
}
