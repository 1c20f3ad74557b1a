package meta

import (
	"context"
	"time"

	"github.com/cofferhq/coffer/chunkstore/grant"
)

// GrantService issues restore grants (the token is chunkstore/grant's). meta/server
// implements it; metarpc carries it.
type GrantService interface {
	// IssueGrant returns a signed grant for one snapshot, valid for ttl (<= grant.MaxTTL;
	// 0 means grant.MaxTTL) by the cluster clock, to a principal that may read the vault.
	// The grant names that principal and the vault; chunk nodes honour it only for them.
	IssueGrant(ctx context.Context, vault VaultID, snap SnapshotID, ttl time.Duration) ([]byte, grant.Grant, error)
}
