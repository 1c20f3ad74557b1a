package coord

import (
	"context"
	"fmt"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/erasure"
	"github.com/cofferhq/coffer/placement"
)

// nodeBatch is everything one Put sends to one node.
type nodeBatch struct {
	node   placement.Node
	shards []chunkstore.Shard
	err    error // result of PutShards, wrapped with the node ID
}

// Put stores chunks durably: it returns nil once every chunk has a write quorum of k+1
// durable shards (all k+m when m is 0). All chunks are validated first: a zero ID, empty
// data or data above chunkstore.MaxChunkSize fails the whole batch with
// chunkstore.ErrInvalid (naming the chunk) and nothing is written; so does a map that
// cannot place the chunks (chunkstore.ErrUnavailable).
//
// The first write of an ID wins: a repeated ID (in the batch or already stored) keeps
// its first shards, node by node. All shards bound for one node go in one PutShards
// call; nodes are called in parallel, at most MaxParallel at once. Nodes marked down are
// not called (unless Config.Alive reports them alive) and count as failed shards.
//
// If a chunk misses its quorum the error wraps chunkstore.ErrUnavailable, names the first
// such chunk and how many others failed, and quotes the nodes' errors. Chunks that did
// reach their quorum stay stored. Put does not retain chunks or their data.
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
	type placed struct {
		c     *chunkstore.Chunk
		nodes []placement.Node
	}
	todo := make([]placed, 0, len(chunks))
	seen := make(map[chunk.ID]struct{}, len(chunks))
	for i := range chunks {
		c := &chunks[i]
		if _, dup := seen[c.ID]; dup {
			continue // first write wins within the batch too
		}
		seen[c.ID] = struct{}{}
		nodes, err := s.place(l, c.ID)
		if err != nil {
			return fmt.Errorf("coord: put: %w", err)
		}
		todo = append(todo, placed{c, nodes})
	}

	// Encode and group shards by node. shardBatch[j][i] is the batch holding shard i of
	// chunk j.
	var batches []*nodeBatch
	byNode := make(map[placement.NodeID]*nodeBatch)
	shardBatch := make([][]*nodeBatch, len(todo))
	k, m := l.k, l.n-l.k
	for j, p := range todo {
		shards, err := s.cfg.Codec.Encode(k, m, p.c.Data)
		if err != nil {
			return fmt.Errorf("coord: put %s: %w", p.c.ID.Str(), err)
		}
		meta := chunkstore.ShardMeta{
			K: uint8(k), M: uint8(m),
			ChunkLen: uint32(len(p.c.Data)),
			ChunkCRC: s.crc(p.c.Data),
			Writer:   s.cfg.Principal,
		}
		shardBatch[j] = make([]*nodeBatch, l.n)
		for i, nd := range p.nodes {
			b := byNode[nd.ID]
			if b == nil {
				b = &nodeBatch{node: nd}
				byNode[nd.ID] = b
				batches = append(batches, b)
			}
			b.shards = append(b.shards, chunkstore.Shard{
				Key:  chunkstore.ShardKey{ID: p.c.ID, Index: uint8(i)},
				Meta: meta,
				Data: shards[i],
			})
			shardBatch[j][i] = b
		}
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

	// Count acknowledgements per chunk.
	var firstErr error
	failed := 0
	errs := make([]error, l.n)
	for j, p := range todo {
		for i, b := range shardBatch[j] {
			errs[i] = b.err
		}
		if err := erasure.ReduceQuorum(errs, l.quorum()); err != nil {
			failed++
			if firstErr == nil {
				firstErr = fmt.Errorf("coord: put %s: %w", p.c.ID.Str(), err)
			}
		}
	}
	if firstErr == nil {
		return nil
	}
	if err := ctxErr(ctx, "put"); err != nil {
		return fmt.Errorf("%w (%v)", err, firstErr)
	}
	if failed > 1 {
		firstErr = fmt.Errorf("%w (and %d more of %d chunks short of quorum)", firstErr, failed-1, len(todo))
	}
	if !isUnavailable(firstErr) {
		firstErr = fmt.Errorf("%w: %w", firstErr, chunkstore.ErrUnavailable)
	}
	return firstErr
}
