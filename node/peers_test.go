package node

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/chunkrpc"
	"github.com/cofferhq/coffer/chunkstore/memstore"
	"github.com/cofferhq/coffer/placement"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki/pkitest"
	"github.com/cofferhq/coffer/transport/quic"
)

// TestPeerStoresTouchAndBatch: the shard stores a node uses for its peers pass existence
// checks on as touches (coord.Has must protect every node's shards of a chunk it reports
// from garbage collection, not only the local node's) and read batches in one call.
func TestPeerStoresTouchAndBatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ca := pkitest.NewCA(t)
	var clockNs atomic.Int64 // the remote store's clock
	clockNs.Store(time.Unix(1_900_000_000, 0).UnixNano())
	now := func() time.Time { return time.Unix(0, clockNs.Load()) }
	remote := memstore.NewShards(memstore.WithClock(now))
	mux := transport.NewMux()
	chunkrpc.NewServer(remote, nil).Register(mux)
	srv, err := quic.New(quic.Config{Identity: pkitest.Identity(t, ca, "node-b", transport.RoleNode), Handler: mux, ListenAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli, err := quic.New(quic.Config{Identity: pkitest.Identity(t, ca, "node-a", transport.RoleNode)})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	p := newPeers("node-a", nil, cli, func(placement.NodeID) bool { return true }, time.Now)
	st := p.store(placement.Node{ID: "node-b", Addr: srv.Addr()})

	var id chunk.ID
	id[0] = 7
	sh := chunkstore.Shard{Key: chunkstore.ShardKey{ID: id, Index: 1}, Meta: chunkstore.ShardMeta{K: 4, M: 2, ChunkLen: 40, ChunkCRC: 1}, Data: make([]byte, 10)}
	if err := st.PutShards(ctx, []chunkstore.Shard{sh}); err != nil {
		t.Fatal(err)
	}
	// Written at clock; an hour later it is a GC candidate until something touches it.
	clockNs.Add(int64(time.Hour))
	candidates := func() int {
		n := 0
		if err := remote.GCCandidates(ctx, nil, now().Add(-time.Minute), func(chunk.ID, int64) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := candidates(); n != 1 {
		t.Fatalf("%d candidates before the touch, want 1", n)
	}
	// NB: the interface coord.Has looks for.
	toucher, ok := st.(interface {
		TouchShards(context.Context, []chunkstore.ShardKey) ([]bool, error)
	})
	if !ok {
		t.Fatal("a peer's shard store does not pass touches on")
	}
	has, err := toucher.TouchShards(ctx, []chunkstore.ShardKey{sh.Key, {ID: id, Index: 2}})
	if err != nil || !has[0] || has[1] {
		t.Fatalf("TouchShards = %v, %v", has, err)
	}
	if n := candidates(); n != 0 {
		t.Fatalf("%d candidates after the touch, want 0: the remote node did not record it", n)
	}
	res := chunkstore.GetShards(ctx, st, []chunkstore.ShardKey{sh.Key})
	if _, ok := st.(chunkstore.BatchShardGetter); !ok || res[0].Err != nil || len(res[0].Shard.Data) != 10 {
		t.Fatalf("batched read through a peer: batch %v, %v", ok, res[0].Err)
	}
}

// TestPeerGossipDeadNeedsSilence: gossip's "dead" makes a peer's store fail fast only
// once the peer has also stopped answering calls. Under load (the chaos suite, load
// average 30) gossip declared live nodes dead, and coordinators skipped them: two nodes
// down became three and backups inside the envelope failed.
func TestPeerGossipDeadNeedsSilence(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ca := pkitest.NewCA(t)
	mux := transport.NewMux()
	chunkrpc.NewServer(memstore.NewShards(), nil).Register(mux)
	srv, err := quic.New(quic.Config{Identity: pkitest.Identity(t, ca, "node-b", transport.RoleNode), Handler: mux, ListenAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli, err := quic.New(quic.Config{Identity: pkitest.Identity(t, ca, "node-a", transport.RoleNode)})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	var clockNs atomic.Int64
	clockNs.Store(time.Unix(1_900_000_000, 0).UnixNano())
	var alive atomic.Bool
	alive.Store(true)
	p := newPeers("node-a", nil, cli, func(placement.NodeID) bool { return alive.Load() },
		func() time.Time { return time.Unix(0, clockNs.Load()) })
	st := p.store(placement.Node{ID: "node-b", Addr: srv.Addr()})
	keys := []chunkstore.ShardKey{{Index: 1}}
	keys[0].ID[0] = 9
	if _, err := st.HasShards(ctx, keys); err != nil {
		t.Fatal(err)
	}
	// Gossip says dead a second after the peer answered: it is still asked.
	alive.Store(false)
	clockNs.Add(int64(time.Second))
	if _, err := st.HasShards(ctx, keys); err != nil {
		t.Fatalf("peer answered a second ago, gossip says dead: %v (want the call made)", err)
	}
	// No answer for longer than gossipOverride: gossip is believed.
	clockNs.Add(int64(gossipOverride + time.Second))
	if _, err := st.HasShards(ctx, keys); err == nil || !strings.Contains(err.Error(), "down by gossip") {
		t.Fatalf("peer silent for %v and dead by gossip: err %v, want down by gossip", gossipOverride+time.Second, err)
	}
}
