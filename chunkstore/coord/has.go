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

// Has reports for each id whether it is durably stored: whether at least the write
// quorum (k+1 shards, all of them when m is 0) is present on reachable nodes. It asks
// each node once (HasShards) for all the shards it should hold, nodes in parallel.
// Nodes that are marked down (and not alive by Config.Alive) or fail to
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
	var batches []*hasBatch
	byNode := make(map[placement.NodeID]*hasBatch)
	for j, id := range ids {
		nodes, err := s.place(l, id)
		if err != nil {
			return nil, fmt.Errorf("coord: has: %w", err)
		}
		for i, nd := range nodes {
			b := byNode[nd.ID]
			if b == nil {
				b = &hasBatch{node: nd}
				byNode[nd.ID] = b
				batches = append(batches, b)
			}
			b.keys = append(b.keys, chunkstore.ShardKey{ID: id, Index: uint8(i)})
			b.owners = append(b.owners, j)
		}
	}
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
	if err := ctxErr(ctx, "has"); err != nil {
		return nil, err
	}
	counts := make([]int, len(ids))
	for i, b := range batches {
		for j, ok := range present[i] {
			if ok {
				counts[b.owners[j]]++
			}
		}
	}
	q := l.quorum()
	for j, c := range counts {
		out[j] = c >= q
	}
	return out, nil
}
