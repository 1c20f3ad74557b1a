package server

import (
	"context"
	"testing"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/metatest"
)

// TestServiceConformance holds the leader of a three-server cluster (raft's in-memory
// transport) to the meta.Service contract.
func TestServiceConformance(t *testing.T) {
	metatest.RunService(t, func(t *testing.T) metatest.Fixture {
		c := newCluster(t, 3, nil)
		l := c.srv[c.leader()]
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
