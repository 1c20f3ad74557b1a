package chunkrpc_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/chunkrpc"
	"github.com/cofferhq/coffer/chunkstore/memstore"
	"github.com/cofferhq/coffer/transport"
)

// TestGetShardsOverQUIC: a node's batch of shards comes back in one call per
// MaxCallItems keys, each checked, with per-key errors for the missing ones.
func TestGetShardsOverQUIC(t *testing.T) {
	n := newNet(t)
	srv := n.node("node-s", chunkrpc.NewServer(memstore.NewShards(), nil))
	sc := chunkrpc.NewShardClient(n.endpoint("node-c", transport.RoleNode, false, nil), srv.Addr())
	ctx := ctxT(t)
	var shards []chunkstore.Shard
	for i := range 300 {
		shards = append(shards, shard(i/3, uint8(i%3), 8+i%50))
	}
	if err := sc.PutShards(ctx, shards); err != nil {
		t.Fatal(err)
	}
	var keys []chunkstore.ShardKey
	for _, s := range shards {
		keys = append(keys, s.Key)
	}
	missing := chunkstore.ShardKey{ID: id(9999), Index: 1}
	keys = append(keys, missing, shards[5].Key)
	res := sc.GetShards(ctx, keys)
	if len(res) != len(keys) {
		t.Fatalf("%d results for %d keys", len(res), len(keys))
	}
	for i, s := range shards {
		r := res[i]
		if r.Err != nil || r.Shard.Key != s.Key || r.Shard.Meta != s.Meta || !bytes.Equal(r.Shard.Data, s.Data) {
			t.Fatalf("shard %d: %+v, %v", i, r.Shard.Key, r.Err)
		}
	}
	if !errors.Is(res[len(shards)].Err, chunkstore.ErrNotFound) {
		t.Fatalf("missing shard: %v, want ErrNotFound", res[len(shards)].Err)
	}
	if r := res[len(shards)+1]; r.Err != nil || !bytes.Equal(r.Shard.Data, shards[5].Data) {
		t.Fatalf("repeated key: %v", r.Err)
	}
}

// TestGetShardsDeniedToAgents: shard.GetMany is a node-to-node call like shard.Get.
func TestGetShardsDeniedToAgents(t *testing.T) {
	n := newNet(t)
	shards := memstore.NewShards()
	s := shard(1, 0, 64)
	if err := shards.PutShards(ctxT(t), []chunkstore.Shard{s}); err != nil {
		t.Fatal(err)
	}
	srv := n.node("node-s", chunkrpc.NewServer(shards, memstore.NewChunks()))
	sc := chunkrpc.NewShardClient(n.endpoint("host-a", transport.RoleAgent, false, nil), srv.Addr())
	res := sc.GetShards(ctxT(t), []chunkstore.ShardKey{s.Key})
	if transport.CodeOf(res[0].Err) != transport.PermissionDenied || res[0].Shard.Data != nil {
		t.Fatalf("agent batch shard read: %v, want PermissionDenied", res[0].Err)
	}
}

// TestGetManySplitsLargeReplies: a batch whose chunks exceed one reply's MaxCallData comes
// back in several calls, in order and complete; per-chunk errors stay per chunk.
func TestGetManySplitsLargeReplies(t *testing.T) {
	chunks := memstore.NewChunks()
	srv := chunkrpc.NewServer(nil, chunks)
	lc := &loopCaller{srv: map[string]transport.Handler{"a": srv}, calls: map[string]int{}}
	cl := chunkrpc.NewClient(lc, []string{"a"})
	// 20 MiB through CBOR under -race on a loaded machine can take tens of seconds: the
	// deadline only guards against a hang.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var batch []chunkstore.Chunk
	var ids []chunk.ID
	for i := range 20 {
		c := chunkstore.Chunk{ID: id(i), Data: bytes.Repeat([]byte{byte(i)}, 1<<20)}
		batch = append(batch, c)
		ids = append(ids, c.ID)
	}
	if err := cl.Put(ctx, batch); err != nil {
		t.Fatal(err)
	}
	ids = append(ids[:10], append([]chunk.ID{id(5000)}, ids[10:]...)...) // a missing one in the middle
	lc.mu.Lock()
	lc.calls = map[string]int{}
	lc.mu.Unlock()
	res := cl.GetMany(ctx, ids)
	if len(res) != len(ids) {
		t.Fatalf("%d results for %d ids", len(res), len(ids))
	}
	for i, r := range res {
		if i == 10 {
			if !errors.Is(r.Err, chunkstore.ErrNotFound) {
				t.Fatalf("missing chunk: %v, want ErrNotFound", r.Err)
			}
			continue
		}
		j := i
		if i > 10 {
			j = i - 1
		}
		want := batch[j]
		if r.Err != nil || !bytes.Equal(r.Data, want.Data) {
			t.Fatalf("chunk %d: %v", i, r.Err)
		}
	}
	if got := lc.calls["a"]; got != 2 {
		t.Errorf("%d calls for 20 MiB of chunks, want 2 (replies of at most %d bytes)", got, chunkrpc.MaxCallData)
	}
}

// oldServer answers like a node that predates the batch methods.
type oldServer struct{ transport.Handler }

func (o oldServer) ServeRPC(ctx context.Context, peer transport.Peer, method string, body []byte) ([]byte, error) {
	if method == chunkrpc.MethodChunkGetMany || method == chunkrpc.MethodShardGetMany {
		return nil, transport.Errorf(transport.UnknownMethod, "unknown method %q", method)
	}
	return o.Handler.ServeRPC(ctx, peer, method, body)
}

// TestGetManyFromOlderCoordinator: a coordinator without chunk.GetMany is read chunk by
// chunk, with the same results.
func TestGetManyFromOlderCoordinator(t *testing.T) {
	chunks := memstore.NewChunks()
	srv := oldServer{chunkrpc.NewServer(nil, chunks)}
	lc := &loopCaller{srv: map[string]transport.Handler{"a": srv}, calls: map[string]int{}}
	cl := chunkrpc.NewClient(lc, []string{"a"})
	ctx := ctxT(t)
	var batch []chunkstore.Chunk
	var ids []chunk.ID
	for i := range 10 {
		c := chunkstore.Chunk{ID: id(i), Data: bytes.Repeat([]byte{byte(i)}, 100+i)}
		batch = append(batch, c)
		ids = append(ids, c.ID)
	}
	if err := cl.Put(ctx, batch); err != nil {
		t.Fatal(err)
	}
	for i, r := range cl.GetMany(ctx, append(ids, id(777))) {
		if i == len(ids) {
			if !errors.Is(r.Err, chunkstore.ErrNotFound) {
				t.Fatalf("missing chunk: %v", r.Err)
			}
			continue
		}
		if r.Err != nil || !bytes.Equal(r.Data, batch[i].Data) {
			t.Fatalf("chunk %d: %v", i, r.Err)
		}
	}
}
