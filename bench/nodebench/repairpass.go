package nodebench

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/repair"
	"github.com/cofferhq/coffer/chunkstore/segstore"
	"github.com/cofferhq/coffer/placement"
)

// RepairPassResult is one measured repair pass over a node holding Shards shards.
type RepairPassResult struct {
	Shards   int           // shards in the measured node's segstore
	Generate time.Duration // time to write them (PutShards batches, no fsync)
	Pass     time.Duration // one repair.Worker.Pass by the measured node
	Stripes  int           // stripes the pass examined (those of the PGs it leads)
	PGs      int           // PGs the pass examined
}

// repairGenBatch is the shards per PutShards call when generating a store.
const repairGenBatch = 20000

// RepairPass writes shards tiny shards straight into a segstore under dir (a node
// holding its position of shards stripes of a 6-node 4+2 cluster with 256 PGs) and
// times one non-deep repair pass by that node's worker. Every stripe is whole, so the
// pass does no repair work: what is timed is the cost of finding out that nothing needs
// doing, which is what a pass costs almost always.
//
// The other five nodes are stand-ins. With mirrors false they list nothing and answer
// HasShards with true (the pass lists one node, then asks the others for the led
// stripes in batches); with mirrors true each lists the measured node's index with the
// shard index rewritten to its own position, so the pass lists six nodes of shards
// shards each, as in a real cluster.
func RepairPass(ctx context.Context, dir string, shards int, mirrors bool) (RepairPassResult, error) {
	var nodes []placement.Node
	for i := range 6 {
		id := placement.NodeID(fmt.Sprintf("n%d", i))
		nodes = append(nodes, placement.Node{ID: id, Addr: string(id) + ":1", Domain: string(id), State: placement.StateActive})
	}
	m, err := placement.NewMap(1, 256, placement.DefaultProfile, nodes)
	if err != nil {
		return RepairPassResult{}, fmt.Errorf("nodebench: repair map: %w", err)
	}
	pos := make([]uint8, m.PGCount) // the measured node's position in each PG
	for pg := range m.PGCount {
		desired, err := m.Place(pg, m.Profile.N())
		if err != nil {
			return RepairPassResult{}, fmt.Errorf("nodebench: repair map: %w", err)
		}
		for i, d := range desired {
			if d.ID == nodes[0].ID {
				pos[pg] = uint8(i)
			}
		}
	}
	st, err := segstore.Open(dir, segstore.Options{NoSync: true, DisableAutoCompact: true, MemTableSize: 64 << 20})
	if err != nil {
		return RepairPassResult{}, fmt.Errorf("nodebench: %w", err)
	}
	defer st.Close()
	res := RepairPassResult{Shards: shards}
	data := []byte("0123456789abcdef")
	meta := chunkstore.ShardMeta{K: 4, M: 2, ChunkLen: 64, ChunkCRC: 1, Writer: "agent/bench"}
	start := time.Now()
	batch := make([]chunkstore.Shard, 0, repairGenBatch)
	have, err := st.Stats(ctx)
	if err != nil {
		return RepairPassResult{}, fmt.Errorf("nodebench: %w", err)
	}
	// A store left by an earlier run with as many shards is reused as it is.
	for i := 0; have.Shards != int64(shards) && i < shards; {
		batch = batch[:0]
		for ; i < shards && len(batch) < repairGenBatch; i++ {
			var id chunk.ID
			// Spread IDs over the key space (a multiplicative hash of i) as real
			// content hashes are.
			binary.BigEndian.PutUint64(id[:], uint64(i+1)*0x9E3779B97F4A7C15)
			binary.BigEndian.PutUint64(id[8:], uint64(i))
			batch = append(batch, chunkstore.Shard{Key: chunkstore.ShardKey{ID: id, Index: pos[m.PG(id)]}, Meta: meta, Data: data})
		}
		if err := st.PutShards(ctx, batch); err != nil {
			return RepairPassResult{}, fmt.Errorf("nodebench: generate shards: %w", err)
		}
	}
	res.Generate = time.Since(start)

	stores := map[placement.NodeID]chunkstore.ShardStore{nodes[0].ID: st}
	for _, n := range nodes[1:] {
		stores[n.ID] = wholeStore{}
		if mirrors {
			stores[n.ID] = &mirrorStore{wholeStore{}, st, m, n.ID}
		}
	}
	w, err := repair.New(repair.Config{
		Self: nodes[0].ID, Map: func() *placement.Map { return m }, Now: time.Now,
		Shards: func(n placement.Node) chunkstore.ShardStore { return stores[n.ID] },
	})
	if err != nil {
		return RepairPassResult{}, fmt.Errorf("nodebench: %w", err)
	}
	start = time.Now()
	pr, err := w.Pass(ctx, false)
	if err != nil {
		return RepairPassResult{}, fmt.Errorf("nodebench: repair pass: %w", err)
	}
	res.Pass = time.Since(start)
	res.Stripes, res.PGs = pr.Stripes, pr.PGs
	if pr.Rebuilt+pr.Copied+pr.Dropped+pr.Missing+pr.Corrupt != 0 {
		return res, fmt.Errorf("nodebench: repair pass did work on whole stripes: %+v", pr)
	}
	return res, nil
}

// wholeStore stands for a node that holds every shard it is asked about and lists
// nothing (its own listing is a copy of the measured node's cost). Only the methods a
// non-deep pass over whole stripes calls do anything.
type wholeStore struct{}

func (wholeStore) PutShards(context.Context, []chunkstore.Shard) error { return nil }
func (wholeStore) GetShard(context.Context, chunkstore.ShardKey) (chunkstore.Shard, error) {
	return chunkstore.Shard{}, fmt.Errorf("nodebench: stand-in node: %w", chunkstore.ErrNotFound)
}
func (wholeStore) HasShards(_ context.Context, keys []chunkstore.ShardKey) ([]bool, error) {
	out := make([]bool, len(keys))
	for i := range out {
		out[i] = true
	}
	return out, nil
}
func (wholeStore) DeleteShards(context.Context, []chunkstore.ShardKey) error { return nil }
func (wholeStore) EnumerateShards(context.Context, *chunkstore.ShardKey, func(chunkstore.ShardInfo) error) error {
	return nil
}
func (wholeStore) Stats(context.Context) (chunkstore.ShardStats, error) {
	return chunkstore.ShardStats{}, nil
}

// mirrorStore is a stand-in node that lists the measured node's shards as its own: each
// at the position the node holds in the shard's PG.
type mirrorStore struct {
	wholeStore
	src  chunkstore.ShardStore
	m    *placement.Map
	self placement.NodeID
}

func (s *mirrorStore) EnumerateShards(ctx context.Context, after *chunkstore.ShardKey, fn func(chunkstore.ShardInfo) error) error {
	if after != nil {
		return fmt.Errorf("nodebench: mirror lists from the start only: %w", chunkstore.ErrInvalid)
	}
	pos := map[uint32]uint8{}
	return s.src.EnumerateShards(ctx, nil, func(si chunkstore.ShardInfo) error {
		pg := s.m.PG(si.Key.ID)
		p, ok := pos[pg]
		if !ok {
			desired, err := s.m.Place(pg, s.m.Profile.N())
			if err != nil {
				return err
			}
			for i, d := range desired {
				if d.ID == s.self {
					p = uint8(i)
				}
			}
			pos[pg] = p
		}
		si.Key.Index = p
		return fn(si)
	})
}
