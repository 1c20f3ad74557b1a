package repair_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/coord"
	"github.com/cofferhq/coffer/chunkstore/memstore"
	"github.com/cofferhq/coffer/chunkstore/repair"
	"github.com/cofferhq/coffer/placement"
)

// rotStore is a memory shard store whose listed keys can be damaged: GetShard reports
// them corrupt, as a store whose CRC check fails would, until they are deleted.
type rotStore struct {
	*memstore.Shards
	mu   sync.Mutex
	bad  map[chunkstore.ShardKey]bool
	full atomic.Bool // PutShards fails with chunkstore.ErrNoSpace
}

func (r *rotStore) PutShards(ctx context.Context, shards []chunkstore.Shard) error {
	if r.full.Load() {
		return fmt.Errorf("rot: disk full: %w", chunkstore.ErrNoSpace)
	}
	return r.Shards.PutShards(ctx, shards)
}

func (r *rotStore) rot(k chunkstore.ShardKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bad[k] = true
}

func (r *rotStore) GetShard(ctx context.Context, k chunkstore.ShardKey) (chunkstore.Shard, error) {
	r.mu.Lock()
	bad := r.bad[k]
	r.mu.Unlock()
	if bad {
		return chunkstore.Shard{}, fmt.Errorf("rot: %w", chunkstore.ErrCorrupt)
	}
	return r.Shards.GetShard(ctx, k)
}

func (r *rotStore) DeleteShards(ctx context.Context, keys []chunkstore.ShardKey) error {
	r.mu.Lock()
	for _, k := range keys {
		delete(r.bad, k)
	}
	r.mu.Unlock()
	return r.Shards.DeleteShards(ctx, keys)
}

type cluster struct {
	mu     sync.Mutex
	m      *placement.Map
	stores map[placement.NodeID]*rotStore
	coord  *coord.Store
}

func (c *cluster) getMap() *placement.Map {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m
}

func (c *cluster) setMap(m *placement.Map) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m = m
}

func (c *cluster) shards(n placement.Node) chunkstore.ShardStore {
	if n.State == placement.StateDecommissioned {
		return nil
	}
	return c.stores[n.ID]
}

func newCluster(t *testing.T, nodes, domains int, pgs uint32) *cluster {
	t.Helper()
	var ns []placement.Node
	c := &cluster{stores: map[placement.NodeID]*rotStore{}}
	for i := range nodes {
		id := placement.NodeID(fmt.Sprintf("n%02d", i))
		ns = append(ns, placement.Node{ID: id, Addr: string(id) + ":1", Domain: fmt.Sprintf("d%d", i%domains), State: placement.StateActive})
		c.stores[id] = &rotStore{Shards: memstore.NewShards(), bad: map[chunkstore.ShardKey]bool{}}
	}
	m, err := placement.NewMap(1, pgs, placement.DefaultProfile, ns)
	if err != nil {
		t.Fatal(err)
	}
	c.m = m
	c.coord, err = coord.New(coord.Config{Principal: "test", Map: c.getMap, Shards: c.shards})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *cluster) workers(t *testing.T) []*repair.Worker {
	var ws []*repair.Worker
	for _, n := range c.getMap().Nodes {
		w, err := repair.New(repair.Config{Self: n.ID, Map: c.getMap, Shards: c.shards, Now: time.Now})
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	return ws
}

// passAll runs one pass on every worker and sums the results.
func passAll(t *testing.T, ws []*repair.Worker, deep bool) repair.PassResult {
	t.Helper()
	var sum repair.PassResult
	for _, w := range ws {
		r, err := w.Pass(context.Background(), deep)
		if err != nil {
			t.Fatal(err)
		}
		sum.PGs += r.PGs
		sum.Stripes += r.Stripes
		sum.Rebuilt += r.Rebuilt
		sum.Copied += r.Copied
		sum.Dropped += r.Dropped
		sum.Missing += r.Missing
		sum.Corrupt += r.Corrupt
		sum.Abandoned += r.Abandoned
		sum.Unreadable = append(sum.Unreadable, r.Unreadable...)
	}
	return sum
}

func putChunks(t *testing.T, c *cluster, n int) map[chunk.ID][]byte {
	t.Helper()
	out := map[chunk.ID][]byte{}
	var batch []chunkstore.Chunk
	for range n {
		var id chunk.ID
		rand.Read(id[:])
		data := make([]byte, 1000+len(out)*37)
		rand.Read(data)
		out[id] = data
		batch = append(batch, chunkstore.Chunk{ID: id, Data: data})
	}
	if err := c.coord.Put(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkPlaced asserts every chunk has all k+m shards on its desired owners and nothing
// elsewhere, and reads back.
func checkPlaced(t *testing.T, c *cluster, data map[chunk.ID][]byte) {
	t.Helper()
	m := c.getMap()
	ctx := context.Background()
	for id, want := range data {
		desired, err := m.Place(m.PG(id), m.Profile.N())
		if err != nil {
			t.Fatal(err)
		}
		for i, d := range desired {
			for nid, st := range c.stores {
				has, _ := st.HasShards(ctx, []chunkstore.ShardKey{{ID: id, Index: uint8(i)}})
				if nid == d.ID && !has[0] {
					t.Fatalf("chunk %s shard %d missing on owner %s", id.Str(), i, nid)
				}
				if nid != d.ID && has[0] {
					if nd, _ := m.Node(nid); nd.State != placement.StateDecommissioned {
						t.Fatalf("chunk %s shard %d left on %s (owner %s)", id.Str(), i, nid, d.ID)
					}
				}
			}
		}
		got, err := c.coord.Get(ctx, id)
		if err != nil || string(got) != string(want) {
			t.Fatalf("get %s: %v", id.Str(), err)
		}
	}
}

func TestRepairAfterNodesOut(t *testing.T) {
	c := newCluster(t, 8, 4, 16)
	data := putChunks(t, c, 200)
	ws := c.workers(t)
	if r := passAll(t, ws, false); r.Rebuilt+r.Copied+r.Dropped != 0 || r.PGs != 16 {
		t.Fatalf("healthy cluster: pass did work: %+v", r)
	}
	// Two nodes die and are marked out: their positions move; their data is gone.
	m := c.getMap().Clone()
	m.Epoch++
	for _, id := range []placement.NodeID{"n01", "n06"} {
		for i := range m.Nodes {
			if m.Nodes[i].ID == id {
				m.Nodes[i].State = placement.StateOut
			}
		}
		c.stores[id].Shards = memstore.NewShards() // wiped disk
	}
	c.setMap(m)
	r := passAll(t, ws, false)
	t.Logf("repair: %+v", r)
	if r.Rebuilt == 0 || len(r.Unreadable) != 0 {
		t.Fatalf("repair: %+v", r)
	}
	checkPlaced(t, c, data)
	for _, w := range ws {
		for _, h := range w.Health() {
			if h.State() != "healthy" || h.Epoch != m.Epoch {
				t.Fatalf("pg %d after repair: %+v", h.PG, h)
			}
		}
	}
	if r := passAll(t, ws, false); r.Rebuilt+r.Copied+r.Dropped != 0 {
		t.Fatalf("second pass did work: %+v", r)
	}
}

func TestDrainMovesAndDrops(t *testing.T) {
	c := newCluster(t, 8, 4, 16)
	data := putChunks(t, c, 150)
	ws := c.workers(t)
	m, _, err := c.getMap().SetState("n03", placement.StateDraining, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c.setMap(m)
	// Reads work during the movement: shards still sit on the draining node.
	for id := range data {
		if _, err := c.coord.Get(context.Background(), id); err != nil {
			t.Fatalf("read during drain: %v", err)
		}
		break
	}
	r := passAll(t, ws, false)
	if r.Copied == 0 || r.Dropped != r.Copied {
		t.Fatalf("drain: %+v (every shard copied off the draining node must be dropped there)", r)
	}
	checkPlaced(t, c, data)
	if st, _ := c.stores["n03"].Stats(context.Background()); st.Shards != 0 {
		t.Fatalf("draining node still holds %d shards", st.Shards)
	}
	var reps []placement.PGHealth
	for _, w := range ws {
		reps = append(reps, w.Health()...)
	}
	if err := placement.CheckDecommission(m, "n03", reps); err != nil {
		t.Fatalf("decommission after drain: %v", err)
	}
}

func TestDeepScrubRepairsCorruption(t *testing.T) {
	c := newCluster(t, 6, 6, 8)
	data := putChunks(t, c, 100)
	ws := c.workers(t)
	m := c.getMap()
	ids := make([]chunk.ID, 0, len(data))
	for id := range data {
		ids = append(ids, id)
	}
	// Exactly m=2 damaged shards in each of 50 stripes.
	for _, id := range ids[:50] {
		desired, _ := m.Place(m.PG(id), 6)
		for _, i := range []int{1, 4} {
			c.stores[desired[i].ID].rot(chunkstore.ShardKey{ID: id, Index: uint8(i)})
		}
	}
	// m+1 damaged shards in one more stripe.
	lost := ids[60]
	desired, _ := m.Place(m.PG(lost), 6)
	for _, i := range []int{0, 2, 5} {
		c.stores[desired[i].ID].rot(chunkstore.ShardKey{ID: lost, Index: uint8(i)})
	}
	r := passAll(t, ws, true)
	t.Logf("deep scrub: %+v", r)
	if r.Corrupt != 103 || r.Rebuilt != 100 {
		t.Fatalf("deep scrub found %d corrupt shards (want 103), rebuilt %d (want 100)", r.Corrupt, r.Rebuilt)
	}
	if len(r.Unreadable) != 1 || !strings.Contains(r.Unreadable[0], lost.String()) {
		t.Fatalf("unreadable stripes: %v (want %s named)", r.Unreadable, lost)
	}
	if _, err := c.coord.Get(context.Background(), lost); !errors.Is(err, chunkstore.ErrCorrupt) {
		t.Fatalf("read of the lost stripe: %v, want ErrCorrupt", err)
	}
	delete(data, lost)
	for _, id := range ids[:50] {
		if got, err := c.coord.Get(context.Background(), id); err != nil || string(got) != string(data[id]) {
			t.Fatalf("after scrub %s: %v", id.Str(), err)
		}
	}
	if r := passAll(t, ws, true); r.Corrupt != 3 || r.Rebuilt != 0 {
		t.Fatalf("second deep scrub: %+v (want only the lost stripe's 3 shards)", r)
	}
}

// TestReadsDuringMovement doubles the cluster: most positions move to nodes that hold
// nothing yet. Every chunk reads before, during (coord falls back to the previous
// owners) and after the backfill, and the backfill leaves every shard on its owner.
func TestReadsDuringMovement(t *testing.T) {
	c := newCluster(t, 12, 12, 16)
	// Start with the first 6 nodes only: the other 6 join later.
	m := c.getMap().Clone()
	for i := 6; i < 12; i++ {
		m.Nodes[i].State = placement.StateJoining
	}
	c.setMap(m)
	data := putChunks(t, c, 120)
	grown := m.Clone()
	grown.Epoch++
	for i := 6; i < 12; i++ {
		grown.Nodes[i].State = placement.StateActive
	}
	c.setMap(grown)
	short := 0
	for id, want := range data {
		desired, _ := grown.Place(grown.PG(id), 6)
		moved := 0
		for _, d := range desired {
			if d.ID >= "n06" {
				moved++
			}
		}
		if moved > 2 {
			short++
		}
		got, err := c.coord.Get(context.Background(), id)
		if err != nil || string(got) != string(want) {
			t.Fatalf("read during movement: %v", err)
		}
	}
	if short == 0 {
		t.Fatal("no chunk needed the fallback: the test proves nothing")
	}
	r := passAll(t, c.workers(t), false)
	t.Logf("%d chunks needed shards from previous owners; backfill %+v", short, r)
	checkPlaced(t, c, data)
}

// listHook is a shard store whose EnumerateShards runs after once the listing is done:
// a write that lands right after the repair pass listed this node.
type listHook struct {
	chunkstore.ShardStore
	once  *sync.Once
	after func()
}

func (l listHook) EnumerateShards(ctx context.Context, after *chunkstore.ShardKey, fn func(chunkstore.ShardInfo) error) error {
	err := l.ShardStore.EnumerateShards(ctx, after, fn)
	l.once.Do(l.after)
	return err
}

// TestPassLeavesWritesInFlight: a backup writes chunks while a pass lists the nodes, so
// the nodes listed first miss the new stripes' shards. The pass asks those owners again
// before repairing and rebuilds nothing; a shard that really is missing is still rebuilt.
func TestPassLeavesWritesInFlight(t *testing.T) {
	c := newCluster(t, 6, 6, 4)
	putChunks(t, c, 20)
	var once sync.Once
	var late map[chunk.ID][]byte
	shards := func(n placement.Node) chunkstore.ShardStore {
		st := c.shards(n)
		if n.ID != "n00" || st == nil {
			return st
		}
		return listHook{ShardStore: st, once: &once, after: func() { late = putChunks(t, c, 60) }}
	}
	var ws []*repair.Worker
	for _, n := range c.getMap().Nodes {
		w, err := repair.New(repair.Config{Self: n.ID, Map: c.getMap, Shards: shards, Now: time.Now})
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	// n00 is listed first by every worker, so every worker's pass that runs after the
	// first listing sees all 60 late chunks on every node but n00.
	r := passAll(t, ws, false)
	if len(late) != 60 {
		t.Fatalf("the late write did not run during the pass (%d chunks)", len(late))
	}
	if r.Rebuilt+r.Copied+r.Dropped != 0 || r.Missing != 0 || len(r.Unreadable) != 0 {
		t.Fatalf("pass during a write repaired shards that were only in flight: %+v", r)
	}
	checkPlaced(t, c, late)

	// A shard that is really gone is found and rebuilt on the next pass.
	var id chunk.ID
	for id = range late {
		break
	}
	owner := c.getMap().Nodes[0]
	desired, err := c.getMap().Place(c.getMap().PG(id), c.getMap().Profile.N())
	if err != nil {
		t.Fatal(err)
	}
	idx := -1
	for i, d := range desired {
		if d.ID == owner.ID {
			idx = i
		}
	}
	if idx < 0 {
		t.Fatalf("%s holds no shard of %s", owner.ID, id.Str())
	}
	if err := c.stores[owner.ID].DeleteShards(context.Background(), []chunkstore.ShardKey{{ID: id, Index: uint8(idx)}}); err != nil {
		t.Fatal(err)
	}
	if r := passAll(t, ws, false); r.Rebuilt != 1 || r.Missing != 1 {
		t.Fatalf("pass after losing one shard: %+v, want 1 missing and 1 rebuilt", r)
	}
	checkPlaced(t, c, late)
}
