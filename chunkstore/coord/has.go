package coord

import (
	"context"
	"fmt"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/placement"
)

// hasBatch is what one Has asks one node.
type hasBatch struct {
	node   placement.Node
	keys   []chunkstore.ShardKey
	owners []int // owners[j]: index into ids of keys[j]
}

// toucher is a shard store that records existence answers as touches (chunkstore.GCStore
// locally, chunkrpc.ShardClient remotely).
type toucher interface {
	TouchShards(ctx context.Context, keys []chunkstore.ShardKey) ([]bool, error)
}

// Has reports for each id whether it is durably stored: whether shards are present on
// at least the write quorum of distinct reachable nodes (k+1, all k+m when m is 0). It
// asks each owner once (HasShards) for all the shards it should hold, nodes in
// parallel; then, for the chunks that some owners hold but fewer than the quorum, the
// PG's spares (where Put puts the shards of owners that are down) for the positions the
// owners lacked. Nodes that are marked down (and not alive by Config.Alive) or fail to
// answer count as holding nothing.
//
// Every shard found is touched (TouchShards where the store supports it): a positive
// answer is something a backup relies on until its commit, and garbage collection spares
// chunks touched within its grace period.
//
// NB: the threshold is the write quorum and not k (enough to read) on purpose. Has is
// the dedup and commit check: a true answer lets an agent skip uploading a chunk and the
// meta leader commit a snapshot that refers to it, so it must promise what Put's
// acknowledgement promises: one more shard may be lost and the chunk still reads. A
// chunk left with only k..k+1 shards by an interrupted Put reports false, so the agent
// uploads it again and the first-write-wins Put completes its stripe.
//
// The result has len(ids) entries, in order. Errors: a zero ID (chunkstore.ErrInvalid),
// no usable map (chunkstore.ErrUnavailable), a cancelled ctx.
func (s *Store) Has(ctx context.Context, ids []chunk.ID) ([]bool, error) {
	for i, id := range ids {
		if id.IsZero() {
			return nil, fmt.Errorf("coord: has: id %d is the zero chunk id: %w", i, chunkstore.ErrInvalid)
		}
	}
	out := make([]bool, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	if err := ctxErr(ctx, "has"); err != nil {
		return nil, err
	}
	l, err := s.current()
	if err != nil {
		return nil, fmt.Errorf("coord: has: %w", err)
	}
	pgs := make([]*placed, len(ids))
	for j, id := range ids {
		p, err := s.placePG(l, l.m.PG(id))
		if err != nil {
			return nil, fmt.Errorf("coord: has %s: %w", id.Str(), err)
		}
		pgs[j] = p
	}
	// Round 1: the owners.
	counts := s.hasRound(ctx, ids, func(add func(nd placement.Node, j, i int)) {
		for j, p := range pgs {
			for i, nd := range p.nodes {
				if nd.ID != "" {
					add(nd, j, i)
				}
			}
		}
	}, nil)
	if err := ctxErr(ctx, "has"); err != nil {
		return nil, err
	}
	q := l.quorum()
	// Round 2: a chunk with some shards on its owners but short of quorum may have the
	// rest on substitutes (Put writes there when owners are down): ask the PG's spares
	// for the positions the owners lacked. A chunk no owner holds was never written (a
	// Put reaches at least k+1-m of its owners; see the envelope) and costs no second
	// call, which keeps the dedup check of new chunks at one call per owner.
	var again []int
	for j, c := range counts {
		if c.n > 0 && c.n < q && len(pgs[j].spares) > 0 {
			again = append(again, j)
		}
	}
	if len(again) > 0 {
		s.hasRound(ctx, ids, func(add func(nd placement.Node, j, i int)) {
			for _, j := range again {
				for _, sp := range pgs[j].spares {
					for i := range l.n {
						if counts[j].held == nil || !counts[j].held[i] {
							add(sp, j, i)
						}
					}
				}
			}
		}, counts)
		if err := ctxErr(ctx, "has"); err != nil {
			return nil, err
		}
	}
	for j, c := range counts {
		out[j] = c.n >= q
	}
	return out, nil
}

// hasCount is what Has found of one chunk: the positions held and the distinct nodes
// holding at least one of them.
type hasCount struct {
	held  []bool
	nodes map[placement.NodeID]bool
	n     int
}

// hasRound asks every node that plan adds (add(node, chunk j, position i)) whether it
// holds the shards, one TouchShards (or HasShards) call per node, nodes in parallel, and
// adds the answers to counts (a new slice of n when counts is nil). A node counts once
// per chunk however many positions it holds. Nodes marked down (and not alive by
// Config.Alive) or failing to answer count as holding nothing.
func (s *Store) hasRound(ctx context.Context, ids []chunk.ID, plan func(add func(nd placement.Node, j, i int)), counts []hasCount) []hasCount {
	if counts == nil {
		counts = make([]hasCount, len(ids))
	}
	var batches []*hasBatch
	byNode := make(map[placement.NodeID]*hasBatch)
	plan(func(nd placement.Node, j, i int) {
		b := byNode[nd.ID]
		if b == nil {
			b = &hasBatch{node: nd}
			byNode[nd.ID] = b
			batches = append(batches, b)
		}
		b.keys = append(b.keys, chunkstore.ShardKey{ID: ids[j], Index: uint8(i)})
		b.owners = append(b.owners, j)
	})
	present := make([][]bool, len(batches))
	s.forEach(len(batches), func(i int) {
		b := batches[i]
		st, err := s.shardStore(b.node)
		if err != nil {
			return
		}
		var got []bool
		if t, ok := st.(toucher); ok {
			got, err = t.TouchShards(ctx, b.keys)
		} else {
			got, err = st.HasShards(ctx, b.keys)
		}
		if err != nil || len(got) != len(b.keys) {
			s.cfg.Logger.Debug("coord: has: node did not answer", "node", string(b.node.ID), "err", err)
			return
		}
		present[i] = got
	})
	for bi, b := range batches {
		for x, ok := range present[bi] {
			if !ok {
				continue
			}
			c := &counts[b.owners[x]]
			if c.held == nil {
				c.held = make([]bool, 256)
				c.nodes = map[placement.NodeID]bool{}
			}
			c.held[b.keys[x].Index] = true
			if !c.nodes[b.node.ID] {
				c.nodes[b.node.ID] = true
				c.n++
			}
		}
	}
	return counts
}
