package memstore_test

import (
	"time"

	"testing"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/memstore"
	"github.com/cofferhq/coffer/chunkstore/storetest"
)

func TestShardsConformance(t *testing.T) {
	storetest.RunShardStore(t, func(*testing.T) chunkstore.ShardStore { return memstore.NewShards() })
}

func TestShardsZeroValue(t *testing.T) {
	storetest.RunShardStore(t, func(*testing.T) chunkstore.ShardStore { return new(memstore.Shards) })
}

func TestChunksConformance(t *testing.T) {
	storetest.RunStore(t, func(*testing.T) chunkstore.Store { return memstore.NewChunks() })
}

func TestChunksZeroValue(t *testing.T) {
	storetest.RunStore(t, func(*testing.T) chunkstore.Store { return &memstore.Chunks{} })
}

func TestShardsGCConformance(t *testing.T) {
	storetest.RunGCStore(t, func(_ *testing.T, now func() time.Time) chunkstore.GCStore {
		return memstore.NewShards(memstore.WithClock(now))
	})
}
