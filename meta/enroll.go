package meta

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Enrollment and revocation limits.
const (
	// DefaultEnrollTTL is how long an enrollment token lives when no TTL is given.
	DefaultEnrollTTL = 24 * time.Hour
	// MaxEnrollTTL is the longest an enrollment token may live.
	MaxEnrollTTL = 30 * 24 * time.Hour
	// enrollTokenPrefix starts every enrollment token, so one is recognisable in a
	// config file or a leaked log.
	enrollTokenPrefix = "coffer-enroll-"
	// maxAgentName bounds an agent (certificate common) name.
	maxAgentName = 64
)

// Actions for enrollment and revocation (admin only).
const (
	ActEnroll = Action("enroll-token") // create enrollment tokens
	ActRevoke = Action("revoke-cert")  // revoke certificates, list revocations
)

// EnrollRetryWindow is how long after a token was used the same key may enroll with it
// again and get the same serial: the client's retry when the leader lost the answer of an
// enrollment it had applied (a leader change under load). Someone else holding the token
// gains nothing by it: the certificate is for the first enrollment's public key only.
const EnrollRetryWindow = 5 * time.Minute

// EnrollToken is the cluster's record of a one-time enrollment token. The token itself
// is never stored: only its SHA-256 (Hash), from which ID is derived.
type EnrollToken struct {
	// ID names the token in lists and the audit log: the first 16 hex digits of Hash.
	// It reveals nothing that helps to guess the token.
	ID string `cbor:"id" json:"id"`
	// Hash is the hex SHA-256 of the token.
	Hash  string  `cbor:"hash" json:"-"`
	Vault VaultID `cbor:"vault" json:"vault"`
	// Name is the agent name fixed at creation. Empty only in tokens made before names
	// were bound to tokens (issue 11): those enroll nobody.
	Name    string    `cbor:"name,omitempty" json:"name,omitempty"`
	Created time.Time `cbor:"created" json:"created"` // cluster time
	Expires time.Time `cbor:"expires" json:"expires"` // cluster time
	By      string    `cbor:"by" json:"by"`           // the admin who created it
	Used    bool      `cbor:"used" json:"used"`
	// UsedAt, Principal and Serial describe the enrollment that used the token.
	UsedAt    time.Time `cbor:"used_at,omitempty" json:"used_at,omitzero"`
	Principal string    `cbor:"principal,omitempty" json:"principal,omitempty"`
	Serial    string    `cbor:"serial,omitempty" json:"serial,omitempty"`
	// UsedKey is the hex SHA-256 of the public key that enrolled with the token (see
	// EnrollRetryWindow).
	UsedKey string `cbor:"used_key,omitempty" json:"-"`
	// Revoked is set when an admin withdrew the token before it was used; RevokedAt,
	// RevokedBy and RevokeReason say when, who and why.
	Revoked      bool      `cbor:"revoked,omitempty" json:"revoked,omitempty"`
	RevokedAt    time.Time `cbor:"revoked_at,omitempty" json:"revoked_at,omitzero"`
	RevokedBy    string    `cbor:"revoked_by,omitempty" json:"revoked_by,omitempty"`
	RevokeReason string    `cbor:"revoke_reason,omitempty" json:"revoke_reason,omitempty"`

	// Labels are given to the agent that uses the token (backup policies select hosts
	// by label, so a new host is protected from its first minute; issue 15).
	Labels map[string]string `cbor:"labels,omitempty" json:"labels,omitempty"`
	// Kind is "" for an agent's enrollment token and TokenKindNode for a node join
	// token, which also fixes Role (meta or chunk) and Domain; Name is then the node ID.
	Kind   string `cbor:"kind,omitempty" json:"kind,omitempty"`
	Role   string `cbor:"role,omitempty" json:"role,omitempty"`
	Domain string `cbor:"domain,omitempty" json:"domain,omitempty"`
}

// Enrollment token states (EnrollToken.State).
const (
	TokenLive    = "live"    // may still enroll an agent
	TokenUsed    = "used"    // enrolled an agent
	TokenExpired = "expired" // not used before it expired
	TokenRevoked = "revoked" // withdrawn by an admin before use
)

// State returns the token's state at cluster time now: TokenUsed, TokenRevoked,
// TokenExpired or TokenLive, in that order of precedence.
func (t EnrollToken) State(now time.Time) string {
	switch {
	case t.Used:
		return TokenUsed
	case t.Revoked:
		return TokenRevoked
	case !now.Before(t.Expires):
		return TokenExpired
	}
	return TokenLive
}

// RevokeEnrollToken decides whether token t may be withdrawn at cluster time now: only
// a live token can be. The error wraps ErrInvalid and says what to do instead.
func RevokeEnrollToken(t EnrollToken, now time.Time) error {
	switch t.State(now) {
	case TokenUsed:
		return fmt.Errorf("%w: enrollment token %s was already used at %s by agent %q; revoke its certificate instead (coffer admin cert revoke --serial %s)",
			ErrInvalid, t.ID, t.UsedAt.Format(time.RFC3339), t.Principal, t.Serial)
	case TokenRevoked:
		return fmt.Errorf("%w: enrollment token %s was already revoked at %s by %s", ErrInvalid, t.ID, t.RevokedAt.Format(time.RFC3339), t.RevokedBy)
	case TokenExpired:
		return fmt.Errorf("%w: enrollment token %s expired at %s; it can no longer be used", ErrInvalid, t.ID, t.Expires.Format(time.RFC3339))
	}
	return nil
}

// NewEnrollToken returns a fresh token: a recognisable prefix and 256 random bits.
func NewEnrollToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("meta: enrollment token: %w", err)
	}
	return enrollTokenPrefix + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// EnrollTokenHash returns the hex SHA-256 of a token (surrounding space ignored), the
// only form in which the cluster keeps it.
func EnrollTokenHash(token string) string {
	sum := sha256.Sum256([]byte(strings.TrimSpace(token)))
	return hex.EncodeToString(sum[:])
}

// EnrollTokenID returns the ID of the token with the given hash.
func EnrollTokenID(hash string) string {
	if len(hash) < 16 {
		return hash
	}
	return hash[:16]
}

// ValidateEnrollTokenID checks a token ID or ID prefix as given to RevokeEnrollToken:
// 8 to 16 lower-case hex digits.
func ValidateEnrollTokenID(id string) error {
	if len(id) < 8 || len(id) > 16 {
		return fmt.Errorf("%w: enrollment token ID %q: want 8 to 16 hex digits (the ID shown at creation and by the token list)", ErrInvalid, id)
	}
	for _, r := range id {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return fmt.Errorf("%w: enrollment token ID %q: %q is not a lower-case hex digit", ErrInvalid, id, r)
		}
	}
	return nil
}

// ValidateAgentName checks an agent name for use as a certificate common name and
// principal: 1 to 64 characters of letters, digits, '.', '-' and '_', starting with a
// letter or digit.
func ValidateAgentName(name string) error {
	if name == "" || len(name) > maxAgentName {
		return fmt.Errorf("%w: agent name %q must have 1 to %d characters", ErrInvalid, name, maxAgentName)
	}
	for i, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || (i > 0 && (r == '.' || r == '-' || r == '_'))
		if !ok {
			return fmt.Errorf("%w: agent name %q: character %q not allowed (letters, digits, '.', '-', '_'; a letter or digit first)", ErrInvalid, name, r)
		}
	}
	return nil
}

// ConsumeEnrollToken decides whether token t may enroll an agent at cluster time now.
// The token fixes the agent's name: requested, when not empty, is only checked against
// it. It returns the name the certificate gets, or an error wrapping ErrDenied (used,
// revoked, expired, names no agent, or another name requested) saying why.
func ConsumeEnrollToken(t EnrollToken, requested string, now time.Time) (string, error) {
	if t.Kind != "" {
		return "", fmt.Errorf("%w: token %s is a node join token (for node %q); it joins a node with cofferd join, it enrolls no agent", ErrDenied, t.ID, t.Name)
	}
	if t.Used {
		return "", fmt.Errorf("%w: enrollment token %s was already used at %s (by agent %q); ask an admin for a new one",
			ErrDenied, t.ID, t.UsedAt.Format(time.RFC3339), t.Principal)
	}
	if t.Revoked {
		return "", fmt.Errorf("%w: enrollment token %s was revoked at %s by %s; ask an admin for a new one",
			ErrDenied, t.ID, t.RevokedAt.Format(time.RFC3339), t.RevokedBy)
	}
	if !now.Before(t.Expires) {
		return "", fmt.Errorf("%w: enrollment token %s expired at %s; ask an admin for a new one", ErrDenied, t.ID, t.Expires.Format(time.RFC3339))
	}
	switch {
	case t.Name == "":
		return "", fmt.Errorf("%w: enrollment token %s names no agent (it was made before tokens fixed agent names); ask an admin for a new one (coffer admin enroll-token create --name NAME)",
			ErrDenied, t.ID)
	case requested != "" && requested != t.Name:
		return "", fmt.Errorf("%w: enrollment token %s is for agent %q, not %q: the token fixes the agent's name", ErrDenied, t.ID, t.Name, requested)
	}
	if err := ValidateAgentName(t.Name); err != nil {
		return "", err
	}
	return t.Name, nil
}

// CheckAgentNameFree decides whether name may be bound to the enrollment token with the
// given hash at cluster time now, so that no two hosts hold one name: it is refused
// (ErrExists, saying what holds it and what to do) when another live token binds it,
// when an agent enrolled under it holds a certificate that no revocation covers (a
// revocation of that serial, or of the principal after the enrollment), or when it is
// the ID of a cluster node. tokens is every token record, revs every revocation, nodes
// the node IDs of the cluster map.
func CheckAgentNameFree(name, hash string, now time.Time, tokens []EnrollToken, revs []Revocation, nodes []string) error {
	if slices.Contains(nodes, name) {
		return fmt.Errorf("%w: agent name %q is the ID of a cluster node; choose another", ErrExists, name)
	}
	for _, t := range tokens {
		switch {
		case t.Hash == hash:
		case t.Name == name && t.State(now) == TokenLive:
			return fmt.Errorf("%w: agent name %q is bound to live enrollment token %s (valid until %s); revoke that token first (coffer admin enroll-token revoke %s) or choose another name",
				ErrExists, name, t.ID, t.Expires.Format(time.RFC3339), t.ID)
		case t.Used && t.Principal == name && !enrollmentRevoked(t, revs):
			return fmt.Errorf("%w: agent %q was enrolled at %s (certificate serial %s, token %s); revoke its certificates first (coffer admin cert revoke --principal %s) or choose another name",
				ErrExists, name, t.UsedAt.Format(time.RFC3339), t.Serial, t.ID, name)
		}
	}
	return nil
}

// enrollmentRevoked reports whether the certificate that used token t is revoked by
// one of revs: by its serial, or by its principal after the enrollment.
func enrollmentRevoked(t EnrollToken, revs []Revocation) bool {
	for _, r := range revs {
		if r.Serial != "" && r.Serial == t.Serial || r.Principal != "" && r.Principal == t.Principal && r.At.After(t.UsedAt) {
			return true
		}
	}
	return false
}

// EnrollRequest is what an enrolling agent sends: the token and a certificate signing
// request for the key it generated (the key never leaves the host). The token fixes
// the agent's name; Name, when set, is the name the host expects, and the enrollment is
// refused if the token names another (a check against using another host's token).
type EnrollRequest struct {
	Token string `cbor:"token"`
	CSR   []byte `cbor:"csr"` // DER PKCS#10
	Name  string `cbor:"name,omitempty"`
	// From is the enrolling client's network address, filled in by the server that
	// received the request (whatever the client sent), for the audit log.
	From string `cbor:"from,omitempty"`
}

// EnrollResult is the signed backup-agent certificate and what it is for.
type EnrollResult struct {
	Cert      []byte  `cbor:"cert"` // PEM
	CA        []byte  `cbor:"ca"`   // PEM of the signing CA
	Vault     VaultID `cbor:"vault"`
	Principal string  `cbor:"principal"`
	Serial    string  `cbor:"serial"`
}

// Revocation is one revoked certificate (by Serial) or principal (every certificate with
// that common name issued before At). Exactly one of Serial and Principal is set.
type Revocation struct {
	Seq       uint64    `cbor:"seq" json:"seq"` // raft index that recorded it
	Serial    string    `cbor:"serial,omitempty" json:"serial,omitempty"`
	Principal string    `cbor:"principal,omitempty" json:"principal,omitempty"`
	At        time.Time `cbor:"at" json:"at"` // cluster time
	By        string    `cbor:"by" json:"by"`
	Reason    string    `cbor:"reason,omitempty" json:"reason,omitempty"`
}

// ValidateRevocation checks that exactly one of Serial and Principal is set.
func ValidateRevocation(r Revocation) error {
	if (r.Serial == "") == (r.Principal == "") {
		return fmt.Errorf("%w: a revocation names either a certificate serial or a principal, not %s", ErrInvalid,
			map[bool]string{true: "neither", false: "both"}[r.Serial == ""])
	}
	return nil
}

// Matches reports whether r revokes a certificate with the given serial, common name
// and NotBefore.
func (r Revocation) Matches(serial, principal string, issued time.Time) bool {
	if r.Serial != "" {
		return serial != "" && serial == r.Serial
	}
	return principal != "" && principal == r.Principal && issued.Before(r.At)
}

// SecurityState is what every node polls from the meta leader: the cluster clock, as
// the leader vouches for it, and the revocation list.
type SecurityState struct {
	// Now is the leader's cluster time when it answered.
	Now time.Time `cbor:"now"`
	// Version is the Seq of the newest revocation (0: none).
	Version uint64 `cbor:"version"`
	// Revocations is the whole list, oldest first; nil when the caller already holds
	// Version.
	Revocations []Revocation `cbor:"revocations,omitempty"`
}

// Revoked returns the first revocation in list that matches the certificate.
func Revoked(list []Revocation, serial, principal string, issued time.Time) (Revocation, bool) {
	for _, r := range list {
		if r.Matches(serial, principal, issued) {
			return r, true
		}
	}
	return Revocation{}, false
}

// EnrollService issues enrollment tokens, enrolls agents and revokes certificates.
// meta/server implements it; metarpc carries it. Every call that changes state, and
// every refusal, is in the audit log; tokens never are.
type EnrollService interface {
	// CreateEnrollToken returns a new one-time token for a backup agent of vault named
	// name, valid for ttl of cluster time (0: DefaultEnrollTTL, at most MaxEnrollTTL).
	// The name is required and fixed: the enrollee cannot choose another. A name bound
	// to another live token, enrolled and not revoked, or a node's ID is refused
	// (ErrExists; see CheckAgentNameFree). labels are given to the enrolled agent (backup
	// policies select hosts by label). Admin only.
	CreateEnrollToken(ctx context.Context, vault VaultID, name string, ttl time.Duration, labels map[string]string) (string, EnrollToken, error)
	// Enroll consumes the token (atomically, in the log) and returns a backup-agent
	// certificate for the CSR's key, scoped to the token's vault. A used, expired or
	// unknown token is refused (ErrDenied); a server without the CA key answers
	// ErrUnavailable. Needs no principal: this is what a host without a certificate
	// calls.
	Enroll(ctx context.Context, req EnrollRequest) (EnrollResult, error)
	// ListEnrollTokens returns the enrollment tokens the cluster knows, oldest first
	// (without their hashes): the live ones, or with all every one (used, expired,
	// revoked too), and the cluster time that decided (EnrollToken.State). Admin only.
	ListEnrollTokens(ctx context.Context, all bool) ([]EnrollToken, time.Time, error)
	// RevokeEnrollToken withdraws the live token with the given ID (EnrollToken.ID, or
	// any unique prefix of at least 8 hex digits) so that it can no longer enroll an
	// agent, and returns its record. A used, expired or already revoked token is
	// refused (ErrInvalid), an unknown ID is ErrNotFound. Admin only; audited with
	// reason.
	RevokeEnrollToken(ctx context.Context, id, reason string) (EnrollToken, error)
	// RevokeCert records a revocation (admin only). Nodes refuse the certificate from
	// their next refresh of SecurityState on.
	RevokeCert(ctx context.Context, r Revocation) (Revocation, error)
	// SecurityState returns the cluster time and, unless known equals the current
	// version, the revocation list (a current read on the leader; nodes and admins).
	SecurityState(ctx context.Context, known uint64) (SecurityState, error)
}
