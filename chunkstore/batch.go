package chunkstore

import (
	"context"
	"fmt"

	"golang.org/x/sync/errgroup"

	"github.com/cofferhq/coffer/chunkstore/chunk"
)

// Batched reads. A restore reads thousands of small chunks; one call per chunk (and, on
// a distributed store, k shard calls per chunk) makes the per-call cost the limit. The
// batch contracts below let a store answer many reads in one call; GetMany and
// GetShards fall back to single reads for stores that do not implement them.

// GetResult is the outcome of reading one chunk of a batch: Data (owned by the caller)
// or Err, with the same meaning as Store.Get's.
type GetResult struct {
	Data []byte
	Err  error
}

// BatchGetter is a Store that reads many chunks in one call.
type BatchGetter interface {
	// GetMany returns one result per id, in order; repeated ids get equal results. A
	// failure of the whole call (a cancelled ctx, no coordinator) is every result's Err.
	GetMany(ctx context.Context, ids []chunk.ID) []GetResult
}

// ShardResult is the outcome of reading one shard of a batch: Shard, or Err with the
// same meaning as ShardStore.GetShard's.
type ShardResult struct {
	Shard Shard
	Err   error
}

// BatchShardGetter is a ShardStore that reads many shards in one call.
type BatchShardGetter interface {
	// GetShards returns one result per key, in order, each checked like GetShard's. A
	// failure of the whole call is every result's Err.
	GetShards(ctx context.Context, keys []ShardKey) []ShardResult
}

// singleReads bounds the single Get calls GetMany runs at once for a store that has no
// batch read.
const singleReads = 8

// GetMany reads ids from s: in one call when s is a BatchGetter, else as GetEach. The
// result has len(ids) entries, in order.
func GetMany(ctx context.Context, s Store, ids []chunk.ID) []GetResult {
	if b, ok := s.(BatchGetter); ok {
		return b.GetMany(ctx, ids)
	}
	return GetEach(ctx, s, ids)
}

// GetEach reads ids with s.Get, a few at a time. The result has len(ids) entries, in
// order.
func GetEach(ctx context.Context, s Store, ids []chunk.ID) []GetResult {
	out := make([]GetResult, len(ids))
	var g errgroup.Group
	g.SetLimit(singleReads)
	for i, id := range ids {
		g.Go(func() error {
			out[i].Data, out[i].Err = s.Get(ctx, id)
			return nil
		})
	}
	_ = g.Wait() // the functions report through out
	return out
}

// GetShards reads keys from st: in one call when st is a BatchShardGetter, else with
// GetShard, one after another (a local store answers from memory and disk, where a
// loop costs nothing a batch would save). The result has len(keys) entries, in order.
func GetShards(ctx context.Context, st ShardStore, keys []ShardKey) []ShardResult {
	if b, ok := st.(BatchShardGetter); ok {
		return b.GetShards(ctx, keys)
	}
	out := make([]ShardResult, len(keys))
	for i, k := range keys {
		if err := ctx.Err(); err != nil {
			out[i].Err = fmt.Errorf("chunkstore: get shard %s/%d: %w", k.ID.Str(), k.Index, err)
			continue
		}
		out[i].Shard, out[i].Err = st.GetShard(ctx, k)
	}
	return out
}
