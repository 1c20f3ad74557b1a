package command

import "github.com/cofferhq/coffer/meta"

// Node join tokens and issued certificates (issue 13, production bootstrap): tags
// 100..109.
const (
	TypeCreateNodeToken  Type = 100
	TypeConsumeNodeToken Type = 101
	TypeRecordCert       Type = 102
)

// CreateNodeToken records a one-time node join token by its hash (an meta.EnrollToken of
// Kind meta.TokenKindNode). The FSM sets Created and Expires from the cluster clock.
// Admin only; audited. Taken is every ID the Raft configuration holds (meta servers are
// not in the cluster map): the token is refused for one of them.
type CreateNodeToken struct {
	Hash   string         `cbor:"hash"`
	Role   string         `cbor:"role"`
	ID     string         `cbor:"id"`
	Domain string         `cbor:"domain,omitempty"`
	TTL    int64          `cbor:"ttl"`
	By     meta.Principal `cbor:"by"`
	Taken  []string       `cbor:"taken,omitempty"`
}

// ConsumeNodeToken marks a node join token used (meta.ConsumeNodeToken decides at the
// entry's cluster time). Serial is the certificate the leader signs once it is applied.
// Success and refusal are audited.
type ConsumeNodeToken struct {
	Hash   string `cbor:"hash"`
	ID     string `cbor:"id"`
	Role   string `cbor:"role,omitempty"`
	Serial string `cbor:"serial"`
	From   string `cbor:"from,omitempty"`
}

// RecordCert records a certificate a meta server's issuer signed (meta.IssuedCert, At
// set by the FSM). Audited.
type RecordCert struct {
	Cert meta.IssuedCert `cbor:"cert"`
}

// Type implements Body.
func (CreateNodeToken) Type() Type { return TypeCreateNodeToken }

// Type implements Body.
func (ConsumeNodeToken) Type() Type { return TypeConsumeNodeToken }

// Type implements Body.
func (RecordCert) Type() Type { return TypeRecordCert }
