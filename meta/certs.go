package meta

import (
	"context"
	"fmt"
	"time"
)

// Node join tokens and issued certificates (issue 13). A node join token is an
// EnrollToken of Kind TokenKindNode: it is stored, listed and revoked like an agent's
// enrollment token, but it fixes a node ID, a node role (meta or chunk) and a failure
// domain, and only `cofferd join` (JoinNode) consumes it.

// TokenKindNode marks an EnrollToken that joins a cluster node (EnrollToken.Kind).
const TokenKindNode = "node"

// Node roles a join token can fix (EnrollToken.Role).
const (
	NodeRoleMeta  = "meta"
	NodeRoleChunk = "chunk"
)

// Certificate roles of IssuedCert.Role (the OU of the certificate, transport.Role).
const (
	CertRoleNode    = "node"
	CertRoleMeta    = "meta"
	CertRoleAdmin   = "admin"
	CertRoleAgent   = "agent"
	CertRoleRestore = "restore-operator"
	// CertRoleReplication is another cluster's replication job (issue 19): read-only,
	// scoped to the vaults it names.
	CertRoleReplication = "replication"
)

// How a certificate came to be (IssuedCert.How).
const (
	IssuedByEnroll = "enroll" // an agent's enrollment token
	IssuedByJoin   = "join"   // a node join token
	IssuedByAdmin  = "issue"  // coffer admin cert issue
	IssuedByRenew  = "renew"  // a renewal by the certificate's holder
)

// CertExpiryWarning is how close to its expiry a certificate is reported by
// `coffer admin status`.
const CertExpiryWarning = 30 * 24 * time.Hour

// ActIssueCert is the action of issuing admin and restore-operator certificates (admin
// only).
const ActIssueCert = Action("issue-cert")

// ValidateNodeToken checks the fields a node join token fixes: a role of meta or chunk,
// an ID usable as a node ID and certificate name, and a domain (may be empty: the node's
// ID is its domain then).
func ValidateNodeToken(role, id, domain string) error {
	if role != NodeRoleMeta && role != NodeRoleChunk {
		return fmt.Errorf("%w: node role %q: want %q or %q", ErrInvalid, role, NodeRoleMeta, NodeRoleChunk)
	}
	if err := ValidateAgentName(id); err != nil {
		return fmt.Errorf("%w: node ID %q: letters, digits, '.', '-', '_' (a letter or digit first), at most %d characters", ErrInvalid, id, maxAgentName)
	}
	if domain != "" {
		if err := ValidateAgentName(domain); err != nil {
			return fmt.Errorf("%w: failure domain %q: letters, digits, '.', '-', '_' (a letter or digit first), at most %d characters", ErrInvalid, domain, maxAgentName)
		}
	}
	return nil
}

// ConsumeNodeToken decides whether token t may join a node at cluster time now. The
// token fixes the node's ID and role: id and role, as the joining host asks for them, are
// only checked against it (a chunk token never yields a meta certificate). An agent's
// enrollment token is refused. Refusals wrap ErrDenied.
func ConsumeNodeToken(t EnrollToken, id, role string, now time.Time) error {
	if t.Kind != TokenKindNode {
		return fmt.Errorf("%w: token %s is an agent enrollment token, not a node join token (coffer admin node-token create makes those)", ErrDenied, t.ID)
	}
	switch {
	case t.Used:
		return fmt.Errorf("%w: node join token %s was already used at %s (by node %q); ask an admin for a new one",
			ErrDenied, t.ID, t.UsedAt.Format(time.RFC3339), t.Principal)
	case t.Revoked:
		return fmt.Errorf("%w: node join token %s was revoked at %s by %s; ask an admin for a new one",
			ErrDenied, t.ID, t.RevokedAt.Format(time.RFC3339), t.RevokedBy)
	case !now.Before(t.Expires):
		return fmt.Errorf("%w: node join token %s expired at %s; ask an admin for a new one", ErrDenied, t.ID, t.Expires.Format(time.RFC3339))
	case id != t.Name:
		return fmt.Errorf("%w: node join token %s is for node %q, not %q: the token fixes the node ID", ErrDenied, t.ID, t.Name, id)
	case role != "" && role != t.Role:
		return fmt.Errorf("%w: node join token %s is for a %s node, not a %s node: the token fixes the role", ErrDenied, t.ID, t.Role, role)
	}
	return nil
}

// NodeJoinRequest is what a joining host sends (cofferd join): the token, a CSR for the
// key it generated, and the ID and role it expects (checked against the token).
type NodeJoinRequest struct {
	Token string `cbor:"token"`
	CSR   []byte `cbor:"csr"` // DER PKCS#10
	ID    string `cbor:"id"`
	Role  string `cbor:"role,omitempty"` // meta or chunk; empty takes the token's
	// From is the joining host's network address, filled in by the server that received
	// the request, for the audit log.
	From string `cbor:"from,omitempty"`
}

// NodeJoinResult is a joined node's certificate and what it needs to run: the cluster
// secret (memberlist keyring, restore grants), the meta servers and gossip seeds.
type NodeJoinResult struct {
	Cert          []byte   `cbor:"cert"` // PEM: leaf then the issuer's certificate
	CA            []byte   `cbor:"ca"`   // PEM of the cluster root
	ID            string   `cbor:"id"`
	Role          string   `cbor:"role"`
	Domain        string   `cbor:"domain"`
	Serial        string   `cbor:"serial"`
	ClusterSecret []byte   `cbor:"cluster_secret"`
	MetaServers   []Server `cbor:"meta_servers"`
	GossipSeeds   []string `cbor:"gossip_seeds"`
}

// JoinInfo is what a meta server hands a joining node besides its certificate.
type JoinInfo struct {
	ClusterSecret []byte
	MetaServers   []Server
	GossipSeeds   []string
}

// IssueCertRequest asks for an admin or restore-operator certificate for the key of a
// CSR (the private key stays with its owner). The CSR's common name must be Principal.
type IssueCertRequest struct {
	Role      string `cbor:"role"` // admin, restore-operator or replication
	Principal string `cbor:"principal"`
	CSR       []byte `cbor:"csr"` // DER PKCS#10
	// Vaults is a restore operator's scope (empty: every vault) or the vaults a
	// replication certificate reads (required).
	Vaults   []string `cbor:"vaults,omitempty"`
	Validity int64    `cbor:"validity,omitempty"`
}

// Presented is the certificate a caller authenticated with, as the server that received
// the request observed it (never as the caller claims it).
type Presented struct {
	Serial    string    `cbor:"serial"`
	Principal string    `cbor:"principal"`
	Role      string    `cbor:"role"` // certificate role (OU)
	Vaults    []string  `cbor:"vaults,omitempty"`
	Issued    time.Time `cbor:"issued"` // NotBefore
}

// RenewRequest asks for a new certificate, for the key of CSR, with the identity of
// the one presented (same principal, role and vault scope).
type RenewRequest struct {
	CSR       []byte    `cbor:"csr"`
	Presented Presented `cbor:"presented"`
}

// CertResult is a certificate signed by a meta server's issuer and its record.
type CertResult struct {
	Cert   []byte     `cbor:"cert"` // PEM: leaf then the issuer's certificate
	CA     []byte     `cbor:"ca"`   // PEM of the cluster root
	Record IssuedCert `cbor:"record"`
}

// IssuedCert records a certificate a meta server signed: for `coffer admin cert list`
// (lifetimes) and `admin status` (expiry warnings).
type IssuedCert struct {
	Serial    string    `cbor:"serial" json:"serial"`
	Principal string    `cbor:"principal" json:"principal"`
	Role      string    `cbor:"role" json:"role"`
	Vaults    []string  `cbor:"vaults,omitempty" json:"vaults,omitempty"`
	NotBefore time.Time `cbor:"not_before" json:"not_before"`
	NotAfter  time.Time `cbor:"not_after" json:"not_after"`
	// Issuer is the ID of the meta server whose issuing CA signed it.
	Issuer string `cbor:"issuer" json:"issuer"`
	// How is enroll, join, issue or renew; By who asked (an admin, or the holder).
	How string `cbor:"how" json:"how"`
	By  string `cbor:"by" json:"by"`
	// Renews is the serial of the certificate a renewal replaces.
	Renews string    `cbor:"renews,omitempty" json:"renews,omitempty"`
	At     time.Time `cbor:"at" json:"at"` // cluster time it was recorded
}

// Certificate states (IssuedCert.State).
const (
	CertValid    = "valid"
	CertExpiring = "expiring" // valid, expires within CertExpiryWarning
	CertExpired  = "expired"
	CertRevoked  = "revoked"
)

// State returns the certificate's state at now, given the revocation list.
func (c IssuedCert) State(now time.Time, revs []Revocation) string {
	if _, ok := Revoked(revs, c.Serial, c.Principal, c.NotBefore); ok {
		return CertRevoked
	}
	switch {
	case !now.Before(c.NotAfter):
		return CertExpired
	case c.NotAfter.Sub(now) < CertExpiryWarning:
		return CertExpiring
	}
	return CertValid
}

// ValidateIssuedCert checks a record before the log keeps it.
func ValidateIssuedCert(c IssuedCert) error {
	switch {
	case c.Serial == "" || c.Principal == "":
		return fmt.Errorf("%w: issued certificate without serial or principal", ErrInvalid)
	case !c.NotAfter.After(c.NotBefore):
		return fmt.Errorf("%w: issued certificate %s: not after %s is not after not before %s", ErrInvalid, c.Serial, c.NotAfter, c.NotBefore)
	}
	switch c.Role {
	case CertRoleNode, CertRoleMeta, CertRoleAdmin, CertRoleAgent, CertRoleRestore, CertRoleReplication:
	default:
		return fmt.Errorf("%w: issued certificate %s: unknown role %q", ErrInvalid, c.Serial, c.Role)
	}
	switch c.How {
	case IssuedByEnroll, IssuedByJoin, IssuedByAdmin, IssuedByRenew:
	default:
		return fmt.Errorf("%w: issued certificate %s: unknown origin %q", ErrInvalid, c.Serial, c.How)
	}
	return nil
}

// CertService joins nodes, issues and renews certificates and lists them. meta/server
// implements it; metarpc carries it. Signing is done by a meta server's issuing CA:
// nothing in the cluster holds the root CA's key.
type CertService interface {
	// CreateNodeToken returns a new one-time node join token fixing role, node ID and
	// failure domain, valid for ttl of cluster time (0: DefaultEnrollTTL). An ID that is
	// a node of the map, a meta server, or bound to another live token is refused
	// (ErrExists). Admin only; audited.
	CreateNodeToken(ctx context.Context, role, id, domain string, ttl time.Duration) (string, EnrollToken, error)
	// JoinNode consumes a node join token and returns the node's certificate (role node
	// for chunk, meta for meta) for the CSR's key, and the cluster secret, meta servers
	// and gossip seeds. Needs no principal (the token is the credential).
	JoinNode(ctx context.Context, req NodeJoinRequest) (NodeJoinResult, error)
	// IssueCert signs an admin or restore-operator certificate for a CSR whose common
	// name is the principal. Admin only; audited.
	IssueCert(ctx context.Context, req IssueCertRequest) (CertResult, error)
	// RenewCert signs a new certificate with the presented one's identity for the CSR's
	// key (its common name must be the principal). Refused for revoked certificates.
	RenewCert(ctx context.Context, req RenewRequest) (CertResult, error)
	// ListCerts returns the issued-certificate records, oldest first, the revocations
	// and the cluster time. Admin only.
	ListCerts(ctx context.Context) ([]IssuedCert, []Revocation, time.Time, error)
}
