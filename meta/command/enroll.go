package command

import "github.com/cofferhq/coffer/meta"

// Enrollment and revocation (issue 6, part 2): tags 68..79.
const (
	TypeCreateEnrollToken  Type = 68
	TypeConsumeEnrollToken Type = 69
	TypeRevokeCert         Type = 70
	TypeRevokeEnrollToken  Type = 71
)

// CreateEnrollToken records a one-time enrollment token by its hash. The FSM sets
// Created and Expires (Created + TTL) from the cluster clock. Admin only; audited.
type CreateEnrollToken struct {
	Hash  string         `cbor:"hash"` // hex SHA-256 of the token
	Vault meta.VaultID   `cbor:"vault"`
	Name  string         `cbor:"name,omitempty"`
	TTL   int64          `cbor:"ttl"` // nanoseconds, > 0
	By    meta.Principal `cbor:"by"`
	// Labels are given to the enrolled agent (issue 15).
	Labels map[string]string `cbor:"labels,omitempty"`
}

// ConsumeEnrollToken marks a token used for an enrollment (meta.ConsumeEnrollToken
// decides at the entry's cluster time). Serial is the certificate the leader issues
// once the entry is applied. Success and refusal are audited.
type ConsumeEnrollToken struct {
	Hash   string `cbor:"hash"`
	Name   string `cbor:"name,omitempty"` // requested agent name
	Serial string `cbor:"serial"`
	// From is the enrolling client's address, for the audit log.
	From string `cbor:"from,omitempty"`
	// Key is the hex SHA-256 of the enrolling key's public key (DER SubjectPublicKeyInfo).
	// A retry of an enrollment whose answer was lost (same token, same key, within
	// meta.EnrollRetryWindow of the first) gets the first one's serial back instead of a
	// refusal. Empty in entries written before it existed.
	Key string `cbor:"key,omitempty"`
}

// RevokeCert records a revocation (meta.Revocation without Seq, At and By). Admin only;
// audited.
type RevokeCert struct {
	Revocation meta.Revocation `cbor:"revocation"`
	By         meta.Principal  `cbor:"by"`
}

// RevokeEnrollToken withdraws a live enrollment token, named by its ID or a unique ID
// prefix (meta.RevokeEnrollToken decides at the entry's cluster time). Admin only;
// audited with Reason.
type RevokeEnrollToken struct {
	ID     string         `cbor:"id"`
	Reason string         `cbor:"reason,omitempty"`
	By     meta.Principal `cbor:"by"`
}

// Type implements Body.
func (CreateEnrollToken) Type() Type { return TypeCreateEnrollToken }

// Type implements Body.
func (ConsumeEnrollToken) Type() Type { return TypeConsumeEnrollToken }

// Type implements Body.
func (RevokeCert) Type() Type { return TypeRevokeCert }

// Type implements Body.
func (RevokeEnrollToken) Type() Type { return TypeRevokeEnrollToken }
