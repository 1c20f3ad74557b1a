package coord

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/erasure"
	"github.com/cofferhq/coffer/placement"
)

// maxPutRounds bounds the rounds of one Put: the owners (and substitutes for owners
// known down), then substitutes for positions whose node failed, twice.
const maxPutRounds = 3

// nodeBatch is everything one round of a Put sends to one node.
type nodeBatch struct {
	node   placement.Node
	shards []chunkstore.Shard
	err    error // result of PutShards, wrapped with the node ID
}

// stripeW is one chunk being written: its shards and where each position went.
type stripeW struct {
	c      *chunkstore.Chunk
	p      *placed
	shards [][]byte
	meta   chunkstore.ShardMeta
	errs   []error                   // per position: nil once durable
	batch  []*nodeBatch              // per position: the batch of the current round, or nil
	at     []placement.Node          // per position: the node that took (or is taking) it
	used   map[placement.NodeID]bool // owners and every node given a position
	doms   map[string]bool           // failure domains of the nodes at durable or pending positions
}

func domainOf(n placement.Node) string {
	if n.Domain == "" {
		return "node:" + string(n.ID)
	}
	return "domain:" + n.Domain
}

// durable counts the positions written.
func (w *stripeW) durable() int {
	n := 0
	for _, e := range w.errs {
		if e == nil {
			n++
		}
	}
	return n
}

// Put stores chunks durably: it returns nil once every chunk has a write quorum of k+1
// durable shards (all k+m when m is 0) on k+1 distinct nodes. All chunks are validated
// first: a zero ID, empty data or data above chunkstore.MaxChunkSize fails the whole
// batch with chunkstore.ErrInvalid (naming the chunk) and nothing is written; so does a
// map that cannot place the chunks at all (chunkstore.ErrUnavailable).
//
// The first write of an ID wins: a repeated ID (in the batch or already stored) keeps
// its first shards, node by node. All shards bound for one node in one round go in one
// PutShards call; nodes are called in parallel, at most MaxParallel at once.
//
// Substitutes. A position whose owner is marked down (and not reported alive by
// Config.Alive) goes, in the first round, to a substitute: the first of the PG's spares
// (placement.Map.Spares) that is live, gives no other position of the stripe and, when
// one is left, sits in a failure domain the stripe does not use yet (a substitute in a
// used domain is a reduced-domain write). When a node fails its call, the chunks short of
// quorum send the failed positions to further substitutes in another round (at most
// maxPutRounds rounds); so, in the rounds left, do the failed positions of chunks that
// reached quorum: a chunk acknowledged on exactly its quorum would read as missing to Has
// (the dedup and commit check) while one holder is slow to answer, and a node whose disk
// is full (chunkstore.ErrNoSpace) would not take the shard from repair either. Substitute shards carry their normal key; repair moves them to
// their owner once it is back, or to the new owner once the old one is out. Positions
// the map cannot place (placement.PlaceBest: fewer eligible nodes than k+m) are not
// written. Config.Stats counts substitute shards, reduced-domain and short stripes.
//
// If a chunk misses its quorum the error wraps chunkstore.ErrUnavailable, names the first
// such chunk and how many others failed, quotes the nodes' errors and, when fewer than
// k+1 chunk nodes were live, says so ("3 of 7 chunk nodes down; 4+2 needs 5 live
// nodes"). Chunks that did reach their quorum stay stored. Put does not retain chunks or
// their data.
func (s *Store) Put(ctx context.Context, chunks []chunkstore.Chunk) error {
	for i := range chunks {
		if err := chunks[i].Validate(); err != nil {
			return fmt.Errorf("coord: put: chunk %d of %d: %w", i, len(chunks), err)
		}
	}
	if len(chunks) == 0 {
		return nil
	}
	if err := ctxErr(ctx, "put"); err != nil {
		return err
	}
	l, err := s.current()
	if err != nil {
		return fmt.Errorf("coord: put: %w", err)
	}
	// Place every chunk before writing anything.
	todo := make([]*stripeW, 0, len(chunks))
	seen := make(map[chunk.ID]struct{}, len(chunks))
	for i := range chunks {
		c := &chunks[i]
		if _, dup := seen[c.ID]; dup {
			continue // first write wins within the batch too
		}
		seen[c.ID] = struct{}{}
		p, err := s.placePG(l, l.m.PG(c.ID))
		if err != nil {
			return fmt.Errorf("coord: put %s: %w", c.ID.Str(), err)
		}
		todo = append(todo, &stripeW{c: c, p: p})
	}
	k, m := l.k, l.n-l.k
	for _, w := range todo {
		shards, err := s.cfg.Codec.Encode(k, m, w.c.Data)
		if err != nil {
			return fmt.Errorf("coord: put %s: %w", w.c.ID.Str(), err)
		}
		w.shards = shards
		w.meta = chunkstore.ShardMeta{
			K: uint8(k), M: uint8(m),
			ChunkLen: uint32(len(w.c.Data)),
			ChunkCRC: s.crc(w.c.Data),
			Writer:   s.cfg.Principal,
		}
		w.errs = make([]error, l.n)
		w.batch = make([]*nodeBatch, l.n)
		w.at = make([]placement.Node, l.n)
		w.used = make(map[placement.NodeID]bool, l.n+1)
		w.doms = make(map[string]bool, l.n)
		for _, o := range w.p.nodes {
			if o.ID != "" {
				w.used[o.ID] = true
			}
		}
	}

	failed := map[placement.NodeID]error{} // nodes that failed a call of this Put
	var subs, reduced int64
	for round := range maxPutRounds {
		var batches []*nodeBatch
		byNode := make(map[placement.NodeID]*nodeBatch)
		assign := func(w *stripeW, i int, nd placement.Node) {
			b := byNode[nd.ID]
			if b == nil {
				b = &nodeBatch{node: nd}
				byNode[nd.ID] = b
				batches = append(batches, b)
			}
			b.shards = append(b.shards, chunkstore.Shard{
				Key:  chunkstore.ShardKey{ID: w.c.ID, Index: uint8(i)},
				Meta: w.meta,
				Data: w.shards[i],
			})
			w.batch[i], w.at[i] = b, nd
			w.used[nd.ID] = true
			w.doms[domainOf(nd)] = true
		}
		for _, w := range todo {
			// An acknowledged chunk still sends its failed positions to substitutes in
			// the rounds left: acknowledged on exactly the quorum, it would read as
			// missing (Has, the commit check) as long as one holder is slow to answer,
			// and a full disk would not take the shard from repair either.
			if round > 0 && w.durable() == l.n {
				continue
			}
			if round == 0 {
				// Owners first, so that substitutes see every domain the stripe uses.
				for i, o := range w.p.nodes {
					if o.ID != "" && !s.isDown(o) {
						assign(w, i, o)
					}
				}
			}
			for i, o := range w.p.nodes {
				switch {
				case round > 0 && w.errs[i] == nil:
					continue // durable
				case round == 0 && o.ID == "":
					w.errs[i] = fmt.Errorf("shard %d: %s: %w", i, w.p.short, chunkstore.ErrUnavailable)
					continue
				case round == 0 && !s.isDown(o):
					continue // assigned above
				case round == 0:
					w.errs[i] = fmt.Errorf("node %s is down: %w", o.ID, chunkstore.ErrUnavailable)
				case round > 0 && o.ID == "":
					continue
				}
				// A substitute for the down or failed node at position i.
				sub, ok := s.substitute(w, failed)
				if !ok {
					continue
				}
				if w.doms[domainOf(sub)] {
					reduced++
				}
				assign(w, i, sub)
			}
		}
		if len(batches) == 0 {
			break
		}
		s.forEach(len(batches), func(i int) {
			b := batches[i]
			st, err := s.shardStore(b.node)
			if err == nil {
				if err = st.PutShards(ctx, b.shards); err != nil {
					err = fmt.Errorf("node %s: %w", b.node.ID, err)
				}
			}
			b.err = err
		})
		for _, b := range batches {
			if b.err != nil {
				failed[b.node.ID] = b.err
			}
		}
		for _, w := range todo {
			for i, b := range w.batch {
				if b == nil {
					continue
				}
				w.batch[i] = nil
				w.errs[i] = b.err
				if b.err == nil && w.at[i].ID != w.p.nodes[i].ID {
					subs++
				}
			}
		}
		if ctx.Err() != nil {
			break
		}
	}

	// Count acknowledgements per chunk.
	var firstErr error
	short, missed := 0, 0
	for _, w := range todo {
		err := erasure.ReduceQuorum(w.errs, l.quorum())
		if err != nil {
			missed++
			if firstErr == nil {
				firstErr = fmt.Errorf("coord: put %s: %w", w.c.ID.Str(), err)
			}
		} else if w.durable() < l.n {
			short++
		}
	}
	s.stats.substitutes.Add(subs)
	s.stats.reducedDomain.Add(reduced)
	s.stats.short.Add(int64(short))
	if subs > 0 || short > 0 {
		s.cfg.Logger.Debug("coord: put: degraded writes", "chunks", len(todo), "substitute_shards", subs,
			"reduced_domain", reduced, "short_stripes", short)
	}
	if firstErr == nil {
		return nil
	}
	if err := ctxErr(ctx, "put"); err != nil {
		return fmt.Errorf("%w (%v)", err, firstErr)
	}
	if missed > 1 {
		firstErr = fmt.Errorf("%w (and %d more of %d chunks short of quorum)", firstErr, missed-1, len(todo))
	}
	if env := s.envelope(l, failed); env != "" {
		firstErr = fmt.Errorf("coord: put: %s: %w", env, firstErr)
	}
	if !isUnavailable(firstErr) {
		firstErr = fmt.Errorf("%w: %w", firstErr, chunkstore.ErrUnavailable)
	}
	return firstErr
}

// substitute picks the node that takes a position of w in place of a down or failed
// node: the first of the PG's spares that is live (not marked down, not failed in this
// Put) and holds no position of w, preferring one whose failure domain w does not use.
func (s *Store) substitute(w *stripeW, failed map[placement.NodeID]error) (placement.Node, bool) {
	var any *placement.Node
	for i := range w.p.spares {
		sp := &w.p.spares[i]
		if w.used[sp.ID] || failed[sp.ID] != nil || s.isDown(*sp) {
			continue
		}
		if !w.doms[domainOf(*sp)] {
			return *sp, true
		}
		if any == nil {
			any = sp
		}
	}
	if any == nil {
		return placement.Node{}, false
	}
	return *any, true
}

// isDown reports whether writes skip n: the map marks it down (or out, or it is not a
// node that takes writes) and Config.Alive does not report it alive.
func (s *Store) isDown(n placement.Node) bool {
	return n.State == placement.StateDown && (s.cfg.Alive == nil || !s.cfg.Alive(n.ID))
}

// envelope describes the cluster when a Put missed its quorum because fewer than k+1
// chunk nodes were live: "3 of 7 chunk nodes down; 4+2 needs 5 live nodes (down: a, b;
// failed: c)". Chunk nodes are the map's active and down nodes (those that hold PGs); a
// node is down when the map marks it so (and Config.Alive does not report it alive) or
// it failed a call of this Put. It returns "" when at least k+1 were live (the failure
// is then not the envelope's: the quoted node errors say what it was).
func (s *Store) envelope(l layout, failed map[placement.NodeID]error) string {
	total := 0
	var down, bad []string
	for _, nd := range l.m.Nodes {
		if !nd.State.HoldsPGs() {
			continue
		}
		total++
		switch {
		case s.isDown(nd):
			down = append(down, string(nd.ID))
		case failed[nd.ID] != nil:
			bad = append(bad, string(nd.ID))
		}
	}
	live := total - len(down) - len(bad)
	if live >= l.quorum() {
		return ""
	}
	sort.Strings(down)
	sort.Strings(bad)
	var who []string
	if len(down) > 0 {
		who = append(who, "down: "+strings.Join(down, ", "))
	}
	if len(bad) > 0 {
		who = append(who, "failing: "+strings.Join(bad, ", "))
	}
	head := fmt.Sprintf("%d of %d chunk nodes down", total-live, total)
	if total-live == 0 {
		head = fmt.Sprintf("%d chunk nodes", total)
	}
	msg := fmt.Sprintf("%s; %d+%d needs %d live nodes", head, l.k, l.n-l.k, l.quorum())
	if len(who) > 0 {
		msg += " (" + strings.Join(who, "; ") + ")"
	}
	return msg
}

// DegradedWrites counts the writes a Store made around missing nodes since it started.
type DegradedWrites struct {
	// SubstituteShards is shards written to a substitute node instead of their owner.
	SubstituteShards int64 `json:"substitute_shards"`
	// ReducedDomain is substitute shards that share a failure domain with another
	// shard of their stripe (no substitute in an unused domain was live).
	ReducedDomain int64 `json:"reduced_domain"`
	// ShortStripes is chunks acknowledged with fewer than k+m shards written.
	ShortStripes int64 `json:"short_stripes"`
}

// Degraded returns the store's degraded-write counters.
func (s *Store) Degraded() DegradedWrites {
	return DegradedWrites{SubstituteShards: s.stats.substitutes.Load(), ReducedDomain: s.stats.reducedDomain.Load(),
		ShortStripes: s.stats.short.Load()}
}
