package coord

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/placement"
)

// TestPutSubstitutesTwoOfSevenDown: with 7 nodes, 4+2 and two nodes down (dead without
// the map knowing, then also marked down by the map), every Put succeeds: positions of
// the dead owners go to the PG's spare, so 5 distinct live nodes take each stripe. Has
// finds the substitutes, every chunk reads back, and the store counts the substitute
// shards. Before substitutes, 5 in 7 PGs own both dead nodes and their Puts failed
// with "2 of 6 shards failed, need 5 ok".
func TestPutSubstitutesTwoOfSevenDown(t *testing.T) {
	for _, marked := range []bool{false, true} {
		name := "dead"
		if marked {
			name = "marked down"
		}
		t.Run(name, func(t *testing.T) {
			c := newCluster(t, 7, placement.DefaultProfile)
			c.nodes["n02"].down.Store(true)
			c.nodes["n05"].down.Store(true)
			if marked {
				c.setState(t, "n02", placement.StateDown)
				c.setState(t, "n05", placement.StateDown)
			}
			r := rand.New(rand.NewPCG(21, 21))
			var cs []chunkstore.Chunk
			for range 60 {
				cs = append(cs, randChunk(r, 1+r.IntN(50000)))
			}
			mustPut(t, c.st, cs[:30]...)
			for _, ch := range cs[30:] {
				mustPut(t, c.st, ch) // one chunk per batch as well
			}
			both := 0
			for _, ch := range cs {
				nodes, _ := c.st.Locate(ch.ID)
				n := 0
				for _, nd := range nodes {
					if nd.ID == "n02" || nd.ID == "n05" {
						n++
					}
				}
				if n == 2 {
					both++
				}
			}
			if both == 0 {
				t.Fatal("no chunk placed on both dead nodes: the test proves nothing")
			}
			for _, ch := range cs {
				mustGet(t, c.st, ch)
				if got := mustHas(t, c.st, ch.ID); !got[0] {
					t.Fatalf("Has(%s) = false after an acknowledged Put", ch.ID.Str())
				}
			}
			if d := c.st.Degraded(); d.SubstituteShards < int64(both) {
				t.Fatalf("degraded writes %+v, want at least %d substitute shards", d, both)
			}
			if marked {
				if n := c.nodes["n02"].puts.Load() + c.nodes["n05"].puts.Load(); n != 0 {
					t.Fatalf("nodes marked down got %d PutShards calls", n)
				}
			}
		})
	}
}

// TestPutFullNodeGoesToSubstitutes: a node whose disk is full (its PutShards fails
// with chunkstore.ErrNoSpace) is treated like a failed node: its positions go to
// substitutes, every Put succeeds, it stores nothing. With three nodes full the Put
// misses its quorum and the error names the nodes and says "disk full".
func TestPutFullNodeGoesToSubstitutes(t *testing.T) {
	c := newCluster(t, 7, placement.DefaultProfile)
	c.nodes["n03"].full.Store(true)
	r := rand.New(rand.NewPCG(14, 14))
	var cs []chunkstore.Chunk
	for range 20 {
		cs = append(cs, randChunk(r, 1+r.IntN(20000)))
	}
	mustPut(t, c.st, cs...)
	onFull := 0
	for _, ch := range cs {
		mustGet(t, c.st, ch)
		nodes, _ := c.st.Locate(ch.ID)
		for _, nd := range nodes {
			if nd.ID == "n03" {
				onFull++
			}
		}
	}
	if onFull == 0 {
		t.Fatal("no chunk placed on the full node: the test proves nothing")
	}
	if st, _ := c.nodes["n03"].inner.Stats(context.Background()); st.Shards != 0 {
		t.Fatalf("the full node stored %d shards", st.Shards)
	}
	if d := c.st.Degraded(); d.SubstituteShards < int64(onFull) {
		t.Fatalf("degraded writes %+v, want at least %d substitute shards", d, onFull)
	}

	c.nodes["n05"].full.Store(true)
	c.nodes["n06"].full.Store(true)
	err := c.st.Put(context.Background(), []chunkstore.Chunk{randChunk(r, 1000)})
	if !errors.Is(err, chunkstore.ErrUnavailable) || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Put with 3 of 7 nodes full = %v, want ErrUnavailable saying \"disk full\"", err)
	}
	if !strings.Contains(err.Error(), "node n0") {
		t.Fatalf("Put with 3 of 7 nodes full = %v, want the full nodes named", err)
	}
	// Space returns: writes go through again.
	for _, id := range []placement.NodeID{"n03", "n05", "n06"} {
		c.nodes[id].full.Store(false)
	}
	mustPut(t, c.st, randChunk(r, 1000))
}

// TestPutEnvelopeExceeded: with 3 of 7 nodes down, 4+2 cannot take a stripe on 5 live
// nodes; the error says so in the operator's terms and still names the chunk.
func TestPutEnvelopeExceeded(t *testing.T) {
	c := newCluster(t, 7, placement.DefaultProfile)
	for _, id := range []placement.NodeID{"n01", "n03", "n06"} {
		c.nodes[id].down.Store(true)
	}
	c.setState(t, "n06", placement.StateDown)
	ch := randChunk(rand.New(rand.NewPCG(22, 22)), 3000)
	err := c.st.Put(context.Background(), []chunkstore.Chunk{ch})
	if !errors.Is(err, chunkstore.ErrUnavailable) {
		t.Fatalf("Put with 3 of 7 down = %v, want ErrUnavailable", err)
	}
	for _, want := range []string{"3 of 7 chunk nodes down; 4+2 needs 5 live nodes", "down: n06", "failing: n01, n03", ch.ID.Str()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	// Within the envelope the message does not claim it was exceeded.
	c.nodes["n03"].down.Store(false)
	if err := c.st.Put(context.Background(), []chunkstore.Chunk{ch}); err != nil {
		t.Fatalf("Put with 2 of 7 down: %v", err)
	}
}

// TestPutShortPlacement: a 4+2 map with 5 eligible nodes (the sixth is out) cannot place
// the last position; writes still reach 5 distinct nodes, which is the quorum, and read
// back. Before PlaceBest every Put failed with "not enough nodes".
func TestPutShortPlacement(t *testing.T) {
	c := newCluster(t, 6, placement.DefaultProfile)
	c.setState(t, "n04", placement.StateOut)
	r := rand.New(rand.NewPCG(23, 23))
	var cs []chunkstore.Chunk
	for range 20 {
		cs = append(cs, randChunk(r, 1+r.IntN(30000)))
	}
	mustPut(t, c.st, cs...)
	for _, ch := range cs {
		mustGet(t, c.st, ch)
		if got := mustHas(t, c.st, ch.ID); !got[0] {
			t.Fatalf("Has(%s) = false", ch.ID.Str())
		}
		nodes, err := c.st.Locate(ch.ID)
		if err != nil || nodes[5].ID != "" {
			t.Fatalf("Locate = %v, %v: want the last position empty", nodes, err)
		}
	}
	if d := c.st.Degraded(); d.ShortStripes != int64(len(cs)) {
		t.Fatalf("degraded writes %+v, want %d short stripes", d, len(cs))
	}
	if n := c.nodes["n04"].puts.Load(); n != 0 {
		t.Fatalf("the out node got %d PutShards calls", n)
	}
	// One more node lost: 4 live nodes cannot take a stripe.
	c.nodes["n00"].down.Store(true)
	err := c.st.Put(context.Background(), []chunkstore.Chunk{randChunk(r, 100)})
	if !errors.Is(err, chunkstore.ErrUnavailable) || !strings.Contains(err.Error(), "1 of 5 chunk nodes down; 4+2 needs 5 live nodes") {
		t.Fatalf("Put with 4 live = %v", err)
	}
}

// TestPutReducedDomain: when the only live spare shares a failure domain with another
// shard of the stripe, the write still goes there and is counted as reduced-domain.
func TestPutReducedDomain(t *testing.T) {
	c := newCluster(t, 7, placement.DefaultProfile)
	m := c.m.Load().Clone()
	for i := range m.Nodes {
		m.Nodes[i].Domain = "host" + string(rune('a'+i%6)) // n06 shares n00's domain
	}
	m.Epoch++
	c.m.Store(m)
	r := rand.New(rand.NewPCG(24, 24))
	var cs []chunkstore.Chunk
	for range 30 {
		cs = append(cs, randChunk(r, 2000))
	}
	// Kill an owner that is not n00 or n06 in each stripe: take n03.
	c.nodes["n03"].down.Store(true)
	c.setState(t, "n03", placement.StateDown)
	mustPut(t, c.st, cs...)
	d := c.st.Degraded()
	if d.SubstituteShards == 0 || d.ReducedDomain == 0 {
		t.Fatalf("degraded writes %+v, want substitute and reduced-domain shards", d)
	}
	for _, ch := range cs {
		mustGet(t, c.st, ch)
	}
}

// TestPutCompletesAckedStripes: a node that fails its call during a put (paused, slow)
// leaves an acknowledged chunk on exactly its quorum unless the failed position goes to
// a substitute too. On exactly the quorum, the chunk reads as missing to Has (the meta
// leader's commit check) as long as any one holder is slow to answer: in the chaos suite
// a backup was refused at all three commit attempts while one chunk node was paused.
func TestPutCompletesAckedStripes(t *testing.T) {
	c := newCluster(t, 7, placement.DefaultProfile)
	for _, f := range c.nodes {
		f.seenAlive.Store(true)
	}
	r := rand.New(rand.NewPCG(14, 14))
	a := randChunk(r, 4000)
	failing := c.nodeOf(t, a.ID, 2)
	failing.down.Store(true) // fails its calls; the map still says active
	mustPut(t, c.st, a)
	// Another owner is now slow to answer; the failing one is still out.
	slow := c.nodeOf(t, a.ID, 4)
	slow.down.Store(true)
	if got := mustHas(t, c.st, a.ID); !got[0] {
		t.Fatal("Has = false with one holder silent after a put around a failing owner: the put left the stripe on exactly its quorum")
	}
	mustGet(t, c.st, a)
}
