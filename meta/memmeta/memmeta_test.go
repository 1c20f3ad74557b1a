package memmeta_test

import (
	"context"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/memstore"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/memmeta"
	"github.com/cofferhq/coffer/meta/metatest"
	"github.com/cofferhq/coffer/placement"
)

// TestService holds the in-memory service to the meta.Service contract.
func TestService(t *testing.T) {
	metatest.RunService(t, func(t *testing.T) metatest.Fixture {
		chunks := memstore.NewChunks()
		m := placement.Map{Epoch: 1, PGCount: 16, Profile: placement.DefaultProfile}
		svc, err := memmeta.New(memmeta.Config{Chunks: chunks, Now: time.Now, Map: &m})
		if err != nil {
			t.Fatal(err)
		}
		return metatest.Fixture{
			As: func(p meta.Principal) meta.Service { return metatest.WithPrincipal(svc, p) },
			Put: func(ctx context.Context, id chunk.ID, data []byte) error {
				return chunks.Put(ctx, []chunkstore.Chunk{{ID: id, Data: data}})
			},
			Retention: func(p meta.Principal) meta.RetentionService { return retentionAs{svc, p} },
		}
	})
}

// retentionAs is svc's meta.RetentionService with p in every call's context.
type retentionAs struct {
	svc *memmeta.Service
	p   meta.Principal
}

func (r retentionAs) ctx(ctx context.Context) context.Context { return meta.WithPrincipal(ctx, r.p) }

func (r retentionAs) DeleteSnapshots(ctx context.Context, v meta.VaultID, ids []meta.SnapshotID, b meta.Bypass) ([]meta.Snapshot, error) {
	return r.svc.DeleteSnapshots(r.ctx(ctx), v, ids, b)
}
func (r retentionAs) Forget(ctx context.Context, v meta.VaultID, p meta.Policy, dryRun bool) (meta.ForgetResult, error) {
	return r.svc.Forget(r.ctx(ctx), v, p, dryRun)
}
func (r retentionAs) SetLock(ctx context.Context, v meta.VaultID, id meta.SnapshotID, l meta.Lock, b meta.Bypass) (meta.Snapshot, error) {
	return r.svc.SetLock(r.ctx(ctx), v, id, l, b)
}
func (r retentionAs) SetHold(ctx context.Context, v meta.VaultID, id meta.SnapshotID, hold bool, reason string) (meta.Snapshot, error) {
	return r.svc.SetHold(r.ctx(ctx), v, id, hold, reason)
}
func (r retentionAs) AuditLog(ctx context.Context, after uint64, limit int) ([]meta.AuditEntry, error) {
	return r.svc.AuditLog(r.ctx(ctx), after, limit)
}
func (r retentionAs) RecordRefusal(ctx context.Context, e meta.AuditEntry) error {
	return r.svc.RecordRefusal(r.ctx(ctx), e)
}
func (r retentionAs) RecordNodeAction(ctx context.Context, e meta.AuditEntry) error {
	return r.svc.RecordNodeAction(r.ctx(ctx), e)
}
