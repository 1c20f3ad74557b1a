package repair_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/memstore"
	"github.com/cofferhq/coffer/chunkstore/repair"
	"github.com/cofferhq/coffer/placement"
)

// testClock is a settable clock for the workers.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// leaveShards deletes every shard of id except the first keep positions, as a put that
// failed after keep shards landed leaves it.
func leaveShards(t *testing.T, c *cluster, id chunk.ID, keep int) {
	t.Helper()
	var keys []chunkstore.ShardKey
	for i := keep; i < c.getMap().Profile.N(); i++ {
		keys = append(keys, chunkstore.ShardKey{ID: id, Index: uint8(i)})
	}
	for _, st := range c.stores {
		if err := st.DeleteShards(context.Background(), keys); err != nil {
			t.Fatal(err)
		}
	}
}

// shardsOf counts the shards of id stored on any node.
func shardsOf(t *testing.T, c *cluster, id chunk.ID) int {
	t.Helper()
	n := 0
	for _, st := range c.stores {
		for i := range c.getMap().Profile.N() {
			has, err := st.HasShards(context.Background(), []chunkstore.ShardKey{{ID: id, Index: uint8(i)}})
			if err != nil {
				t.Fatal(err)
			}
			if has[0] {
				n++
			}
		}
	}
	return n
}

// TestRepairDropsPartialStripes: a put that failed part-way leaves 3 of 6 shards (fewer
// than k = 4): nothing can read the chunk, and before this its PG stayed unreadable for
// good (the chaos suite's health check failed on it). Repair reports it unreadable
// while it may still be a write in flight, then, on the first pass that lists every node
// a minute or more after it first saw it short, deletes what is left and the PG is healthy. A stripe whose missing
// shards may sit on a node that is down, or that has k shards, is never deleted.
func TestRepairDropsPartialStripes(t *testing.T) {
	c := newCluster(t, 7, 7, 8)
	data := putChunks(t, c, 40)
	var ids []chunk.ID
	for id := range data {
		ids = append(ids, id)
	}
	partial, readable := ids[0], ids[1]
	leaveShards(t, c, partial, 3)
	leaveShards(t, c, readable, 4)

	clk := &testClock{t: time.Unix(1_000_000, 0)}
	var ws []*repair.Worker
	for _, n := range c.getMap().Nodes {
		w, err := repair.New(repair.Config{Self: n.ID, Map: c.getMap, Shards: c.shards, Now: clk.now})
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	unreadable := func() int {
		n := 0
		for _, h := range health(ws) {
			n += h.Unreadable
		}
		return n
	}

	// First sighting: maybe a write in flight; kept.
	r := passAll(t, ws, false)
	if got := shardsOf(t, c, partial); got != 3 || unreadable() != 0 {
		t.Fatalf("first pass: %d shards of the partial stripe left, %d unreadable reported, want 3 and 0 (%+v)", got, unreadable(), r)
	}
	// 30 s later: reported unreadable, still kept.
	clk.add(30 * time.Second)
	passAll(t, ws, false)
	if got := shardsOf(t, c, partial); got != 3 || unreadable() != 1 {
		t.Fatalf("after 30 s: %d shards left, %d unreadable reported, want 3 and 1", got, unreadable())
	}
	// A node that holds one of its shards is down: the rest may be there; kept.
	var holder placement.NodeID
	for id, st := range c.stores {
		has, _ := st.HasShards(context.Background(), []chunkstore.ShardKey{{ID: partial, Index: 0}})
		if has[0] {
			holder = id
		}
	}
	healthyMap := c.getMap()
	c.setMap(withState(c, placement.StateDown, holder))
	clk.add(2 * time.Minute)
	passAll(t, ws, false)
	if got := shardsOf(t, c, partial); got != 3 {
		t.Fatalf("with %s down: %d shards of the partial stripe left, want 3 (nothing deleted while a holder is down)", holder, got)
	}
	// Every node up again. The PG's leader (which the down node was) kept its first
	// sighting while it was down, so the first pass that lists every node and finds the
	// stripe still short drops it (before, its clock restarted there).
	m := healthyMap.Clone()
	m.Epoch = c.getMap().Epoch + 1
	c.setMap(m)
	dropped := passAll(t, ws, false).Abandoned
	if got := shardsOf(t, c, partial); got != 0 || dropped != 1 {
		t.Fatalf("first full pass, 2.5 min after the first sighting: %d shards left, %d stripes abandoned, want 0 and 1", got, dropped)
	}
	if n := unreadable(); n != 0 {
		t.Fatalf("%d stripes still reported unreadable", n)
	}
	// The readable stripe was rebuilt, not dropped; every other chunk reads.
	if got := shardsOf(t, c, readable); got != 6 {
		t.Fatalf("the stripe with k shards: %d shards, want 6 (rebuilt)", got)
	}
	for id, want := range data {
		if id == partial {
			continue
		}
		got, err := c.coord.Get(context.Background(), id)
		if err != nil || string(got) != string(want) {
			t.Fatalf("get %s: %v", id.Str(), err)
		}
	}
	// A later put of the chunk writes a whole stripe again.
	if err := c.coord.Put(context.Background(), []chunkstore.Chunk{{ID: partial, Data: data[partial]}}); err != nil {
		t.Fatal(err)
	}
	if got, err := c.coord.Get(context.Background(), partial); err != nil || string(got) != string(data[partial]) {
		t.Fatalf("get %s after a new put: %v", partial.Str(), err)
	}
}

// TestRepairDropsPartialStripeSeenWhileNodeDown: a stripe first seen short while a node
// is down is dropped on the first pass with every node listed once abandonAge (a
// minute) has passed since that sighting: the chaos suite's partitions left such
// stripes unreadable for minutes after the last fault.
func TestRepairDropsPartialStripeSeenWhileNodeDown(t *testing.T) {
	c := newCluster(t, 7, 7, 8)
	data := putChunks(t, c, 20)
	var partial chunk.ID
	for id := range data {
		partial = id
		break
	}
	leaveShards(t, c, partial, 3)
	m0 := c.getMap()
	desired, _, err := m0.PlaceBest(m0.PG(partial), m0.Profile.N())
	if err != nil {
		t.Fatal(err)
	}
	var down placement.NodeID // a node that does not lead the stripe's PG
	for _, n := range m0.Nodes {
		if n.ID != desired[0].ID {
			down = n.ID
			break
		}
	}
	clk := &testClock{t: time.Unix(1_000_000, 0)}
	var ws []*repair.Worker
	for _, n := range m0.Nodes {
		w, err := repair.New(repair.Config{Self: n.ID, Map: c.getMap, Shards: c.shards, Now: clk.now})
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	c.setMap(withState(c, placement.StateDown, down))
	passAll(t, ws, false)
	if got := shardsOf(t, c, partial); got != 3 {
		t.Fatalf("first sighting with %s down: %d shards left, want 3", down, got)
	}
	clk.add(61 * time.Second)
	m := m0.Clone()
	m.Epoch = c.getMap().Epoch + 1
	c.setMap(m)
	dropped := passAll(t, ws, false).Abandoned
	if got := shardsOf(t, c, partial); got != 0 || dropped != 1 {
		t.Fatalf("first full pass 61 s after the sighting: %d shards left, %d abandoned, want 0 and 1", got, dropped)
	}
}

// TestRepairSaysOwnerFull: an owner whose disk is full refuses the shards repair puts
// back: its PGs report degraded with the reason (before this they were degraded with no
// reason, and `admin pgs` did not say why), and healthy once it has space.
func TestRepairSaysOwnerFull(t *testing.T) {
	c := newCluster(t, 7, 7, 8)
	putChunks(t, c, 40)
	full := c.stores["n03"]
	full.Shards = memstore.NewShards() // its shards lost, and no room for them again
	full.full.Store(true)
	ws := c.workers(t)
	passAll(t, ws, false)
	said := 0
	for _, h := range health(ws) {
		if h.State() == "healthy" {
			continue
		}
		if !strings.Contains(h.Reason, "owner disk full: n03") {
			t.Fatalf("pg %d: %s, reason %q: want it to name the full owner", h.PG, h.State(), h.Reason)
		}
		said++
	}
	if said == 0 {
		t.Fatal("no PG degraded with the owner's disk full")
	}
	full.full.Store(false)
	passAll(t, ws, false)
	for _, h := range health(ws) {
		if h.State() != "healthy" {
			t.Fatalf("pg %d: %s (%s) once the owner has space, want healthy", h.PG, h.State(), h.Reason)
		}
	}
}
