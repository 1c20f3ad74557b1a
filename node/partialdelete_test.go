package node_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/chunkrpc"
	"github.com/cofferhq/coffer/node"
	"github.com/cofferhq/coffer/node/nodetest"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
	cquic "github.com/cofferhq/coffer/transport/quic"
)

// TestDeleteOfAbandonedStripeShards: over shard.Delete, a node deletes a shard it owns and
// holds intact only when the shard's stripe is short of K positions on every node of the
// map (what a failed put leaves, and what repair's partial-stripe cleanup deletes); a shard
// of a whole stripe is still refused. Chaos run 3434 (seed 3434) failed because the guard
// refused every such delete: 11 PGs stayed unreadable for 5 minutes after the last fault.
func TestDeleteOfAbandonedStripeShards(t *testing.T) {
	c := nodetest.New(t, nodetest.Opts{})
	ctx := ctxT(t, 60*time.Second)
	var coordinator *node.Node
	for _, nd := range c.Nodes {
		if nd.Shards() != nil {
			coordinator = nd
			break
		}
	}
	mk := func(b byte) chunkstore.Chunk {
		data := bytes.Repeat([]byte{b, b + 1, b + 2}, 4000)
		var id chunk.ID
		id[0], id[1], id[31] = b, 0x77, 0x11
		return chunkstore.Chunk{ID: id, Data: data}
	}
	partial, whole := mk(1), mk(9)
	if err := coordinator.Chunks().Put(ctx, []chunkstore.Chunk{partial, whole}); err != nil {
		t.Fatal(err)
	}
	// Where each position of a chunk is held.
	holders := func(id chunk.ID) map[int]*node.Node {
		out := map[int]*node.Node{}
		for _, nd := range c.Nodes {
			st := nd.Shards()
			if st == nil {
				continue
			}
			for i := range 6 {
				has, err := st.HasShards(ctx, []chunkstore.ShardKey{{ID: id, Index: uint8(i)}})
				if err != nil {
					t.Fatal(err)
				}
				if has[0] {
					out[i] = nd
				}
			}
		}
		return out
	}
	// Leave the partial chunk with positions 0 and 1 only, as a put that failed after
	// two shards would.
	ph := holders(partial.ID)
	if len(ph) < 5 {
		t.Fatalf("the put stored %d positions, want at least 5", len(ph))
	}
	for i, nd := range ph {
		if i >= 2 {
			if err := nd.Shards().DeleteShards(ctx, []chunkstore.ShardKey{{ID: partial.ID, Index: uint8(i)}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	wh := holders(whole.ID)
	// Another chunk node asks, as repair does.
	var caller string
	for _, nd := range c.Nodes {
		if nd.Shards() != nil && nd != ph[0] && nd != wh[0] {
			caller = nd.ID()
			break
		}
	}
	ep, err := cquic.New(cquic.Config{Identity: identityFor(t, c, pki.IssueRequest{CommonName: caller, Role: transport.RoleNode}), Logger: nodetest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer ep.Close()
	if err := chunkrpc.NewShardClient(ep, wh[0].Addr()).DeleteShards(ctx, []chunkstore.ShardKey{{ID: whole.ID, Index: 0}}); transport.CodeOf(err) != transport.PermissionDenied {
		t.Fatalf("delete of an owned shard of a whole stripe: %v, want PermissionDenied", err)
	}
	if got := holders(whole.ID); len(got) != len(wh) {
		t.Fatalf("the whole stripe lost a shard: %d positions, had %d", len(got), len(wh))
	}
	if err := chunkrpc.NewShardClient(ep, ph[0].Addr()).DeleteShards(ctx, []chunkstore.ShardKey{{ID: partial.ID, Index: 0}}); err != nil {
		t.Fatalf("delete of an owned shard of a stripe with 2 of 6 positions left: %v, want it done", err)
	}
	if got := holders(partial.ID); len(got) != 1 {
		t.Fatalf("partial stripe after the delete: positions %v, want only position 1", got)
	}
}
