package meta

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cofferhq/coffer/chunkstore/chunk"
)

// MaxGrantTTL is the longest a restore grant lives.
const MaxGrantTTL = time.Hour

// ErrBadGrant marks a restore grant that is malformed, forged or expired.
var ErrBadGrant = errors.New("meta: invalid restore grant")

// Grant is a restore grant: read-only access to the chunks of one snapshot until
// Expires. The meta leader signs it with the cluster's grant key; chunk nodes verify it
// and serve a grant holder only chunks listed in the snapshot's reference lists (Refs),
// so a grant cannot read another snapshot's vault, write or delete.
type Grant struct {
	Vault     VaultID    `json:"vault"`
	Snapshot  SnapshotID `json:"snapshot"`
	Refs      []chunk.ID `json:"refs"` // the snapshot's reference-list chunks
	Principal string     `json:"principal"`
	Expires   time.Time  `json:"expires"`
}

const grantVersion = 1

// GrantKey derives the grant signing key from the cluster secret.
func GrantKey(clusterSecret []byte) []byte {
	m := hmac.New(sha256.New, clusterSecret)
	m.Write([]byte("coffer restore grant key v1"))
	return m.Sum(nil)
}

// SignGrant encodes g as a token: a version byte, an HMAC-SHA-256 tag and the payload.
func SignGrant(key []byte, g Grant) ([]byte, error) {
	payload, err := json.Marshal(g)
	if err != nil {
		return nil, fmt.Errorf("meta: sign grant: %w", err)
	}
	m := hmac.New(sha256.New, key)
	m.Write(payload)
	out := append([]byte{grantVersion}, m.Sum(nil)...)
	return append(out, payload...), nil
}

// VerifyGrant checks a token's tag and expiry at now and returns the grant, or an error
// wrapping ErrBadGrant that says what is wrong.
func VerifyGrant(key, token []byte, now time.Time) (Grant, error) {
	var g Grant
	if len(token) < 1+sha256.Size || token[0] != grantVersion {
		return g, fmt.Errorf("%w: malformed token", ErrBadGrant)
	}
	tag, payload := token[1:1+sha256.Size], token[1+sha256.Size:]
	m := hmac.New(sha256.New, key)
	m.Write(payload)
	if !hmac.Equal(tag, m.Sum(nil)) {
		return g, fmt.Errorf("%w: signature does not verify", ErrBadGrant)
	}
	if err := json.Unmarshal(payload, &g); err != nil {
		return g, fmt.Errorf("%w: payload: %v", ErrBadGrant, err)
	}
	if !now.Before(g.Expires) {
		return g, fmt.Errorf("%w: grant for snapshot %s expired at %s", ErrBadGrant, g.Snapshot.Str(), g.Expires.Format(time.RFC3339))
	}
	return g, nil
}

// GrantService issues restore grants. meta/server implements it; metarpc carries it.
type GrantService interface {
	// IssueGrant returns a signed grant for one snapshot, valid for ttl (<= MaxGrantTTL;
	// 0 means MaxGrantTTL) by the cluster clock, to a principal that may read the vault.
	IssueGrant(ctx context.Context, vault VaultID, snap SnapshotID, ttl time.Duration) ([]byte, Grant, error)
}
