package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunkrpc"
	"github.com/cofferhq/coffer/placement"
	"github.com/cofferhq/coffer/transport"
)

// unreachableHold is how long a peer that failed to answer is skipped before it is tried
// again. It keeps a dead peer from costing every read a handshake timeout.
const unreachableHold = 3 * time.Second

// gossipOverride is how long after a peer last answered a call its gossip "dead" is
// not believed. On a loaded machine gossip's probes time out while the peer keeps
// answering calls (the chaos suite saw live nodes declared dead at a load average of 30,
// which turned two nodes down into three); a peer that is really gone stops answering,
// so its last answer ages past this within seconds of gossip's verdict.
const gossipOverride = 5 * time.Second

// peers hands out ShardStores for the cluster's chunk nodes: the local store for this node,
// and liveness-aware RPC clients for the others.
type peers struct {
	self   placement.NodeID
	local  chunkstore.ShardStore // nil when this node has no chunk role
	caller transport.Caller
	alive  func(id placement.NodeID) bool // gossip view; unknown members count as alive
	now    func() time.Time

	mu struct {
		sync.Mutex
		clients map[placement.NodeID]*peerStore
	}
}

func newPeers(self placement.NodeID, local chunkstore.ShardStore, c transport.Caller, alive func(placement.NodeID) bool, now func() time.Time) *peers {
	p := &peers{self: self, local: local, caller: c, alive: alive, now: now}
	p.mu.clients = map[placement.NodeID]*peerStore{}
	return p
}

// store returns the ShardStore for n.
func (p *peers) store(n placement.Node) chunkstore.ShardStore {
	if n.ID == p.self && p.local != nil {
		return p.local
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.mu.clients[n.ID]
	if s == nil || s.addr != n.Addr {
		sc := chunkrpc.NewShardClient(p.caller, n.Addr)
		s = &peerStore{id: n.ID, addr: n.Addr, p: p, ShardStore: sc, client: sc}
		p.mu.clients[n.ID] = s
	}
	return s
}

// peerStore is a remote ShardStore that fails fast while its node is known to be down.
type peerStore struct {
	chunkstore.ShardStore
	client *chunkrpc.ShardClient // the ShardStore, for the methods beyond that interface
	id     placement.NodeID
	addr   string
	p      *peers

	mu struct {
		sync.Mutex
		downUntil time.Time
		lastOK    time.Time // the last call the peer answered
	}
}

func (s *peerStore) check() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.p.now()
	if !s.p.alive(s.id) && now.Sub(s.mu.lastOK) >= gossipOverride {
		return fmt.Errorf("node: peer %s (%s) is down by gossip: %w", s.id, s.addr, chunkstore.ErrUnavailable)
	}
	if now.Before(s.mu.downUntil) {
		return fmt.Errorf("node: peer %s (%s) unreachable recently: %w", s.id, s.addr, chunkstore.ErrUnavailable)
	}
	return nil
}

func (s *peerStore) observe(err error) error {
	if err == nil || errors.Is(err, chunkstore.ErrNotFound) {
		s.mu.Lock()
		s.mu.lastOK = s.p.now()
		s.mu.Unlock()
		return err
	}
	if errors.Is(err, transport.ErrUnreachable) {
		s.mu.Lock()
		s.mu.downUntil = s.p.now().Add(unreachableHold)
		s.mu.Unlock()
		return fmt.Errorf("node: peer %s: %w (%w)", s.id, chunkstore.ErrUnavailable, err)
	}
	return err
}

func (s *peerStore) PutShards(ctx context.Context, shards []chunkstore.Shard) error {
	if err := s.check(); err != nil {
		return err
	}
	return s.observe(s.ShardStore.PutShards(ctx, shards))
}

func (s *peerStore) GetShard(ctx context.Context, key chunkstore.ShardKey) (chunkstore.Shard, error) {
	if err := s.check(); err != nil {
		return chunkstore.Shard{}, err
	}
	sh, err := s.ShardStore.GetShard(ctx, key)
	return sh, s.observe(err)
}

func (s *peerStore) HasShards(ctx context.Context, keys []chunkstore.ShardKey) ([]bool, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	r, err := s.ShardStore.HasShards(ctx, keys)
	return r, s.observe(err)
}

// GetShards reads a batch from the peer in shard.GetMany calls (see
// chunkrpc.ShardClient.GetShards), failing fast like GetShard while the peer is down.
func (s *peerStore) GetShards(ctx context.Context, keys []chunkstore.ShardKey) []chunkstore.ShardResult {
	out := make([]chunkstore.ShardResult, len(keys))
	if err := s.check(); err != nil {
		for i := range out {
			out[i].Err = err
		}
		return out
	}
	out = s.client.GetShards(ctx, keys)
	for i := range out {
		out[i].Err = s.observe(out[i].Err)
	}
	return out
}

// TouchShards asks like HasShards and has the peer record the answer as a touch (see
// chunkstore.GCStore), so that coord.Has protects every node's shards of a chunk it
// reports, not only this node's: garbage collection spares what a backup was told exists.
func (s *peerStore) TouchShards(ctx context.Context, keys []chunkstore.ShardKey) ([]bool, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	r, err := s.client.TouchShards(ctx, keys)
	return r, s.observe(err)
}

var _ chunkstore.PGLister = (*peerStore)(nil)

// EnumeratePG lists the peer's shards of one PG (see chunkrpc.ShardClient.EnumeratePG),
// failing fast like GetShard while the peer is down.
func (s *peerStore) EnumeratePG(ctx context.Context, pgCount, pg uint32, after *chunkstore.ShardKey, fn func(chunkstore.ShardInfo) error) error {
	if err := s.check(); err != nil {
		return err
	}
	return s.observe(s.client.EnumeratePG(ctx, pgCount, pg, after, fn))
}

// PGVersions returns the peer's PG change marks (shard.Versions), failing fast like
// GetShard while the peer is down.
func (s *peerStore) PGVersions(ctx context.Context, pgCount uint32) (chunkstore.PGVersions, error) {
	if err := s.check(); err != nil {
		return chunkstore.PGVersions{}, err
	}
	v, err := s.client.PGVersions(ctx, pgCount)
	return v, s.observe(err)
}
