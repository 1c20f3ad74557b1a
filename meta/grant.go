package meta

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cofferhq/coffer/chunkstore/chunk"
)

// MaxGrantTTL is the longest a restore grant lives.
const MaxGrantTTL = time.Hour

// MaxGrantPrincipalLen bounds the principal name a restore grant names.
const MaxGrantPrincipalLen = 1024

// ErrBadGrant marks a restore grant that is malformed, forged, expired or of a version
// no longer honoured.
var ErrBadGrant = errors.New("meta: invalid restore grant")

// Grant is a restore grant: read-only access to the chunks of one snapshot of one vault,
// for one principal, until Expires. The meta leader signs it with the cluster's grant
// key. Chunk nodes verify it, honour it only for a certificate whose principal is
// Principal and whose vault scope holds Vault, and serve only chunks listed in the
// snapshot's reference lists (Refs): a grant cannot be lent, cannot read another vault,
// write or delete.
type Grant struct {
	Vault     VaultID    `json:"vault"`
	Snapshot  SnapshotID `json:"snapshot"`
	Refs      []chunk.ID `json:"refs"`      // the snapshot's reference-list chunks
	Principal string     `json:"principal"` // the certificate common name it was issued to
	Expires   time.Time  `json:"expires"`
}

// Restore grant token layout (see FORMAT.md): version, tag, payload.
const (
	// grantVersion is the token version SignGrant writes and VerifyGrant accepts.
	// Version 1 (JSON payload) named its principal but nothing checked it; its tokens
	// are refused.
	grantVersion   = 2
	grantHeaderLen = 1 + sha256.Size
	// grantPayloadFixed is the payload without its variable parts: expiry, snapshot,
	// the two name lengths and the reference count.
	grantPayloadFixed = 8 + chunk.Size + 2 + 2 + 4
)

// GrantKey derives the grant signing key from the cluster secret.
func GrantKey(clusterSecret []byte) []byte {
	m := hmac.New(sha256.New, clusterSecret)
	m.Write([]byte("coffer restore grant key v1"))
	return m.Sum(nil)
}

// validateGrant checks the fields SignGrant encodes; errors wrap ErrInvalid.
func validateGrant(g Grant) error {
	if err := ValidateVaultID(g.Vault); err != nil {
		return err
	}
	if g.Snapshot.IsZero() {
		return fmt.Errorf("%w: grant: zero snapshot ID", ErrInvalid)
	}
	if g.Principal == "" || len(g.Principal) > MaxGrantPrincipalLen {
		return fmt.Errorf("%w: grant: principal of %d bytes, want 1..%d", ErrInvalid, len(g.Principal), MaxGrantPrincipalLen)
	}
	if len(g.Refs) == 0 {
		return fmt.Errorf("%w: grant for snapshot %s: no reference-list chunks", ErrInvalid, g.Snapshot.Str())
	}
	if ns := g.Expires.UnixNano(); !time.Unix(0, ns).Equal(g.Expires) {
		return fmt.Errorf("%w: grant expiry %s outside the years 1678..2262", ErrInvalid, g.Expires.Format(time.RFC3339))
	}
	return nil
}

// encodeGrantPayload lays out a validated grant's fields (FORMAT.md).
func encodeGrantPayload(g Grant) []byte {
	b := make([]byte, 0, grantPayloadFixed+len(g.Vault)+len(g.Principal)+len(g.Refs)*chunk.Size)
	b = binary.BigEndian.AppendUint64(b, uint64(g.Expires.UnixNano()))
	b = append(b, g.Snapshot[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(g.Vault)))
	b = append(b, g.Vault...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(g.Principal)))
	b = append(b, g.Principal...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(g.Refs)))
	for _, r := range g.Refs {
		b = append(b, r[:]...)
	}
	return b
}

// decodeGrantPayload parses a payload laid out by encodeGrantPayload, refusing short or
// trailing bytes and fields SignGrant would not sign. It allocates no more than
// len(p). Errors wrap ErrBadGrant.
func decodeGrantPayload(p []byte) (Grant, error) {
	var g Grant
	bad := func(what string, args ...any) (Grant, error) {
		return Grant{}, fmt.Errorf("%w: payload: %s", ErrBadGrant, fmt.Sprintf(what, args...))
	}
	if len(p) < grantPayloadFixed {
		return bad("%d bytes, shorter than the %d fixed bytes", len(p), grantPayloadFixed)
	}
	g.Expires = time.Unix(0, int64(binary.BigEndian.Uint64(p))).UTC()
	p = p[8:]
	copy(g.Snapshot[:], p)
	p = p[chunk.Size:]
	str := func() (string, bool) {
		if len(p) < 2 {
			return "", false
		}
		n := int(binary.BigEndian.Uint16(p))
		if len(p) < 2+n {
			return "", false
		}
		s := string(p[2 : 2+n])
		p = p[2+n:]
		return s, true
	}
	vault, ok := str()
	if !ok {
		return bad("vault name runs past the end")
	}
	g.Vault = VaultID(vault)
	if g.Principal, ok = str(); !ok {
		return bad("principal name runs past the end")
	}
	if len(p) < 4 {
		return bad("reference count runs past the end")
	}
	n := binary.BigEndian.Uint32(p)
	p = p[4:]
	if uint64(len(p)) != uint64(n)*chunk.Size {
		return bad("%d reference-list IDs need %d bytes, have %d", n, uint64(n)*chunk.Size, len(p))
	}
	g.Refs = make([]chunk.ID, n)
	for i := range g.Refs {
		copy(g.Refs[i][:], p[i*chunk.Size:])
	}
	if err := validateGrant(g); err != nil {
		return bad("%v", err)
	}
	return g, nil
}

// grantTag is the token's HMAC-SHA-256 over its version byte and payload.
func grantTag(key []byte, version byte, payload []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte{version})
	m.Write(payload)
	return m.Sum(nil)
}

// SignGrant encodes g as a token (FORMAT.md): a version byte, an HMAC-SHA-256 tag over
// the version and payload, and the payload. A grant with an invalid vault, a zero
// snapshot, no principal (or one over MaxGrantPrincipalLen bytes), no references, or an
// expiry outside the years 1678..2262 is refused with an error wrapping ErrInvalid.
func SignGrant(key []byte, g Grant) ([]byte, error) {
	if err := validateGrant(g); err != nil {
		return nil, fmt.Errorf("meta: sign grant: %w", err)
	}
	payload := encodeGrantPayload(g)
	out := make([]byte, 0, grantHeaderLen+len(payload))
	out = append(out, grantVersion)
	out = append(out, grantTag(key, grantVersion, payload)...)
	return append(out, payload...), nil
}

// VerifyGrant checks a token's version, tag and expiry at now and returns the grant, or
// an error wrapping ErrBadGrant that says what is wrong. It does not check who presents
// the token: the caller compares Principal and Vault with the presenting certificate.
func VerifyGrant(key, token []byte, now time.Time) (Grant, error) {
	if len(token) == 0 {
		return Grant{}, fmt.Errorf("%w: empty token", ErrBadGrant)
	}
	switch v := token[0]; {
	case v == 1:
		return Grant{}, fmt.Errorf("%w: a version 1 grant is not bound to its holder and no longer honoured; obtain a new grant", ErrBadGrant)
	case v != grantVersion:
		return Grant{}, fmt.Errorf("%w: unknown version %d (want %d)", ErrBadGrant, v, grantVersion)
	}
	if len(token) < grantHeaderLen {
		return Grant{}, fmt.Errorf("%w: token of %d bytes, shorter than its %d-byte header", ErrBadGrant, len(token), grantHeaderLen)
	}
	tag, payload := token[1:grantHeaderLen], token[grantHeaderLen:]
	if !hmac.Equal(tag, grantTag(key, token[0], payload)) {
		return Grant{}, fmt.Errorf("%w: signature does not verify", ErrBadGrant)
	}
	g, err := decodeGrantPayload(payload)
	if err != nil {
		return Grant{}, err
	}
	if !now.Before(g.Expires) {
		return Grant{}, fmt.Errorf("%w: grant for snapshot %s expired at %s", ErrBadGrant, g.Snapshot.Str(), g.Expires.Format(time.RFC3339))
	}
	return g, nil
}

// GrantService issues restore grants. meta/server implements it; metarpc carries it.
type GrantService interface {
	// IssueGrant returns a signed grant for one snapshot, valid for ttl (<= MaxGrantTTL;
	// 0 means MaxGrantTTL) by the cluster clock, to a principal that may read the vault.
	// The grant names that principal and the vault; chunk nodes honour it only for them.
	IssueGrant(ctx context.Context, vault VaultID, snap SnapshotID, ttl time.Duration) ([]byte, Grant, error)
}
