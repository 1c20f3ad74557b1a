package memstore

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/cofferhq/coffer/chunkstore"
)

var _ chunkstore.ShardStore = (*Shards)(nil)

// Shards is a map-backed chunkstore.ShardStore. The zero value is an empty store. It is
// safe for concurrent use; data is copied in and out.
//
// Validation (all failures wrap chunkstore.ErrInvalid and leave the batch unstored): the
// chunk ID is not zero, data is 1..chunkstore.MaxChunkSize bytes, Meta.K >= 1,
// Key.Index < K+M, and Meta.Writer is at most 65535 bytes.
type Shards struct {
	mu struct {
		sync.RWMutex
		m     map[chunkstore.ShardKey]storedShard
		bytes int64
	}
}

type storedShard struct {
	meta chunkstore.ShardMeta
	data []byte // owned by the store, never handed out
}

// NewShards returns an empty shard store.
func NewShards() *Shards { return new(Shards) }

// PutShards stores copies of the shards. A key already stored (or earlier in the same
// batch) keeps its first value. A shard that fails validation fails the whole batch with
// chunkstore.ErrInvalid before anything is stored.
func (s *Shards) PutShards(ctx context.Context, shards []chunkstore.Shard) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memstore: put shards: %w", err)
	}
	for i := range shards {
		if err := validateShard(&shards[i]); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.m == nil {
		s.mu.m = make(map[chunkstore.ShardKey]storedShard)
	}
	for i := range shards {
		sh := &shards[i]
		if _, ok := s.mu.m[sh.Key]; ok {
			continue
		}
		s.mu.m[sh.Key] = storedShard{meta: sh.Meta, data: slices.Clone(sh.Data)}
		s.mu.bytes += int64(len(sh.Data))
	}
	return nil
}

// GetShard returns a copy of the shard, or an error wrapping chunkstore.ErrNotFound.
func (s *Shards) GetShard(ctx context.Context, key chunkstore.ShardKey) (chunkstore.Shard, error) {
	if err := ctx.Err(); err != nil {
		return chunkstore.Shard{}, fmt.Errorf("memstore: get %s/%d: %w", key.ID.Str(), key.Index, err)
	}
	s.mu.RLock()
	st, ok := s.mu.m[key]
	s.mu.RUnlock()
	if !ok {
		return chunkstore.Shard{}, fmt.Errorf("memstore: get %s/%d: %w", key.ID.Str(), key.Index, chunkstore.ErrNotFound)
	}
	return chunkstore.Shard{Key: key, Meta: st.meta, Data: slices.Clone(st.data)}, nil
}

// HasShards reports for each key whether it is stored; the result has len(keys) entries.
func (s *Shards) HasShards(ctx context.Context, keys []chunkstore.ShardKey) ([]bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memstore: has shards: %w", err)
	}
	out := make([]bool, len(keys))
	s.mu.RLock()
	defer s.mu.RUnlock()
	for i, k := range keys {
		_, out[i] = s.mu.m[k]
	}
	return out, nil
}

// DeleteShards removes the keys; missing keys are ignored.
func (s *Shards) DeleteShards(ctx context.Context, keys []chunkstore.ShardKey) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memstore: delete shards: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		if st, ok := s.mu.m[k]; ok {
			s.mu.bytes -= int64(len(st.data))
			delete(s.mu.m, k)
		}
	}
	return nil
}

// EnumerateShards calls fn for every shard with key > after (all shards when after is
// nil), ordered by chunk ID then index, in the caller's goroutine. It works on a copy of
// the key set taken at the start, so fn may call other methods of s. An error from fn
// stops the enumeration and is returned unchanged.
func (s *Shards) EnumerateShards(ctx context.Context, after *chunkstore.ShardKey, fn func(chunkstore.ShardInfo) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memstore: enumerate shards: %w", err)
	}
	s.mu.RLock()
	infos := make([]chunkstore.ShardInfo, 0, len(s.mu.m))
	for k, st := range s.mu.m {
		if after != nil && !after.Less(k) {
			continue
		}
		infos = append(infos, chunkstore.ShardInfo{Key: k, Meta: st.meta, Len: uint32(len(st.data))})
	}
	s.mu.RUnlock()
	slices.SortFunc(infos, func(a, b chunkstore.ShardInfo) int {
		switch {
		case a.Key.Less(b.Key):
			return -1
		case b.Key.Less(a.Key):
			return 1
		}
		return 0
	})
	for _, info := range infos {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("memstore: enumerate shards: %w", err)
		}
		if err := fn(info); err != nil {
			return err
		}
	}
	return nil
}

// Stats reports the live shard count and bytes. Segments and Capacity are 0.
func (s *Shards) Stats(ctx context.Context) (chunkstore.ShardStats, error) {
	if err := ctx.Err(); err != nil {
		return chunkstore.ShardStats{}, fmt.Errorf("memstore: stats: %w", err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return chunkstore.ShardStats{Shards: int64(len(s.mu.m)), Bytes: s.mu.bytes}, nil
}
