package repair_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/memstore"
	"github.com/cofferhq/coffer/chunkstore/repair"
	"github.com/cofferhq/coffer/placement"
)

// withState returns a copy of c's map at the next epoch with the nodes set to st.
func withState(c *cluster, st placement.State, ids ...placement.NodeID) *placement.Map {
	m := c.getMap().Clone()
	m.Epoch++
	for i := range m.Nodes {
		for _, id := range ids {
			if m.Nodes[i].ID == id {
				m.Nodes[i].State = st
			}
		}
	}
	return m
}

// health gathers every worker's reports.
func health(ws []*repair.Worker) []placement.PGHealth {
	var out []placement.PGHealth
	for _, w := range ws {
		out = append(out, w.Health()...)
	}
	return out
}

// TestRepairShortMap: 6 nodes, 4+2, one node out with its disk lost. The map can place
// only 5 positions of each PG. Before PlaceBest every pass failed at the first PG ("need
// 6 nodes, 5 of 6 eligible") and no PG had a report (admin pgs: all "unknown"). Now
// the pass rebuilds what the 5 positions lack, every PG reports degraded with the
// reason, and a sixth node brings every PG back to healthy.
func TestRepairShortMap(t *testing.T) {
	c := newCluster(t, 7, 7, 16)
	// Start with 6 active nodes; n06 is spare capacity added later.
	c.setMap(withState(c, placement.StateJoining, "n06"))
	data := putChunks(t, c, 120)
	ws := c.workers(t)
	passAll(t, ws, false)
	// Down first: the map keeps its positions, no spare is left to take them.
	c.setMap(withState(c, placement.StateDown, "n02"))
	passAll(t, ws, false)
	for _, h := range health(ws) {
		if h.Describe() != "degraded (cannot place: 6 shards need 6 domains, 5 live (down: n02))" && h.State() != "healthy" {
			t.Fatalf("pg %d with n02 down: %s", h.PG, h.Describe())
		}
	}
	m := withState(c, placement.StateOut, "n02")
	c.stores["n02"].Shards = memstore.NewShards() // lost disk
	c.setMap(m)
	r := passAll(t, ws, false)
	if r.PGs != 16 || r.Rebuilt == 0 || len(r.Unreadable) != 0 {
		t.Fatalf("pass on a short map: %+v", r)
	}
	reps := health(ws)
	if len(reps) != 16 {
		t.Fatalf("%d PG reports, want 16", len(reps))
	}
	for _, h := range reps {
		if h.Epoch != m.Epoch || h.State() != "degraded" || h.MinHealthy != 5 ||
			h.Describe() != "degraded (cannot place: 6 shards need 6 domains, 5 eligible)" {
			t.Fatalf("pg %d: %s %+v", h.PG, h.Describe(), h)
		}
	}
	// Every chunk has its 5 placed shards on their owners and reads back.
	for id, want := range data {
		desired, short, err := m.PlaceBest(m.PG(id), 6)
		if err != nil || short == "" {
			t.Fatal(err, short)
		}
		for i, d := range desired[:5] {
			has, _ := c.stores[d.ID].HasShards(context.Background(), []chunkstore.ShardKey{{ID: id, Index: uint8(i)}})
			if !has[0] {
				t.Fatalf("chunk %s shard %d not on its owner %s", id.Str(), i, d.ID)
			}
		}
		got, err := c.coord.Get(context.Background(), id)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("get %s: %v", id.Str(), err)
		}
	}
	// New writes on the short map are accepted (5 distinct nodes) and repaired too.
	more := putChunks(t, c, 20)
	// A sixth node: the map places every position again and repair completes it.
	c.setMap(withState(c, placement.StateActive, "n06"))
	r = passAll(t, ws, false)
	if r.Rebuilt == 0 {
		t.Fatalf("pass after a node came: %+v", r)
	}
	for id, d := range more {
		data[id] = d
	}
	checkPlaced(t, c, data)
	for _, h := range health(ws) {
		if h.State() != "healthy" || h.Reason != "" {
			t.Fatalf("pg %d: %s", h.PG, h.Describe())
		}
	}
}

// TestRepairMovesSubstitutesHome: 8 nodes, 4+2; two nodes go down (the map keeps their
// positions). Writes made meanwhile put their shards on substitutes. While the owners
// are down repair leaves the substitute copies in place (PG degraded: "owner down"),
// and moves them home once the owners return; in a second round, where the owners are
// out for good, it re-protects them on the new owners.
func TestRepairMovesSubstitutesHome(t *testing.T) {
	for _, back := range []bool{true, false} {
		name := "owners return"
		if !back {
			name = "owners out"
		}
		t.Run(name, func(t *testing.T) {
			c := newCluster(t, 8, 8, 16)
			old := putChunks(t, c, 40)
			ws := c.workers(t)
			c.setMap(withState(c, placement.StateDown, "n01", "n04"))
			data := putChunks(t, c, 120) // with the owners down: substitutes
			if d := c.coord.Degraded(); d.SubstituteShards == 0 {
				t.Fatalf("no substitute shards written: %+v", d)
			}
			r := passAll(t, ws, false)
			if r.Dropped != 0 || r.Rebuilt != 0 || r.Copied != 0 {
				t.Fatalf("pass with owners down moved shards: %+v", r)
			}
			reasons := map[string]bool{}
			misplaced := 0
			for _, h := range health(ws) {
				if h.Reason != "" {
					reasons[h.Describe()] = true
				}
				misplaced += h.Misplaced
			}
			if !reasons["degraded (owner down: n01, n04 (its shards return when it does, or are rebuilt once it is out))"] || misplaced == 0 {
				t.Fatalf("reasons %v, %d shards misplaced (on substitutes)", reasons, misplaced)
			}
			for id, d := range old {
				data[id] = d
			}
			if back {
				c.setMap(withState(c, placement.StateActive, "n01", "n04"))
			} else {
				c.stores["n01"].Shards = memstore.NewShards()
				c.stores["n04"].Shards = memstore.NewShards()
				c.setMap(withState(c, placement.StateOut, "n01", "n04"))
			}
			r = passAll(t, ws, false)
			if r.Copied == 0 || r.Dropped == 0 {
				t.Fatalf("pass after the owners %s: %+v", name, r)
			}
			checkPlaced(t, c, data)
			for _, h := range health(ws) {
				if h.State() != "healthy" {
					t.Fatalf("pg %d: %s", h.PG, h.Describe())
				}
			}
		})
	}
}

// failingPuts is a shard store whose PutShards always fails (a peer that is down while
// the map still calls it active).
type failingPuts struct{ chunkstore.ShardStore }

func (failingPuts) PutShards(context.Context, []chunkstore.Shard) error {
	return fmt.Errorf("dial: peer unreachable: %w", chunkstore.ErrUnavailable)
}

// lines is a slog handler target that keeps every record's message and attributes.
type lines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// TestRepairLogsOncePerPeer: a peer that fails every shard put (its disk wiped, the map
// still calls it active) gets one warning line per pass with the count, not one per
// shard (14,000 lines in four minutes of a fault run before).
func TestRepairLogsOncePerPeer(t *testing.T) {
	c := newCluster(t, 6, 6, 8)
	putChunks(t, c, 80)
	c.stores["n03"].Shards = memstore.NewShards() // every shard it owns is missing
	var out lines
	log := slog.New(slog.NewTextHandler(&out, nil))
	shards := func(n placement.Node) chunkstore.ShardStore {
		if n.ID == "n03" {
			return failingPuts{c.stores["n03"]}
		}
		return c.shards(n)
	}
	var failed int
	for _, n := range c.getMap().Nodes {
		w, err := repair.New(repair.Config{Self: n.ID, Map: c.getMap, Shards: shards, Now: time.Now, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Pass(context.Background(), false); err != nil && !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	}
	text := out.String()
	if n := strings.Count(text, "shard="); n != 0 {
		t.Fatalf("%d per-shard lines:\n%s", n, text)
	}
	got := strings.Count(text, "repair: peer failed calls this pass")
	leaders := 0
	for _, l := range strings.Split(strings.TrimSpace(text), "\n") {
		if !strings.Contains(l, "peer failed calls") {
			continue
		}
		leaders++
		if !strings.Contains(l, "peer=n03") || !strings.Contains(l, `by_op="put=`) || !strings.Contains(l, "peer unreachable") {
			t.Fatalf("line %q", l)
		}
		var n int
		if i := strings.Index(l, " failed="); i >= 0 {
			fmt.Sscanf(l[i+len(" failed="):], "%d", &n)
		}
		failed += n
	}
	if got == 0 || got != leaders || got > 6 {
		t.Fatalf("%d peer lines (at most one per worker):\n%s", got, text)
	}
	if failed < 80 {
		t.Fatalf("the lines count %d failed puts, want ≥ 80 (one per chunk, n03 owns a position of each)", failed)
	}
}
