package chunkrpc

import (
	"context"
	"fmt"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/wire"
)

// ShardClient is a chunkstore.ShardStore on one remote node, through a transport.Caller.
// The caller's certificate must have the node role. It is safe for concurrent use and
// holds no connection of its own (the Caller caches connections).
type ShardClient struct {
	c    transport.Caller
	addr string
}

var _ chunkstore.ShardStore = (*ShardClient)(nil)

// NewShardClient returns a ShardStore for the node at addr.
func NewShardClient(c transport.Caller, addr string) *ShardClient {
	return &ShardClient{c: c, addr: addr}
}

// Addr is the node's address.
func (s *ShardClient) Addr() string { return s.addr }

// shardOverhead bounds the CBOR bytes of a wShard besides its data and writer name: map
// heads, keys, the ID's byte string, the integers and the heads of the data and name.
const shardOverhead = 96

// PutShards stores the batch on the node, in calls of at most MaxCallData bytes and
// MaxCallItems shards, one after another. Shards that any store would refuse (see
// chunkstore.ShardStore) fail the whole batch with ErrInvalid before anything is sent; an
// error in a later call leaves the earlier calls' shards stored (first write wins makes
// the retry safe).
func (s *ShardClient) PutShards(ctx context.Context, shards []chunkstore.Shard) error {
	for i := range shards {
		if err := shards[i].Validate(); err != nil {
			return fmt.Errorf("chunkrpc: put shards: %w", err)
		}
	}
	for len(shards) > 0 {
		n, size := 0, 0
		for n < len(shards) && n < MaxCallItems && (n == 0 || size+len(shards[n].Data) <= MaxCallData) {
			size += len(shards[n].Data)
			n++
		}
		req := shardPutReq{Shards: make([]wShard, n)}
		hint := 16 // the request's map head, key and array head
		for i := range n {
			req.Shards[i] = toWShard(shards[i])
			hint += shardOverhead + len(shards[i].Meta.Writer) + len(shards[i].Data)
		}
		// NB: encoded once into a buffer of the right size, not grown by doubling.
		body, err := wire.MarshalSized(req, hint)
		if err != nil {
			return fmt.Errorf("chunkrpc: %s: encode request: %v: %w", MethodShardPut, err, chunkstore.ErrInvalid)
		}
		if err := call(ctx, s.c, s.addr, MethodShardPut, body, nil); err != nil {
			return err
		}
		shards = shards[n:]
	}
	return nil
}

// GetShard fetches one shard (the node checks its CRC): ErrNotFound, ErrCorrupt, or
// ErrUnavailable when the node cannot be reached.
func (s *ShardClient) GetShard(ctx context.Context, key chunkstore.ShardKey) (chunkstore.Shard, error) {
	var resp wShard
	if err := call(ctx, s.c, s.addr, MethodShardGet, shardGetReq{Key: toWKey(key)}, &resp); err != nil {
		return chunkstore.Shard{}, err
	}
	sh := fromWShard(resp)
	if sh.Key != key {
		return chunkstore.Shard{}, fmt.Errorf("chunkrpc: %s on %s: asked for %s/%d, got %s/%d: %w",
			MethodShardGet, s.addr, key.ID.Str(), key.Index, sh.Key.ID.Str(), sh.Key.Index, chunkstore.ErrCorrupt)
	}
	return sh, nil
}

var _ chunkstore.BatchShardGetter = (*ShardClient)(nil)

// GetShards fetches many shards in shard.GetMany calls of at most MaxCallItems keys,
// each result checked like GetShard's (the node checks CRCs; a shard under another key
// is ErrCorrupt). The node answers as many keys per call as fit in MaxCallData bytes and
// the rest are asked again. A node without shard.GetMany is asked with shard.Get, one
// key at a time. A failed call is the error of every key not answered yet.
func (s *ShardClient) GetShards(ctx context.Context, keys []chunkstore.ShardKey) []chunkstore.ShardResult {
	out := make([]chunkstore.ShardResult, len(keys))
	for done := 0; done < len(keys); {
		part := keys[done:min(done+MaxCallItems, len(keys))]
		req := shardKeysReq{Keys: make([]wKey, len(part))}
		for i, k := range part {
			req.Keys[i] = toWKey(k)
		}
		var resp shardGetManyResp
		err := call(ctx, s.c, s.addr, MethodShardGetMany, req, &resp)
		if transport.CodeOf(err) == transport.UnknownMethod {
			for i := done; i < len(keys); i++ {
				out[i].Shard, out[i].Err = s.GetShard(ctx, keys[i])
			}
			return out
		}
		if err == nil && (len(resp.Results) == 0 || len(resp.Results) > len(part)) {
			err = fmt.Errorf("chunkrpc: %s on %s: %d answers for %d keys: %w", MethodShardGetMany, s.addr, len(resp.Results), len(part), chunkstore.ErrCorrupt)
		}
		if err != nil {
			for i := done; i < len(keys); i++ {
				out[i].Err = err
			}
			return out
		}
		for i, r := range resp.Results {
			key := part[i]
			switch {
			case r.Code != transport.OK:
				out[done+i].Err = fmt.Errorf("chunkrpc: %s on %s: %w", MethodShardGetMany, s.addr, Sentinels.Wrap(&transport.Error{Code: r.Code, Msg: r.Msg}))
			case r.Shard == nil:
				out[done+i].Err = fmt.Errorf("chunkrpc: %s on %s: %s/%d: empty answer: %w", MethodShardGetMany, s.addr, key.ID.Str(), key.Index, chunkstore.ErrCorrupt)
			default:
				sh := fromWShard(*r.Shard)
				if sh.Key != key {
					out[done+i].Err = fmt.Errorf("chunkrpc: %s on %s: asked for %s/%d, got %s/%d: %w",
						MethodShardGetMany, s.addr, key.ID.Str(), key.Index, sh.Key.ID.Str(), sh.Key.Index, chunkstore.ErrCorrupt)
					continue
				}
				out[done+i].Shard = sh
			}
		}
		done += len(resp.Results)
	}
	return out
}

// HasShards asks in calls of at most MaxCallItems keys.
func (s *ShardClient) HasShards(ctx context.Context, keys []chunkstore.ShardKey) ([]bool, error) {
	return s.has(ctx, MethodShardHas, keys)
}

// TouchShards is HasShards that also records the answer as a touch on the node (see
// chunkstore.GCStore): coord.Has uses it, so garbage collection spares what a backup
// was told exists. A node whose store keeps no touch times answers like HasShards.
func (s *ShardClient) TouchShards(ctx context.Context, keys []chunkstore.ShardKey) ([]bool, error) {
	return s.has(ctx, MethodShardTouch, keys)
}

func (s *ShardClient) has(ctx context.Context, method string, keys []chunkstore.ShardKey) ([]bool, error) {
	out := make([]bool, 0, len(keys))
	for start := 0; start < len(keys); start += MaxCallItems {
		part := keys[start:min(start+MaxCallItems, len(keys))]
		var resp hasResp
		if err := call(ctx, s.c, s.addr, method, keysReq(part), &resp); err != nil {
			return nil, err
		}
		if len(resp.Has) != len(part) {
			return nil, fmt.Errorf("chunkrpc: %s on %s: %d answers for %d keys: %w", method, s.addr, len(resp.Has), len(part), chunkstore.ErrCorrupt)
		}
		out = append(out, resp.Has...)
	}
	return out, nil
}

// DeleteShards deletes in calls of at most MaxCallItems keys.
func (s *ShardClient) DeleteShards(ctx context.Context, keys []chunkstore.ShardKey) error {
	for start := 0; start < len(keys); start += MaxCallItems {
		part := keys[start:min(start+MaxCallItems, len(keys))]
		if err := call(ctx, s.c, s.addr, MethodShardDelete, keysReq(part), nil); err != nil {
			return err
		}
	}
	return nil
}

// EnumerateShards pages through the node's shards (DefaultEnumerateLimit per call),
// calling fn in order in the caller's goroutine. The listing is not a snapshot: shards
// added or deleted between pages may or may not be reported.
func (s *ShardClient) EnumerateShards(ctx context.Context, after *chunkstore.ShardKey, fn func(chunkstore.ShardInfo) error) error {
	return s.enumerate(ctx, enumerateReq{Limit: DefaultEnumerateLimit}, after, chunkstore.ShardKey.Less, fn)
}

var _ chunkstore.PGLister = (*ShardClient)(nil)

// EnumeratePG pages through the node's shards of PG pg of pgCount (shard.Enumerate with
// a PG, DefaultEnumerateLimit per call), calling fn in PG order in the caller's
// goroutine. Like EnumerateShards, it is not a snapshot across pages.
func (s *ShardClient) EnumeratePG(ctx context.Context, pgCount, pg uint32, after *chunkstore.ShardKey, fn func(chunkstore.ShardInfo) error) error {
	if !chunkstore.ValidPGCount(pgCount, pg) {
		return fmt.Errorf("chunkrpc: %s pg %d of %d: %w", MethodShardEnumerate, pg, pgCount, chunkstore.ErrInvalid)
	}
	req := enumerateReq{Limit: DefaultEnumerateLimit, PGCount: pgCount, PG: pg}
	less := func(a, b chunkstore.ShardKey) bool { return chunkstore.PGCompare(a, b) < 0 }
	return s.enumerate(ctx, req, after, less, func(info chunkstore.ShardInfo) error {
		if got := chunkstore.PGOf(info.Key.ID, pgCount); got != pg {
			return fmt.Errorf("chunkrpc: %s on %s: key %s/%d of PG %d in a listing of PG %d: %w", MethodShardEnumerate, s.addr, info.Key.ID.Str(), info.Key.Index, got, pg, chunkstore.ErrCorrupt)
		}
		return fn(info)
	})
}

// enumerate pages through shard.Enumerate from after, checking that keys ascend by less.
func (s *ShardClient) enumerate(ctx context.Context, req enumerateReq, after *chunkstore.ShardKey, less func(a, b chunkstore.ShardKey) bool, fn func(chunkstore.ShardInfo) error) error {
	if after != nil {
		k := toWKey(*after)
		req.After = &k
	}
	for {
		var resp enumerateResp
		if err := call(ctx, s.c, s.addr, MethodShardEnumerate, req, &resp); err != nil {
			return err
		}
		for _, w := range resp.Infos {
			info := chunkstore.ShardInfo{Key: fromWKey(w.Key), Meta: fromWMeta(w.Meta), Len: w.Len}
			if req.After != nil && !less(fromWKey(*req.After), info.Key) {
				return fmt.Errorf("chunkrpc: %s on %s: key %s/%d out of order: %w", MethodShardEnumerate, s.addr, info.Key.ID.Str(), info.Key.Index, chunkstore.ErrCorrupt)
			}
			if err := fn(info); err != nil {
				return err
			}
			k := w.Key
			req.After = &k
		}
		if !resp.More {
			return nil
		}
		if len(resp.Infos) == 0 {
			return fmt.Errorf("chunkrpc: %s on %s: empty page marked as having more: %w", MethodShardEnumerate, s.addr, chunkstore.ErrCorrupt)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("chunkrpc: %s on %s: %w", MethodShardEnumerate, s.addr, err)
		}
	}
}

// PGVersions returns the node's PG change marks (shard.Versions).
func (s *ShardClient) PGVersions(ctx context.Context, pgCount uint32) (chunkstore.PGVersions, error) {
	if !chunkstore.ValidPGCount(pgCount, 0) {
		return chunkstore.PGVersions{}, fmt.Errorf("chunkrpc: %s: pg count %d: %w", MethodShardVersions, pgCount, chunkstore.ErrInvalid)
	}
	var resp versionsResp
	if err := call(ctx, s.c, s.addr, MethodShardVersions, versionsReq{PGCount: pgCount}, &resp); err != nil {
		return chunkstore.PGVersions{}, err
	}
	if want := min(pgCount, chunkstore.PGBuckets); uint32(len(resp.Seqs)) != want {
		return chunkstore.PGVersions{}, fmt.Errorf("chunkrpc: %s on %s: %d marks for %d PGs: %w", MethodShardVersions, s.addr, len(resp.Seqs), pgCount, chunkstore.ErrCorrupt)
	}
	return chunkstore.PGVersions{Incarnation: resp.Incarnation, Seqs: resp.Seqs}, nil
}

// Stats returns the node's shard counts.
func (s *ShardClient) Stats(ctx context.Context) (chunkstore.ShardStats, error) {
	var resp statsResp
	if err := call(ctx, s.c, s.addr, MethodShardStats, empty{}, &resp); err != nil {
		return chunkstore.ShardStats{}, err
	}
	return chunkstore.ShardStats{Shards: resp.Shards, Bytes: resp.Bytes, Segments: resp.Segments, Capacity: resp.Capacity, Corrupt: resp.Corrupt}, nil
}

func keysReq(keys []chunkstore.ShardKey) shardKeysReq {
	req := shardKeysReq{Keys: make([]wKey, len(keys))}
	for i, k := range keys {
		req.Keys[i] = toWKey(k)
	}
	return req
}
