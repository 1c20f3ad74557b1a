package pki

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/cofferhq/coffer/transport"
)

// Identity is a loaded certificate with its key and the cluster CA pool it trusts. It is
// immutable and safe for concurrent use; the tls.Configs it builds may be used by many
// connections.
type Identity struct {
	cert      tls.Certificate
	leaf      *x509.Certificate
	roots     *x509.CertPool
	principal string
	role      transport.Role
	secret    [32]byte // SHA-256 of the private key (PKCS#8 DER); see DeriveSecret
	anonymous bool     // no certificate (NewAnonymousIdentity)
}

// LoadIdentity reads PEM files (see NewIdentity).
func LoadIdentity(caFile, certFile, keyFile string) (*Identity, error) {
	var data [3][]byte
	for i, f := range []string{caFile, certFile, keyFile} {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("pki: load identity: %w", err)
		}
		data[i] = b
	}
	id, err := NewIdentity(data[0], data[1], data[2])
	if err != nil {
		return nil, fmt.Errorf("pki: load identity from %s: %w", certFile, err)
	}
	if err := id.checkIssued(); err != nil {
		return nil, fmt.Errorf("pki: load identity: %s and %s: %w", certFile, caFile, err)
	}
	return id, nil
}

// checkIssued reports, wrapping ErrInvalid, when no trusted CA issued the certificate (at
// its own NotBefore, so that expiry is left to the handshake).
func (id *Identity) checkIssued() error {
	inter := x509.NewCertPool()
	for _, der := range id.cert.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	_, err := id.leaf.Verify(x509.VerifyOptions{Roots: id.roots, Intermediates: inter,
		CurrentTime: id.leaf.NotBefore, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return fmt.Errorf("%w: certificate %q was not issued by a trusted CA: %w", ErrInvalid, id.principal, err)
	}
	return nil
}

// NewIdentity builds an Identity from PEM: caPEM holds one or more trusted CA certificates
// (more than one during a CA rotation), certPEM the leaf (optionally followed by
// intermediates), keyPEM its private key. It fails with ErrInvalid when the key does not
// match or the leaf has no known role. It does not check that a CA in caPEM issued the
// leaf (LoadIdentity, the operator's path, does): peers refuse such a certificate at the
// handshake, which tests of that refusal rely on. Validity dates are checked by peers at
// every handshake. The slices are not retained.
func NewIdentity(caPEM, certPEM, keyPEM []byte) (*Identity, error) {
	cas, err := parseCerts(caPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: identity CA: %w", err)
	}
	roots := x509.NewCertPool()
	for _, c := range cas {
		if !c.IsCA {
			return nil, fmt.Errorf("pki: identity: %w: %q in the CA file is not a CA", ErrInvalid, c.Subject.CommonName)
		}
		roots.AddCert(c)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: identity: %w: %w", ErrInvalid, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("pki: identity: %w: %w", ErrInvalid, err)
		}
		cert.Leaf = leaf
	}
	role, err := roleOf(leaf)
	if err != nil {
		return nil, fmt.Errorf("pki: identity: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("pki: identity: %w: private key: %w", ErrInvalid, err)
	}
	return &Identity{cert: cert, leaf: leaf, roots: roots, principal: leaf.Subject.CommonName, role: role,
		secret: sha256.Sum256(keyDER)}, nil
}

// DeriveSecret returns a 32-byte secret derived from the identity's private key and label
// (HMAC-SHA-256). It is stable across restarts for as long as the key is, which is what a
// QUIC stateless-reset key needs; different labels give independent secrets.
func (id *Identity) DeriveSecret(label string) [32]byte {
	m := hmac.New(sha256.New, id.secret[:])
	m.Write([]byte("coffer pki secret v1\x00" + label))
	var out [32]byte
	copy(out[:], m.Sum(nil))
	return out
}

// Principal is the certificate's CommonName.
func (id *Identity) Principal() string { return id.principal }

// Role is the certificate's role (its OrganizationalUnit).
func (id *Identity) Role() transport.Role { return id.role }

// Leaf returns the parsed certificate. The caller must not modify it.
func (id *Identity) Leaf() *x509.Certificate { return id.leaf }

// ServerTLS returns a TLS 1.3 server configuration that presents this identity, requires a
// client certificate verified against the cluster CA (for client auth, at the current time)
// and advertises alpn. A client certificate without a known role is refused.
func (id *Identity) ServerTLS(alpn ...string) *tls.Config {
	cert := id.cert
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    id.roots,
		NextProtos:   append([]string(nil), alpn...),
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("pki: client presented no certificate")
			}
			_, err := roleOf(cs.PeerCertificates[0])
			return err
		},
	}
}

// ClientTLS returns a TLS 1.3 client configuration that presents this identity, offers alpn
// and accepts a server only if its chain verifies against the cluster CA for server auth
// at the current time and its role is "node".
//
// NB: InsecureSkipVerify is set only to turn off Go's host name check: nodes are identified
// by certificate, not by address (addresses change, certificates carry the principal). The
// chain is verified in VerifyConnection, which runs on every handshake, including resumed
// ones.
func (id *Identity) ClientTLS(alpn ...string) *tls.Config {
	if id.anonymous {
		return id.anonymousClientTLS(alpn...)
	}
	cert := id.cert
	roots := id.roots
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// NB: GetClientCertificate presents our certificate even when the server's list of
		// acceptable CAs does not name our issuer, so a refusal is the server's decision
		// and shows up in its logs with the reason.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &cert, nil
		},
		NextProtos:         append([]string(nil), alpn...),
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyServer(cs, roots)
		},
	}
}

func verifyServer(cs tls.ConnectionState, roots *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("pki: server presented no certificate")
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return fmt.Errorf("pki: server certificate %q: %w", leaf.Subject.CommonName, err)
	}
	role, err := roleOf(leaf)
	if err != nil {
		return err
	}
	if !role.IsNode() {
		return fmt.Errorf("pki: server %q has role %q, want %q or %q", leaf.Subject.CommonName, role, transport.RoleNode, transport.RoleMeta)
	}
	return nil
}

// PeerFromTLS returns the authenticated peer of a verified connection: the principal from
// the certificate's CommonName and the role from its OrganizationalUnit. Without a peer
// certificate it returns a Peer with only Addr set.
func PeerFromTLS(cs tls.ConnectionState, addr net.Addr) transport.Peer {
	p := transport.Peer{Addr: addr}
	if len(cs.PeerCertificates) == 0 {
		return p
	}
	leaf := cs.PeerCertificates[0]
	p.Principal = leaf.Subject.CommonName
	if role, err := roleOf(leaf); err == nil {
		p.Role = role
	}
	p.Vaults = VaultsOf(leaf)
	p.Serial = SerialString(leaf.SerialNumber)
	p.Issued = leaf.NotBefore
	return p
}

func roleOf(c *x509.Certificate) (transport.Role, error) {
	if len(c.Subject.OrganizationalUnit) != 1 {
		return "", fmt.Errorf("pki: certificate %q: %w: want exactly one OU (the role), have %q",
			c.Subject.CommonName, ErrInvalid, c.Subject.OrganizationalUnit)
	}
	switch r := transport.Role(c.Subject.OrganizationalUnit[0]); r {
	case transport.RoleNode, transport.RoleMeta, transport.RoleAdmin, transport.RoleAgent, transport.RoleRestore, transport.RoleReplication:
		return r, nil
	default:
		return "", fmt.Errorf("pki: certificate %q: %w: unknown role %q", c.Subject.CommonName, ErrInvalid, r)
	}
}

// WriteFile writes data to path atomically (a temporary file in the same directory, fsync,
// rename) with the given mode, so a crash leaves either the old or the new file.
func WriteFile(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// vaultURIPrefix starts the URI SAN that scopes a certificate to one vault.
const vaultURIPrefix = "coffer:vault:"

// VaultsOf returns the vaults a certificate is scoped to (its "coffer:vault:NAME" URI
// SANs), nil when it names none.
func VaultsOf(c *x509.Certificate) []string {
	var out []string
	for _, u := range c.URIs {
		if s := u.String(); strings.HasPrefix(s, vaultURIPrefix) && len(s) > len(vaultURIPrefix) {
			out = append(out, s[len(vaultURIPrefix):])
		}
	}
	return out
}
