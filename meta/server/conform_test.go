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
		// newCluster's timeouts are generous enough that a machine loaded by parallel
		// race-enabled tests does not cost the leader its lease in the middle of a case.
		c := newCluster(t, 3, nil)
		l := leading{c}
		ctx := ctxT(t)
		waitFor(t, "initial map", func() bool { _, err := l.ClusterMap(ctx); return err == nil })
		return metatest.Fixture{
			As: func(p meta.Principal) meta.Service { return metatest.WithPrincipal(l, p) },
			Put: func(ctx context.Context, id chunk.ID, data []byte) error {
				return c.chunks.Put(ctx, []chunkstore.Chunk{{ID: id, Data: data}})
			},
			Retention: func(p meta.Principal) meta.RetentionService { return asRetention{l, p} },
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

// asRetention is the leader's meta.RetentionService with p in every call's context.
type asRetention struct {
	l leading
	p meta.Principal
}

func (a asRetention) ctx(ctx context.Context) context.Context { return meta.WithPrincipal(ctx, a.p) }

func (a asRetention) DeleteSnapshots(ctx context.Context, v meta.VaultID, ids []meta.SnapshotID, b meta.Bypass) ([]meta.Snapshot, error) {
	return a.l.s().DeleteSnapshots(a.ctx(ctx), v, ids, b)
}
func (a asRetention) Forget(ctx context.Context, v meta.VaultID, p meta.Policy, dryRun bool) (meta.ForgetResult, error) {
	return a.l.s().Forget(a.ctx(ctx), v, p, dryRun)
}
func (a asRetention) SetLock(ctx context.Context, v meta.VaultID, id meta.SnapshotID, l meta.Lock, b meta.Bypass) (meta.Snapshot, error) {
	return a.l.s().SetLock(a.ctx(ctx), v, id, l, b)
}
func (a asRetention) SetHold(ctx context.Context, v meta.VaultID, id meta.SnapshotID, hold bool, reason string) (meta.Snapshot, error) {
	return a.l.s().SetHold(a.ctx(ctx), v, id, hold, reason)
}
func (a asRetention) AuditLog(ctx context.Context, after uint64, limit int) ([]meta.AuditEntry, error) {
	return a.l.s().AuditLog(a.ctx(ctx), after, limit)
}
func (a asRetention) RecordRefusal(ctx context.Context, e meta.AuditEntry) error {
	return a.l.s().RecordRefusal(a.ctx(ctx), e)
}
func (a asRetention) RecordNodeAction(ctx context.Context, e meta.AuditEntry) error {
	return a.l.s().RecordNodeAction(a.ctx(ctx), e)
}
