package coord

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/placement"
)

var _ chunkstore.BatchGetter = (*Store)(nil)

// batchHedgeFactor scales the hedge delay for a batched read: a node answers many shards
// in one call, which takes longer than one shard read.
const batchHedgeFactor = 2

// batchChunk is one distinct chunk of a GetMany call.
type batchChunk struct {
	id    chunk.ID
	pos   []int // positions in the caller's ids
	nodes []placement.Node
	res   []fetched // per shard index; only the k read are tried
	read  int       // shards asked for in the batch (0: straight to the single read)
}

// nodeBatchRead is every shard one GetMany asks of one node.
type nodeBatchRead struct {
	node   placement.Node
	keys   []chunkstore.ShardKey
	owners []*batchChunk // owners[j] wants keys[j]
	res    []chunkstore.ShardResult
}

// GetMany reads many chunks with one batched shard read per node (see
// chunkstore.BatchShardGetter) instead of k reads per chunk.
//
// For each chunk it asks the first k nodes of its placement that are neither down nor
// recently silent (data shards first, as Get does) and rebuilds the chunk when all k
// answer with agreeing stripe metadata and the result passes its CRC32C. Every chunk
// that the fast path cannot serve (a node missing, down, slow or wrong; a shard not
// found or damaged; a CRC mismatch) is read again with Get, which reads parity, hedges,
// looks off the placement and reports damage for repair: GetMany answers exactly what
// Get would, only with fewer calls. A node that has not answered within twice the hedge
// delay is marked silent and its chunks go to Get.
//
// The result has len(ids) entries in order; repeated ids share one read. A zero ID is
// ErrInvalid for its entry only; a cancelled ctx is every unfinished entry's error.
func (s *Store) GetMany(ctx context.Context, ids []chunk.ID) []chunkstore.GetResult {
	out := make([]chunkstore.GetResult, len(ids))
	if err := ctxErr(ctx, "get"); err != nil {
		for i := range out {
			out[i].Err = err
		}
		return out
	}
	l, err := s.current()
	if err != nil {
		for i := range out {
			out[i].Err = fmt.Errorf("coord: get: %w", err)
		}
		return out
	}
	ctx, cancel := context.WithCancel(ctx) // ends batches that GetMany stopped waiting for
	defer cancel()

	var chunks []*batchChunk
	byID := make(map[chunk.ID]*batchChunk, len(ids))
	var reads []*nodeBatchRead
	byNode := map[placement.NodeID]*nodeBatchRead{}
	for i, id := range ids {
		if id.IsZero() {
			out[i].Err = fmt.Errorf("coord: get: zero chunk id: %w", chunkstore.ErrInvalid)
			continue
		}
		if c := byID[id]; c != nil {
			c.pos = append(c.pos, i)
			continue
		}
		nodes, err := s.place(l, id)
		if err != nil {
			out[i].Err = fmt.Errorf("coord: get: %w", err)
			continue
		}
		c := &batchChunk{id: id, pos: []int{i}, nodes: nodes, res: make([]fetched, l.n)}
		byID[id] = c
		chunks = append(chunks, c)
		silent := s.silentNodes(nodes)
		var pick []int
		for j, nd := range nodes {
			if len(pick) < l.k && nd.ID != "" && nd.State != placement.StateDown && !silent[j] {
				pick = append(pick, j)
			}
		}
		if len(pick) < l.k {
			continue // Get orders the silent and down nodes
		}
		c.read = len(pick)
		for _, j := range pick {
			nd := nodes[j]
			r := byNode[nd.ID]
			if r == nil {
				r = &nodeBatchRead{node: nd}
				byNode[nd.ID] = r
				reads = append(reads, r)
			}
			r.keys = append(r.keys, chunkstore.ShardKey{ID: id, Index: uint8(j)})
			r.owners = append(r.owners, c)
		}
	}

	s.readBatches(ctx, l, reads)

	// Rebuild what the batches supplied; everything else goes to Get.
	var slow []*batchChunk
	for _, c := range chunks {
		data, ok := c.fast(s, l)
		if !ok {
			slow = append(slow, c)
			continue
		}
		c.deliver(out, data, nil)
	}
	var g errgroup.Group
	g.SetLimit(s.cfg.MaxParallel)
	for _, c := range slow {
		g.Go(func() error {
			data, err := s.Get(ctx, c.id)
			c.deliver(out, data, err)
			return nil
		})
	}
	_ = g.Wait() // results go to out
	return out
}

// readBatches runs every node's batch in parallel and files the answers into their
// chunks. It stops waiting for nodes that have not answered within batchHedgeFactor
// hedge delays (when hedging is on), marking them silent; their chunks stay untried.
func (s *Store) readBatches(ctx context.Context, l layout, reads []*nodeBatchRead) {
	if len(reads) == 0 {
		return
	}
	done := make(chan *nodeBatchRead, len(reads)) // buffered: late batches never block
	for _, r := range reads {
		go func() {
			st, err := s.readStore(r.node)
			if err != nil {
				r.res = make([]chunkstore.ShardResult, len(r.keys))
				for j := range r.res {
					r.res[j].Err = err
				}
			} else {
				r.res = chunkstore.GetShards(ctx, st, r.keys)
			}
			done <- r
		}()
	}
	var timeout <-chan time.Time
	if s.cfg.HedgeDelay > 0 {
		t := time.NewTimer(batchHedgeFactor * s.hedge.Get())
		defer t.Stop()
		timeout = t.C
	}
	pending := make(map[*nodeBatchRead]bool, len(reads))
	for _, r := range reads {
		pending[r] = true
	}
	for len(pending) > 0 {
		select {
		case r := <-done:
			delete(pending, r)
			for j, key := range r.keys {
				var sh chunkstore.Shard
				err := fmt.Errorf("node %s: %d answers for %d shards: %w", r.node.ID, len(r.res), len(r.keys), chunkstore.ErrUnavailable)
				if len(r.res) == len(r.keys) {
					sh, err = r.res[j].Shard, r.res[j].Err
				}
				r.owners[j].res[key.Index] = checkShard(l, r.node, key, sh, err)
			}
		case <-timeout:
			for r := range pending {
				s.markSilent(r.node.ID)
			}
			return
		}
	}
}

// fast rebuilds the chunk from the k shards its batch read, if they all came back usable
// from one stripe and the result passes the stripe's CRC.
func (c *batchChunk) fast(s *Store, l layout) ([]byte, bool) {
	if c.read < l.k {
		return nil, false
	}
	var key stripeKey
	shards := make([][]byte, l.n)
	got := 0
	for i, f := range c.res {
		if !f.tried {
			continue
		}
		if f.err != nil || (got > 0 && f.key != key) {
			return nil, false
		}
		key = f.key
		shards[i] = f.data
		got++
	}
	if got < l.k {
		return nil, false
	}
	data, err := s.cfg.Codec.Decode(int(key.k), int(key.m), shards, int(key.len))
	if err != nil || s.crc(data) != key.crc {
		return nil, false
	}
	return data, true
}

// deliver files the chunk's result at each of its positions; repeated positions get
// their own copy of the data (results are owned by the caller, one by one).
func (c *batchChunk) deliver(out []chunkstore.GetResult, data []byte, err error) {
	for n, i := range c.pos {
		if err != nil {
			out[i].Err = err
			continue
		}
		if n == 0 {
			out[i].Data = data
		} else {
			out[i].Data = append([]byte(nil), data...)
		}
	}
}
