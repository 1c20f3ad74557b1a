package coord

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/erasure"
	"github.com/cofferhq/coffer/chunkstore/hedge"
	"github.com/cofferhq/coffer/placement"
)

// DefaultMaxParallel is the default bound on concurrent node calls per operation.
const DefaultMaxParallel = 16

// maxCachedPGs bounds the placement cache (a map with more PGs computes the rest on
// every call).
const maxCachedPGs = 1 << 16

// Config configures a Store. Zero fields mean the documented default.
type Config struct {
	// Principal is recorded as ShardMeta.Writer on every shard this store writes.
	Principal string
	// Map returns the current cluster map (required). The returned Map must not be
	// modified afterwards (placement.Map values are immutable once published).
	Map func() *placement.Map
	// Shards returns the shard store of a node, remote or local (required). It is
	// called for every operation and should be cheap (cache connections behind it).
	Shards func(n placement.Node) chunkstore.ShardStore
	// Alive reports whether the failure detector does not hold a node failed (a node it
	// has not heard of yet, as right after this node starts, counts as alive). The map
	// lags the detector: after a restart the leader marks a node active again only on its
	// next tick, so a node the map marks down is written to and asked for existence when
	// Alive reports it alive; the shard store behind a node that is in fact unreachable
	// should fail fast. Nil trusts the map alone. It must be cheap and safe for
	// concurrent use.
	Alive func(id placement.NodeID) bool
	// Codec codes stripes; nil means a new erasure.Codec.
	Codec *erasure.Codec
	// Logger receives warnings about damaged or missing shards; nil discards them.
	Logger *slog.Logger
	// MaxParallel bounds the concurrent node calls of one operation; 0 means
	// DefaultMaxParallel.
	MaxParallel int
	// HedgeDelay is the least a Get waits without any shard answering before it reads
	// one more shard alongside (see getter.fetch); hedge.Factor times the average shard
	// read latency when that is longer. 0 means DefaultHedgeDelay, negative disables
	// hedging.
	HedgeDelay time.Duration
}

// DefaultHedgeDelay is the default Config.HedgeDelay.
const DefaultHedgeDelay = time.Second

var _ chunkstore.Store = (*Store)(nil)

// Store implements chunkstore.Store over the shard stores of the cluster's nodes. It
// holds no goroutines between calls and needs no Close. It is safe for concurrent use.
type Store struct {
	cfg    Config
	crcTab *crc32.Table
	hedge  *hedge.Delay

	// mu guards a cache of placements for one map (placement.Map values are
	// immutable, so the cache is keyed by the map pointer and dropped when it changes).
	mu struct {
		sync.Mutex
		m   *placement.Map
		pgs map[uint32]*placed
	}
	// stats counts degraded writes (see Degraded).
	stats struct {
		substitutes, reducedDomain, short atomic.Int64
	}
	// silent records nodes whose shard reads Get abandoned (no answer within
	// HedgeDelay), until when they are read last.
	silent struct {
		sync.Mutex
		until map[placement.NodeID]time.Time
	}
}

// silentHold is how long a node that left a read unanswered is read last.
const silentHold = 5 * time.Second

// markSilent records that a read from node id went unanswered.
func (s *Store) markSilent(id placement.NodeID) {
	s.silent.Lock()
	defer s.silent.Unlock()
	if s.silent.until == nil {
		s.silent.until = map[placement.NodeID]time.Time{}
	}
	s.silent.until[id] = time.Now().Add(silentHold)
}

// silentNodes reports which of nodes are still within their silent hold.
func (s *Store) silentNodes(nodes []placement.Node) []bool {
	out := make([]bool, len(nodes))
	s.silent.Lock()
	defer s.silent.Unlock()
	if len(s.silent.until) == 0 {
		return out
	}
	now := time.Now()
	for i, nd := range nodes {
		if until, ok := s.silent.until[nd.ID]; ok {
			if now.Before(until) {
				out[i] = true
			} else {
				delete(s.silent.until, nd.ID)
			}
		}
	}
	return out
}

// New returns a Store. It fails with chunkstore.ErrInvalid if Map or Shards is nil,
// MaxParallel is negative or Principal is longer than 65535 bytes.
func New(cfg Config) (*Store, error) {
	switch {
	case cfg.Map == nil:
		return nil, fmt.Errorf("coord: config: Map is nil: %w", chunkstore.ErrInvalid)
	case cfg.Shards == nil:
		return nil, fmt.Errorf("coord: config: Shards is nil: %w", chunkstore.ErrInvalid)
	case cfg.MaxParallel < 0:
		return nil, fmt.Errorf("coord: config: MaxParallel %d is negative: %w", cfg.MaxParallel, chunkstore.ErrInvalid)
	case len(cfg.Principal) > chunkstore.MaxWriterLen:
		return nil, fmt.Errorf("coord: config: Principal of %d bytes exceeds %d (it is every shard's ShardMeta.Writer): %w", len(cfg.Principal), chunkstore.MaxWriterLen, chunkstore.ErrInvalid)
	}
	if cfg.Codec == nil {
		cfg.Codec = erasure.NewCodec()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxParallel == 0 {
		cfg.MaxParallel = DefaultMaxParallel
	}
	if cfg.HedgeDelay == 0 {
		cfg.HedgeDelay = DefaultHedgeDelay
	}
	return &Store{cfg: cfg, crcTab: crc32.MakeTable(crc32.Castagnoli), hedge: hedge.New(cfg.HedgeDelay)}, nil
}

// layout is what one operation needs from the current map.
type layout struct {
	m    *placement.Map
	k, n int // data shards, total shards
}

// quorum is the write quorum: k+1 shards, or all of them when there is no parity.
func (l layout) quorum() int { return min(l.k+1, l.n) }

// current returns the current map's layout. Errors wrap chunkstore.ErrUnavailable (no
// map) or chunkstore.ErrInvalid (a profile that shard metadata cannot express).
func (s *Store) current() (layout, error) {
	m := s.cfg.Map()
	if m == nil {
		return layout{}, fmt.Errorf("coord: no cluster map: %w", chunkstore.ErrUnavailable)
	}
	p := m.Profile
	if p.K < 1 || p.M < 0 || p.K > 255 || p.M > 255 || p.K+p.M > erasure.MaxShards {
		return layout{}, fmt.Errorf("coord: map epoch %d: profile %d+%d: %w", m.Epoch, p.K, p.M, chunkstore.ErrInvalid)
	}
	return layout{m: m, k: p.K, n: p.K + p.M}, nil
}

// placed is the cached placement of one PG: its owners in shard order (an empty
// position, ID "", when the map has too few eligible nodes; see placement.PlaceBest),
// why positions are empty ("" when none is) and its substitute candidates.
type placed struct {
	nodes  []placement.Node
	short  string
	spares []placement.Node
}

// place returns the nodes of id's PG in shard order. The slice is shared (cached) and
// must not be modified. Positions the map cannot place hold the zero Node. Errors wrap
// chunkstore.ErrUnavailable.
func (s *Store) place(l layout, id chunk.ID) ([]placement.Node, error) {
	p, err := s.placePG(l, l.m.PG(id))
	if err != nil {
		return nil, fmt.Errorf("coord: place %s: %w", id.Str(), err)
	}
	return p.nodes, nil
}

// placePG returns the cached placement of pg under l's map (owners and spares; shared,
// must not be modified). The spares are the first n of placement.Map.Spares: writers
// take substitutes only from them, so Has knows where to look.
func (s *Store) placePG(l layout, pg uint32) (*placed, error) {
	s.mu.Lock()
	if s.mu.m != l.m {
		s.mu.m, s.mu.pgs = l.m, make(map[uint32]*placed)
	}
	p, ok := s.mu.pgs[pg]
	s.mu.Unlock()
	if ok {
		return p, nil
	}
	nodes, short, err := l.m.PlaceBest(pg, l.n)
	if err != nil {
		return nil, fmt.Errorf("pg %d, map epoch %d: %w: %w", pg, l.m.Epoch, err, chunkstore.ErrUnavailable)
	}
	p = &placed{nodes: nodes, short: short, spares: l.m.Spares(pg, nodes, l.n)}
	s.mu.Lock()
	if s.mu.m == l.m && len(s.mu.pgs) < maxCachedPGs {
		s.mu.pgs[pg] = p
	}
	s.mu.Unlock()
	return p, nil
}

// Locate returns the nodes that hold id's shards under the current map, in shard
// order. The result is a new slice.
func (s *Store) Locate(id chunk.ID) ([]placement.Node, error) {
	l, err := s.current()
	if err != nil {
		return nil, err
	}
	nodes, err := s.place(l, id)
	if err != nil {
		return nil, err
	}
	return slices.Clone(nodes), nil
}

// readStore is shardStore for reads: a node the map marks down is still asked (last;
// see Get's order), because the map lags a node that has come back (after a restart
// the leader marks it active again only once gossip has seen it for a while). While the
// node really is dead the shard store behind it fails fast (node/peers.go).
func (s *Store) readStore(n placement.Node) (chunkstore.ShardStore, error) {
	st := s.cfg.Shards(n)
	if st == nil {
		return nil, fmt.Errorf("node %s has no shard store: %w", n.ID, chunkstore.ErrUnavailable)
	}
	return st, nil
}

// shardStore returns the node's store, or an error wrapping chunkstore.ErrUnavailable
// when the node has no store, or is marked down and Config.Alive does not report it alive.
func (s *Store) shardStore(n placement.Node) (chunkstore.ShardStore, error) {
	if n.State == placement.StateDown && (s.cfg.Alive == nil || !s.cfg.Alive(n.ID)) {
		return nil, fmt.Errorf("node %s is down: %w", n.ID, chunkstore.ErrUnavailable)
	}
	st := s.cfg.Shards(n)
	if st == nil {
		return nil, fmt.Errorf("node %s has no shard store: %w", n.ID, chunkstore.ErrUnavailable)
	}
	return st, nil
}

// forEach calls fn(i) for i in [0, n) on at most MaxParallel goroutines and returns when
// all calls have returned. fn must be safe for concurrent use.
func (s *Store) forEach(n int, fn func(i int)) {
	workers := min(n, s.cfg.MaxParallel)
	if workers <= 1 {
		for i := range n {
			fn(i)
		}
		return
	}
	var next atomic.Int64
	work := func() {
		for {
			i := int(next.Add(1) - 1)
			if i >= n {
				return
			}
			fn(i)
		}
	}
	var wg sync.WaitGroup
	for range workers - 1 {
		wg.Go(work)
	}
	work() // the caller's goroutine is one of the workers
	wg.Wait()
}

func (s *Store) crc(data []byte) uint32 { return crc32.Checksum(data, s.crcTab) }

// ctxErr returns ctx's error wrapped for op, or nil.
func ctxErr(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("coord: %s: %w", op, err)
	}
	return nil
}

// isCorrupt reports whether err marks a damaged shard.
func isCorrupt(err error) bool { return errors.Is(err, chunkstore.ErrCorrupt) }

// isUnavailable reports whether err marks a quorum failure.
func isUnavailable(err error) bool { return errors.Is(err, chunkstore.ErrUnavailable) }
