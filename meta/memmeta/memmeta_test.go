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
		}
	})
}
