package server

import (
	"context"
	"testing"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/metatest"
	"github.com/cofferhq/coffer/placement"
)

// TestServiceConformance holds a three-server cluster (raft's in-memory transport) to
// the meta.Service contract, each call made on the server leading at the time.
func TestServiceConformance(t *testing.T) {
	metatest.RunService(t, func(t *testing.T) metatest.Fixture {
		c := newCluster(t, 3, nil)
		l := leading{c}
		ctx := ctxT(t)
		waitFor(t, "initial map", func() bool { _, err := l.ClusterMap(ctx); return err == nil })
		return metatest.Fixture{
			As: func(p meta.Principal) meta.Service { return metatest.WithPrincipal(l, p) },
			Put: func(ctx context.Context, id chunk.ID, data []byte) error {
				return c.chunks.Put(ctx, []chunkstore.Chunk{{ID: id, Data: data}})
			},
		}
	})
}

// leading is a cluster's meta.Service as a client that finds the leader sees it: each
// call goes to the server leading when it is made (a leader lost under a loaded machine
// costs one call, not the rest of the suite).
type leading struct{ c *cluster }

func (l leading) s() *Server { return l.c.srv[l.c.leader()] }

func (l leading) CreateVault(ctx context.Context, v meta.Vault) (meta.Vault, error) {
	return l.s().CreateVault(ctx, v)
}
func (l leading) GetVault(ctx context.Context, id meta.VaultID) (meta.Vault, error) {
	return l.s().GetVault(ctx, id)
}
func (l leading) ListVaults(ctx context.Context) ([]meta.Vault, error) { return l.s().ListVaults(ctx) }
func (l leading) CommitSnapshot(ctx context.Context, s meta.Snapshot) (meta.Snapshot, error) {
	return l.s().CommitSnapshot(ctx, s)
}
func (l leading) ListSnapshots(ctx context.Context, v meta.VaultID) ([]meta.Snapshot, error) {
	return l.s().ListSnapshots(ctx, v)
}
func (l leading) GetSnapshot(ctx context.Context, v meta.VaultID, id meta.SnapshotID) (meta.Snapshot, error) {
	return l.s().GetSnapshot(ctx, v, id)
}
func (l leading) ClusterMap(ctx context.Context) (placement.Map, error) {
	return l.s().ClusterMap(ctx)
}
func (l leading) SetClusterMap(ctx context.Context, m placement.Map) error {
	return l.s().SetClusterMap(ctx, m)
}
func (l leading) RaftStatus(ctx context.Context) (meta.RaftStatus, error) {
	return l.s().RaftStatus(ctx)
}
