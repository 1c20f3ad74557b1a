package repair_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/repair"
	"github.com/cofferhq/coffer/chunkstore/storetest"
	"github.com/cofferhq/coffer/placement"
)

// listCounter counts the listings a worker asks of a store, by PG (whole listings under
// -1).
type listCounter struct {
	mu sync.Mutex
	n  map[int64]int
}

func (l *listCounter) add(pg int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n[pg]++
}

// take returns the counts so far and resets them.
func (l *listCounter) take() map[int64]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.n
	l.n = map[int64]int{}
	return out
}

// countedStore is a PG-listing store that counts its listings.
type countedStore struct {
	chunkstore.PGLister
	c *listCounter
}

func (s countedStore) EnumeratePG(ctx context.Context, pgCount, pg uint32, after *chunkstore.ShardKey, fn func(chunkstore.ShardInfo) error) error {
	s.c.add(int64(pg))
	return s.PGLister.EnumeratePG(ctx, pgCount, pg, after, fn)
}

func (s countedStore) EnumerateShards(ctx context.Context, after *chunkstore.ShardKey, fn func(chunkstore.ShardInfo) error) error {
	s.c.add(-1)
	return s.PGLister.EnumerateShards(ctx, after, fn)
}

// plainStore hides the PGLister methods: a store that only lists whole.
type plainStore struct {
	chunkstore.ShardStore
	c *listCounter
}

func (s plainStore) EnumerateShards(ctx context.Context, after *chunkstore.ShardKey, fn func(chunkstore.ShardInfo) error) error {
	s.c.add(-1)
	return s.ShardStore.EnumerateShards(ctx, after, fn)
}

// ledPGs returns the PGs w's node leads under m.
func ledPGs(t *testing.T, m *placement.Map, self placement.NodeID) map[uint32]bool {
	t.Helper()
	out := map[uint32]bool{}
	for pg := range m.PGCount {
		desired, _, err := m.PlaceBest(pg, m.Profile.N())
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range desired {
			if d.State == placement.StateActive {
				if d.ID == self {
					out[pg] = true
				}
				break
			}
		}
	}
	return out
}

// A pass lists only the PGs that changed since a listing found them whole: a second
// pass over an unchanged cluster lists nothing, a deleted shard gets its PG (alone)
// listed and repaired, a deep pass lists everything, and unchanged PGs are listed again
// a few per pass once VerifyInterval has passed.
func TestPassListsChangedPGsOnly(t *testing.T) {
	c := newCluster(t, 6, 6, 64)
	data := putChunks(t, c, 200)
	clk := storetest.NewClock(time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC))
	cnt := &listCounter{n: map[int64]int{}}
	shards := func(n placement.Node) chunkstore.ShardStore {
		return countedStore{c.stores[n.ID], cnt}
	}
	self := placement.NodeID("n00")
	w, err := repair.New(repair.Config{Self: self, Map: c.getMap, Shards: shards, Now: clk.Now,
		Interval: time.Minute, VerifyInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	led := ledPGs(t, c.getMap(), self)
	if len(led) < 2 {
		t.Fatalf("n00 leads %d PGs; the test needs 2", len(led))
	}
	ctx := context.Background()
	pass := func(deep bool) repair.PassResult {
		t.Helper()
		clk.Advance(time.Minute)
		r, err := w.Pass(ctx, deep)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	r := pass(false)
	if r.PGs != len(led) || r.Unchanged != 0 {
		t.Fatalf("first pass: %+v, want %d PGs listed", r, len(led))
	}
	if got := cnt.take(); len(got) != len(led) || got[-1] != 0 {
		t.Fatalf("first pass listings by PG = %v, want one per led PG on each node", got)
	}
	r = pass(false)
	if r.PGs != 0 || r.Unchanged != len(led) {
		t.Fatalf("second pass: %+v, want every led PG unchanged", r)
	}
	if got := cnt.take(); len(got) != 0 {
		t.Fatalf("second pass listed %v, want nothing", got)
	}
	if h := w.Health(); len(h) != len(led) || h[0].Epoch != c.getMap().Epoch || h[0].Degraded != 0 {
		t.Fatalf("health after an unchanged pass = %+v", h)
	}

	// Lose one shard of a chunk in a led PG: that PG alone is listed and repaired.
	var lost chunkstore.ShardKey
	m := c.getMap()
	for id := range data {
		if pg := m.PG(id); led[pg] {
			lost = chunkstore.ShardKey{ID: id, Index: 2}
			break
		}
	}
	lostPG := m.PG(lost.ID)
	desired, err := m.Place(lostPG, m.Profile.N())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.stores[desired[2].ID].DeleteShards(ctx, []chunkstore.ShardKey{lost}); err != nil {
		t.Fatal(err)
	}
	r = pass(false)
	if r.PGs != 1 || r.Unchanged != len(led)-1 || r.Rebuilt != 1 {
		t.Fatalf("pass after losing a shard of PG %d: %+v, want it alone listed and rebuilt", lostPG, r)
	}
	if got := cnt.take(); len(got) != 1 || got[int64(lostPG)] == 0 {
		t.Fatalf("listings after losing a shard of PG %d = %v", lostPG, got)
	}
	checkPlaced(t, c, data)
	pass(false) // the rebuild moved the PG's mark: listed once more, found whole
	cnt.take()
	if r = pass(false); r.PGs != 0 {
		t.Fatalf("pass after the repair settled: %+v, want nothing listed", r)
	}

	// A deep pass lists and reads everything.
	if r = pass(true); r.PGs != len(led) || r.Unchanged != 0 {
		t.Fatalf("deep pass: %+v, want every led PG listed", r)
	}
	cnt.take()

	// Past VerifyInterval, unchanged PGs are listed again, ceil(led x Interval /
	// VerifyInterval) per pass.
	clk.Advance(time.Hour)
	budget := (len(led) + 59) / 60
	if r = pass(false); r.PGs != budget || r.Unchanged != len(led)-budget {
		t.Fatalf("pass past VerifyInterval: %+v, want %d PG listed again", r, budget)
	}
}

// A store that cannot list by PG is listed whole on every pass, as before PG listings.
func TestPassWholeListingFallback(t *testing.T) {
	c := newCluster(t, 6, 6, 16)
	putChunks(t, c, 60)
	cnt := &listCounter{n: map[int64]int{}}
	shards := func(n placement.Node) chunkstore.ShardStore {
		if n.ID == "n03" {
			return plainStore{c.stores[n.ID], cnt}
		}
		return c.stores[n.ID]
	}
	w, err := repair.New(repair.Config{Self: "n00", Map: c.getMap, Shards: shards, Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	led := ledPGs(t, c.getMap(), "n00")
	for i := range 2 {
		r, err := w.Pass(context.Background(), false)
		if err != nil {
			t.Fatal(err)
		}
		if r.PGs != len(led) || r.Unchanged != 0 || r.Rebuilt+r.Copied+r.Dropped != 0 {
			t.Fatalf("pass %d: %+v, want every led PG listed and nothing done", i, r)
		}
		if got := cnt.take(); got[-1] != 1 {
			t.Fatalf("pass %d: whole listings of n03 = %v, want 1", i, got)
		}
	}
}
