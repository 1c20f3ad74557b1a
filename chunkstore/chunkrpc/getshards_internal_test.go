package chunkrpc

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/memstore"
)

// barrierShards holds every GetShard until want reads are in flight at once (or until a
// deadline, so that a serial reader fails the test instead of hanging it) and records
// the most it saw. deadline is closed when waiting is over.
type barrierShards struct {
	chunkstore.ShardStore
	want     int32
	inflight atomic.Int32
	most     atomic.Int32
	met      chan struct{}
	metOnce  atomic.Bool
	deadline <-chan struct{}
}

func (b *barrierShards) GetShard(ctx context.Context, k chunkstore.ShardKey) (chunkstore.Shard, error) {
	n := b.inflight.Add(1)
	defer b.inflight.Add(-1)
	for {
		m := b.most.Load()
		if n <= m || b.most.CompareAndSwap(m, n) {
			break
		}
	}
	if n >= b.want && b.metOnce.CompareAndSwap(false, true) {
		close(b.met)
	}
	select {
	case <-b.met:
	case <-b.deadline:
	}
	return b.ShardStore.GetShard(ctx, k)
}

func testShard(n int, size int) chunkstore.Shard {
	var id chunk.ID
	id[0], id[1], id[31] = byte(n>>8), byte(n), 0xa5
	return chunkstore.Shard{
		Key:  chunkstore.ShardKey{ID: id, Index: uint8(n % 6)},
		Meta: chunkstore.ShardMeta{K: 4, M: 2, ChunkLen: uint32(size * 4), ChunkCRC: uint32(n), Writer: "node-0"},
		Data: bytes.Repeat([]byte{byte(n)}, size),
	}
}

// TestGetShardsReadsInParallel: shard.GetMany reads a window of getShardsParallel
// shards at once (a serial reader never has two in flight and fails at the deadline),
// and still answers every key in order with its own data.
func TestGetShardsReadsInParallel(t *testing.T) {
	ctx := context.Background()
	mem := memstore.NewShards()
	var shards []chunkstore.Shard
	var keys []chunkstore.ShardKey
	for i := range 3 * getShardsParallel {
		sh := testShard(i, 100+i)
		shards = append(shards, sh)
		keys = append(keys, sh.Key)
	}
	if err := mem.PutShards(ctx, shards); err != nil {
		t.Fatal(err)
	}
	late := make(chan struct{})
	stop := time.AfterFunc(10*time.Second, func() { close(late) })
	defer stop.Stop()
	b := &barrierShards{ShardStore: mem, want: getShardsParallel, met: make(chan struct{}), deadline: late}
	s := NewServer(b, nil)
	resp := s.getShards(ctx, keys)
	if got := b.most.Load(); got < getShardsParallel {
		t.Fatalf("at most %d shard reads in flight, want %d", got, getShardsParallel)
	}
	if len(resp.Results) != len(keys) {
		t.Fatalf("%d results for %d keys", len(resp.Results), len(keys))
	}
	for i, r := range resp.Results {
		if r.Shard == nil || !bytes.Equal(r.Shard.Data, shards[i].Data) || r.Shard.Key.ID != shards[i].Key.ID {
			t.Fatalf("result %d: %+v, want shard %d", i, r, i)
		}
	}
}

// TestGetShardsStopsAtCallLimit: a reply holds shard data up to MaxCallData and leaves
// the later keys out (the client asks again), even though a window reads past the
// limit: what was read beyond it is not sent.
func TestGetShardsStopsAtCallLimit(t *testing.T) {
	ctx := context.Background()
	mem := memstore.NewShards()
	const size = 3 << 20
	var keys []chunkstore.ShardKey
	var shards []chunkstore.Shard
	for i := range 10 {
		sh := testShard(i, size)
		shards = append(shards, sh)
		keys = append(keys, sh.Key)
	}
	if err := mem.PutShards(ctx, shards); err != nil {
		t.Fatal(err)
	}
	resp := NewServer(mem, nil).getShards(ctx, keys)
	want := (MaxCallData + size - 1) / size // the shard that reaches the limit is the last
	if len(resp.Results) != want {
		t.Fatalf("%d results, want %d (MaxCallData %d, shards of %d bytes)", len(resp.Results), want, MaxCallData, size)
	}
	for i, r := range resp.Results {
		if r.Shard == nil || !bytes.Equal(r.Shard.Data, shards[i].Data) {
			t.Fatalf("result %d is not shard %d", i, i)
		}
	}
}
