package nodebench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/repair"
	"github.com/cofferhq/coffer/chunkstore/segstore"
	"github.com/cofferhq/coffer/placement"
)

// RepairPassResult is the measured repair passes over a node holding Shards shards.
type RepairPassResult struct {
	Shards   int           // shards in the measured node's segstore
	Generate time.Duration // time to write them (PutShards batches, no fsync); 0 if reused
	Upgrade  time.Duration // Open of the store after turning its index into version 2 (RepairPassOptions.Upgrade)
	// Whole is one pass with every store listed whole (EnumerateShards, the stores' PG
	// listing hidden): the cost of a pass before PG listings, and of a pass by a
	// worker whose peers cannot list by PG.
	Whole time.Duration
	// First is the first pass of a new worker with PG listings: every led PG listed
	// once (as after a restart or a map change).
	First time.Duration
	// Unchanged is the next pass, nothing having changed: no PG listed.
	Unchanged time.Duration
	// OneChanged is a pass after one shard was written into one led PG: that PG listed.
	OneChanged        time.Duration
	OneChangedListed  int // PGs that pass listed
	Stripes           int // stripes the first pass examined (those of the PGs it leads)
	PGs               int // PGs the first pass examined
	UnchangedSkipped  int // PGs the unchanged pass did not list
	OneChangedStripes int // stripes the one-changed pass examined
	// CPU time (user + system, the whole process: the pass and the runtime) of each
	// pass: on a shared machine the wall times wait for the CPU, these do not.
	WholeCPU, FirstCPU, UnchangedCPU, OneChangedCPU time.Duration
}

// cpuTime returns the process's user + system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// RepairPassOptions are the variants of RepairPass.
type RepairPassOptions struct {
	// Mirrors makes the five other nodes list as many shards (see RepairPass).
	Mirrors bool
	// Upgrade turns the store's index into version 2 (no PG listing keys) before
	// opening it, and times the Open that upgrades it in place.
	Upgrade bool
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
//
// It times four passes: one with PG listings hidden (every store listed whole, the cost
// before PG listings), then, with a new worker, the first pass (every led PG listed),
// a pass with nothing changed, and a pass after one shard was written into one led PG.
func RepairPass(ctx context.Context, dir string, shards int, opt RepairPassOptions) (RepairPassResult, error) {
	mirrors := opt.Mirrors
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
	res := RepairPassResult{Shards: shards}
	if opt.Upgrade {
		if err := toIndexVersion2(ctx, dir); err != nil {
			return RepairPassResult{}, err
		}
	}
	openStart := time.Now()
	st, err := segstore.Open(dir, segstore.Options{NoSync: true, DisableAutoCompact: true, MemTableSize: 64 << 20})
	if err != nil {
		return RepairPassResult{}, fmt.Errorf("nodebench: %w", err)
	}
	defer st.Close()
	if opt.Upgrade {
		res.Upgrade = time.Since(openStart)
	}
	data := []byte("0123456789abcdef")
	meta := chunkstore.ShardMeta{K: 4, M: 2, ChunkLen: 64, ChunkCRC: 1, Writer: "agent/bench"}
	start := time.Now()
	batch := make([]chunkstore.Shard, 0, repairGenBatch)
	have, err := st.Stats(ctx)
	if err != nil {
		return RepairPassResult{}, fmt.Errorf("nodebench: %w", err)
	}
	// A store left by an earlier run with as many shards is reused as it is.
	for i := 0; have.Shards < int64(shards) && i < shards; {
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
	if have.Shards < int64(shards) {
		res.Generate = time.Since(start)
	}

	stores := map[placement.NodeID]chunkstore.ShardStore{nodes[0].ID: st}
	for _, n := range nodes[1:] {
		stores[n.ID] = wholeStore{}
		if mirrors {
			stores[n.ID] = &mirrorStore{wholeStore{}, st, m, n.ID}
		}
	}
	newWorker := func(hide bool) (*repair.Worker, error) {
		return repair.New(repair.Config{
			Self: nodes[0].ID, Map: func() *placement.Map { return m }, Now: time.Now,
			Shards: func(n placement.Node) chunkstore.ShardStore {
				if hide {
					return plainStore{stores[n.ID]}
				}
				return stores[n.ID]
			},
		})
	}
	var cpu time.Duration // CPU time of the last pass
	pass := func(w *repair.Worker) (repair.PassResult, time.Duration, error) {
		start, cpu0 := time.Now(), cpuTime()
		pr, err := w.Pass(ctx, false)
		cpu = cpuTime() - cpu0
		if err != nil {
			return pr, 0, fmt.Errorf("nodebench: repair pass: %w", err)
		}
		if pr.Rebuilt+pr.Copied+pr.Dropped+pr.Missing+pr.Corrupt != 0 {
			return pr, 0, fmt.Errorf("nodebench: repair pass did work on whole stripes: %+v", pr)
		}
		return pr, time.Since(start), nil
	}
	w, err := newWorker(true)
	if err != nil {
		return RepairPassResult{}, fmt.Errorf("nodebench: %w", err)
	}
	if _, res.Whole, err = pass(w); err != nil {
		return res, err
	}
	res.WholeCPU = cpu
	if w, err = newWorker(false); err != nil {
		return RepairPassResult{}, fmt.Errorf("nodebench: %w", err)
	}
	pr, d, err := pass(w)
	if err != nil {
		return res, err
	}
	res.First, res.Stripes, res.PGs, res.FirstCPU = d, pr.Stripes, pr.PGs, cpu
	if pr, res.Unchanged, err = pass(w); err != nil {
		return res, err
	}
	res.UnchangedSkipped, res.UnchangedCPU = pr.Unchanged, cpu
	// One new shard in a PG the node leads (the one of chunk 0's PG).
	var id chunk.ID
	binary.BigEndian.PutUint64(id[:], 0x9E3779B97F4A7C15)
	id[31] = 1 // not a generated ID
	for {
		if desired, err := m.Place(m.PG(id), m.Profile.N()); err == nil && desired[0].ID == nodes[0].ID {
			break
		}
		id[30]++
		binary.BigEndian.PutUint64(id[:], binary.BigEndian.Uint64(id[:])+1)
	}
	// Put it, or delete it if an earlier run of the same store put it.
	key := chunkstore.ShardKey{ID: id, Index: pos[m.PG(id)]}
	has, err := st.HasShards(ctx, []chunkstore.ShardKey{key})
	if err == nil && has[0] {
		err = st.DeleteShards(ctx, []chunkstore.ShardKey{key})
	} else if err == nil {
		err = st.PutShards(ctx, []chunkstore.Shard{{Key: key, Meta: meta, Data: data}})
	}
	if err != nil {
		return res, fmt.Errorf("nodebench: change one shard: %w", err)
	}
	if pr, res.OneChanged, err = pass(w); err != nil {
		return res, err
	}
	res.OneChangedListed, res.OneChangedStripes, res.OneChangedCPU = pr.PGs, pr.Stripes, cpu
	return res, nil
}

// toIndexVersion2 turns the segstore index in dir, if there is one, into the layout before
// PG listing keys (index version 2): no 'p' keys, m/version 2 (segstore FORMAT.md).
func toIndexVersion2(ctx context.Context, dir string) error {
	db, err := pebble.Open(filepath.Join(dir, "index"), &pebble.Options{FormatMajorVersion: pebble.FormatNewest, Logger: quietPebble{}})
	if err != nil {
		return fmt.Errorf("nodebench: open index: %w", err)
	}
	b := db.NewBatch()
	err = errors.Join(
		b.DeleteRange([]byte{'p'}, []byte{'q'}, nil),
		b.Set([]byte("m/version"), binary.BigEndian.AppendUint32(nil, 2), nil),
		b.Commit(pebble.Sync),
		b.Close(),
		db.Compact(ctx, []byte{'p'}, []byte{'q'}, true),
		db.Close(),
	)
	if err != nil {
		return fmt.Errorf("nodebench: index to version 2: %w", err)
	}
	return nil
}

// quietPebble drops Pebble's informational logs.
type quietPebble struct{}

func (quietPebble) Infof(string, ...any)           {}
func (quietPebble) Errorf(format string, a ...any) { fmt.Printf("pebble: "+format+"\n", a...) }
func (quietPebble) Fatalf(format string, a ...any) { panic(fmt.Sprintf("pebble: "+format, a...)) }

// plainStore hides a store's PG listing (chunkstore.PGLister): the worker lists it whole.
type plainStore struct{ chunkstore.ShardStore }

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
func (wholeStore) EnumeratePG(context.Context, uint32, uint32, *chunkstore.ShardKey, func(chunkstore.ShardInfo) error) error {
	return nil
}
func (wholeStore) PGVersions(_ context.Context, pgCount uint32) (chunkstore.PGVersions, error) {
	return chunkstore.PGVersions{Incarnation: 1, Seqs: make([]uint64, min(pgCount, chunkstore.PGBuckets))}, nil
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
	return s.src.EnumerateShards(ctx, nil, s.rewrite(fn))
}

func (s *mirrorStore) EnumeratePG(ctx context.Context, pgCount, pg uint32, after *chunkstore.ShardKey, fn func(chunkstore.ShardInfo) error) error {
	if after != nil {
		return fmt.Errorf("nodebench: mirror lists from the start only: %w", chunkstore.ErrInvalid)
	}
	return s.src.(chunkstore.PGLister).EnumeratePG(ctx, pgCount, pg, nil, s.rewrite(fn))
}

func (s *mirrorStore) PGVersions(ctx context.Context, pgCount uint32) (chunkstore.PGVersions, error) {
	return s.src.(chunkstore.PGLister).PGVersions(ctx, pgCount)
}

// rewrite gives each listed shard the index this node holds in the shard's PG.
func (s *mirrorStore) rewrite(fn func(chunkstore.ShardInfo) error) func(chunkstore.ShardInfo) error {
	pos := map[uint32]uint8{}
	return func(si chunkstore.ShardInfo) error {
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
	}
}
