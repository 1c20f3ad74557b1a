package placement

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/chunkstore/chunk"
)

func mkNodes(n, domains int) []Node {
	ns := make([]Node, n)
	for i := range ns {
		ns[i] = Node{
			ID:     NodeID(fmt.Sprintf("node-%02d", i)),
			Addr:   fmt.Sprintf("10.0.0.%d:7000", i+1),
			Domain: fmt.Sprintf("rack-%d", i%domains),
			State:  StateActive,
		}
	}
	return ns
}

func mustMap(t testing.TB, pgs uint32, p Profile, nodes []Node) *Map {
	t.Helper()
	m, err := NewMap(1, pgs, p, nodes)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestValidate(t *testing.T) {
	good := mkNodes(3, 3)
	tests := []struct {
		name   string
		mutate func(m *Map)
		ok     bool
	}{
		{"valid", func(m *Map) {}, true},
		{"pg count zero", func(m *Map) { m.PGCount = 0 }, false},
		{"pg count not power of two", func(m *Map) { m.PGCount = 12 }, false},
		{"pg count one", func(m *Map) { m.PGCount = 1 }, true},
		{"k zero", func(m *Map) { m.Profile.K = 0 }, false},
		{"m negative", func(m *Map) { m.Profile.M = -1 }, false},
		{"m zero", func(m *Map) { m.Profile.M = 0 }, true},
		{"too many shards", func(m *Map) { m.Profile = Profile{K: 250, M: 7} }, false},
		{"duplicate id", func(m *Map) { m.Nodes[1].ID = m.Nodes[0].ID }, false},
		{"unsorted", func(m *Map) { m.Nodes[0], m.Nodes[1] = m.Nodes[1], m.Nodes[0] }, false},
		{"empty id", func(m *Map) { m.Nodes[0].ID = "" }, false},
		{"empty addr", func(m *Map) { m.Nodes[2].Addr = "" }, false},
		{"unknown state", func(m *Map) { m.Nodes[2].State = "zombie" }, false},
		{"negative weight", func(m *Map) { m.Nodes[2].Weight = -1 }, false},
		{"nan weight", func(m *Map) { m.Nodes[2].Weight = math.NaN() }, false},
		{"inf weight", func(m *Map) { m.Nodes[2].Weight = math.Inf(1) }, false},
		{"no nodes", func(m *Map) { m.Nodes = nil }, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := &Map{Epoch: 1, PGCount: 64, Profile: DefaultProfile, Nodes: slices.Clone(good)}
			tc.mutate(m)
			err := m.Validate()
			if tc.ok && err != nil {
				t.Fatalf("Validate: %v, want nil", err)
			}
			if !tc.ok && !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate: %v, want ErrInvalid", err)
			}
		})
	}
	var nilMap *Map
	if err := nilMap.Validate(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("nil map: %v", err)
	}
}

func TestNewMapSortsAndCopies(t *testing.T) {
	ns := mkNodes(5, 5)
	shuffled := slices.Clone(ns)
	slices.Reverse(shuffled)
	m := mustMap(t, 16, DefaultProfile, shuffled)
	if !slices.Equal(m.Nodes, ns) {
		t.Fatalf("nodes not sorted: %v", m.Nodes)
	}
	shuffled[0].Addr = "changed"
	for _, n := range m.Nodes {
		if n.Addr == "changed" {
			t.Fatal("NewMap retained the caller's slice")
		}
	}
	if _, err := NewMap(1, 16, DefaultProfile, append(ns, ns[0])); !errors.Is(err, ErrInvalid) {
		t.Fatalf("duplicate node: %v", err)
	}
}

func TestNodeCloneActive(t *testing.T) {
	ns := mkNodes(4, 4)
	ns[1].State = StateDown
	ns[3].State = StateDraining
	m := mustMap(t, 16, DefaultProfile, ns)
	for _, n := range ns {
		got, ok := m.Node(n.ID)
		if !ok || got != n {
			t.Fatalf("Node(%s) = %v, %v", n.ID, got, ok)
		}
	}
	if _, ok := m.Node("nope"); ok {
		t.Fatal("Node found a missing id")
	}
	act := m.Active()
	if len(act) != 2 || act[0].ID != ns[0].ID || act[1].ID != ns[2].ID {
		t.Fatalf("Active = %v", act)
	}
	c := m.Clone()
	c.Nodes[0].Addr = "x"
	c.Epoch++
	if m.Nodes[0].Addr == "x" || m.Epoch != 1 {
		t.Fatal("Clone shares memory")
	}
}

func TestPG(t *testing.T) {
	m := mustMap(t, 64, DefaultProfile, mkNodes(6, 6))
	var id chunk.ID
	for i := range 1000 {
		id[0], id[7], id[8] = byte(i), byte(i*7), byte(i*13)
		want := uint32(binary.BigEndian.Uint64(id[:8]) % 64)
		if got := m.PG(id); got != want {
			t.Fatalf("PG(%s) = %d, want %d", id.Str(), got, want)
		}
	}
}

func TestPlaceErrors(t *testing.T) {
	ns := mkNodes(6, 6)
	ns[5].State = StateOut
	m := mustMap(t, 16, DefaultProfile, ns)
	tests := []struct {
		name string
		pg   uint32
		n    int
		want error
	}{
		{"zero n", 0, 0, ErrInvalid},
		{"too many", 0, MaxShards + 1, ErrInvalid},
		{"pg out of range", 16, 3, ErrInvalid},
		{"not enough", 3, 6, ErrNotEnoughNodes},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := m.Place(tc.pg, tc.n)
			if !errors.Is(err, tc.want) || got != nil {
				t.Fatalf("Place = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
	if _, err := m.Place(3, 5); err != nil {
		t.Fatalf("5 of 5 eligible: %v", err)
	}
}

func TestPlaceDeterministic(t *testing.T) {
	ns := mkNodes(10, 5)
	ns[2].Weight = 3
	m1 := mustMap(t, 256, DefaultProfile, ns)
	r := rand.New(rand.NewPCG(1, 2))
	shuffled := slices.Clone(ns)
	r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	m2 := mustMap(t, 256, DefaultProfile, shuffled)
	for pg := range uint32(256) {
		a, err := m1.Place(pg, 6)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := m2.Place(pg, 6)
		c, _ := m1.Place(pg, 6)
		if !slices.Equal(a, b) || !slices.Equal(a, c) {
			t.Fatalf("pg %d: %v / %v / %v", pg, a, b, c)
		}
		// No node holds two positions.
		seen := map[NodeID]bool{}
		for _, n := range a {
			if seen[n.ID] {
				t.Fatalf("pg %d: node %s twice", pg, n.ID)
			}
			seen[n.ID] = true
		}
	}
}

func TestPlaceFailureDomains(t *testing.T) {
	tests := []struct {
		name         string
		nodes, doms  int
		n            int
		maxPerDomain int
		emptyDomains bool
	}{
		{"8 nodes 4 domains n=4", 8, 4, 4, 1, false},
		{"6 nodes 6 domains n=6", 6, 6, 6, 1, false},
		{"12 nodes 6 domains n=6", 12, 6, 6, 1, false},
		{"6 nodes 3 domains n=6", 6, 3, 6, 2, false},
		{"9 nodes 3 domains n=5", 9, 3, 5, 2, false},
		{"no domains 7 nodes n=6", 7, 7, 6, 1, true},
	}
	// Uneven domains: 4, 4 and 1 nodes with n=6. The cap is 3, and every domain still
	// gets its floor min(size, 2): the single-node domain always holds a shard.
	t.Run("uneven domains 4+4+1 n=6", func(t *testing.T) {
		ns := mkNodes(9, 1)
		for i := range ns {
			ns[i].Domain = []string{"a", "a", "a", "a", "b", "b", "b", "b", "c"}[i]
		}
		m := mustMap(t, 1024, DefaultProfile, ns)
		for pg := range m.PGCount {
			got, err := m.Place(pg, 6)
			if err != nil {
				t.Fatal(err)
			}
			per := map[string]int{}
			for _, n := range got {
				per[n.Domain]++
			}
			if per["c"] != 1 || per["a"] < 2 || per["b"] < 2 || per["a"] > 3 || per["b"] > 3 {
				t.Fatalf("pg %d: per-domain counts %v", pg, per)
			}
		}
	})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ns := mkNodes(tc.nodes, tc.doms)
			if tc.emptyDomains {
				for i := range ns {
					ns[i].Domain = ""
				}
			}
			m := mustMap(t, 1024, DefaultProfile, ns)
			for pg := range m.PGCount {
				got, err := m.Place(pg, tc.n)
				if err != nil {
					t.Fatal(err)
				}
				per := map[string]int{}
				for _, n := range got {
					d := n.Domain
					if d == "" {
						d = string(n.ID)
					}
					per[d]++
					if per[d] > tc.maxPerDomain {
						t.Fatalf("pg %d: domain %s holds %d shards, max %d: %v", pg, d, per[d], tc.maxPerDomain, got)
					}
				}
			}
		})
	}
}

// shardCounts counts, per node, the PG positions it holds.
func shardCounts(t *testing.T, m *Map, n int) map[NodeID]int {
	t.Helper()
	counts := map[NodeID]int{}
	for pg := range m.PGCount {
		got, err := m.Place(pg, n)
		if err != nil {
			t.Fatal(err)
		}
		for _, nd := range got {
			counts[nd.ID]++
		}
	}
	return counts
}

func TestPlaceBalance(t *testing.T) {
	for _, tc := range []struct{ nodes, doms, n int }{{12, 12, 6}, {12, 4, 6}, {8, 4, 4}, {24, 24, 3}} {
		t.Run(fmt.Sprintf("%d nodes %d domains n=%d", tc.nodes, tc.doms, tc.n), func(t *testing.T) {
			m := mustMap(t, 4096, DefaultProfile, mkNodes(tc.nodes, tc.doms))
			counts := shardCounts(t, m, tc.n)
			mean := float64(4096*tc.n) / float64(tc.nodes)
			for id, c := range counts {
				if dev := math.Abs(float64(c)-mean) / mean; dev > 0.15 {
					t.Errorf("node %s holds %d slots, mean %.0f (%.0f%% off)", id, c, mean, 100*dev)
				}
			}
			if len(counts) != tc.nodes {
				t.Errorf("%d of %d nodes used", len(counts), tc.nodes)
			}
			// Positions are balanced too: every node leads (holds shard 0 of) some PGs
			// in proportion.
			lead := map[NodeID]int{}
			for pg := range m.PGCount {
				got, _ := m.Place(pg, tc.n)
				lead[got[0].ID]++
			}
			leadMean := 4096 / float64(tc.nodes)
			for id, c := range lead {
				if dev := math.Abs(float64(c)-leadMean) / leadMean; dev > 0.25 {
					t.Errorf("node %s leads %d pgs, mean %.0f", id, c, leadMean)
				}
			}
		})
	}
}

func TestPlaceWeights(t *testing.T) {
	ns := mkNodes(20, 20)
	ns[7].Weight = 2
	ns[3].Weight = 1 // explicit 1 equals the default 0
	m := mustMap(t, 4096, DefaultProfile, ns)
	counts := shardCounts(t, m, 2)
	var others float64
	for id, c := range counts {
		if id != ns[7].ID {
			others += float64(c)
		}
	}
	ratio := float64(counts[ns[7].ID]) / (others / 19)
	t.Logf("weight-2 node holds %.2fx the mean of weight-1 nodes", ratio)
	if ratio < 1.7 || ratio > 2.3 {
		t.Fatalf("weight-2 node holds %.2fx, want ~2x", ratio)
	}
}

// movedSlots counts (pg, position) slots whose node differs between two maps.
func movedSlots(t *testing.T, a, b *Map, n int) (moved, total int) {
	t.Helper()
	for pg := range a.PGCount {
		pa, err := a.Place(pg, n)
		if err != nil {
			t.Fatal(err)
		}
		pb, err := b.Place(pg, n)
		if err != nil {
			t.Fatal(err)
		}
		for i := range pa {
			total++
			if pa[i].ID != pb[i].ID {
				moved++
			}
		}
	}
	return moved, total
}

func TestPlaceStability(t *testing.T) {
	const n = 6
	ns := mkNodes(13, 13)
	before := mustMap(t, 4096, DefaultProfile, ns[:12])
	after := mustMap(t, 4096, DefaultProfile, ns)
	moved, total := movedSlots(t, before, after, n)
	ideal := 1.0 / 13 // the new node's fair share of all slots
	frac := float64(moved) / float64(total)
	t.Logf("adding 1 node to 12: %.1f%% of slots moved (fair share %.1f%%)", 100*frac, 100*ideal)
	if frac > 2*ideal {
		t.Fatalf("adding one node moved %.1f%% of slots, want ≤ %.1f%%", 100*frac, 200*ideal)
	}
	if frac < ideal/2 {
		t.Fatalf("adding one node moved only %.1f%% of slots: new node unused?", 100*frac)
	}
	// Every moved slot moves to the new node or is a rare cascade.
	toNew := 0
	for pg := range before.PGCount {
		pa, _ := before.Place(pg, n)
		pb, _ := after.Place(pg, n)
		for i := range pa {
			if pa[i].ID != pb[i].ID && pb[i].ID == ns[12].ID {
				toNew++
			}
		}
	}
	if float64(toNew) < 0.6*float64(moved) {
		t.Fatalf("only %d of %d moved slots went to the new node", toNew, moved)
	}

	// Marking a node Out moves its slots and few others.
	outNodes := slices.Clone(ns[:12])
	outNodes[4].State = StateOut
	out := mustMap(t, 4096, DefaultProfile, outNodes)
	moved, total = movedSlots(t, before, out, n)
	held := shardCounts(t, before, n)[ns[4].ID]
	t.Logf("node out: %d slots moved, it held %d", moved, held)
	if moved < held || float64(moved) > 1.5*float64(held) {
		t.Fatalf("node out moved %d slots, it held %d", moved, held)
	}
}

func TestPlaceStates(t *testing.T) {
	ns := mkNodes(10, 10)
	all := mustMap(t, 512, DefaultProfile, ns)
	down := slices.Clone(ns)
	down[1].State = StateDown
	dm := mustMap(t, 512, DefaultProfile, down)
	// A Down node keeps its positions: placement is unchanged.
	if moved, _ := movedSlots(t, all, dm, 6); moved != 0 {
		t.Fatalf("marking a node down moved %d slots", moved)
	}
	for _, st := range []State{StateOut, StateDraining, StateJoining, StateDecommissioned} {
		ex := slices.Clone(ns)
		ex[1].State = st
		em := mustMap(t, 512, DefaultProfile, ex)
		for pg := range em.PGCount {
			got, err := em.Place(pg, 6)
			if err != nil {
				t.Fatal(err)
			}
			for _, nd := range got {
				if nd.ID == ns[1].ID {
					t.Fatalf("state %s: excluded node placed in pg %d", st, pg)
				}
			}
		}
	}
}

// TestHashMatchesFormat recomputes the placement hash as FORMAT.md specifies it, with
// the standard library's FNV-1a, so the code and the document cannot drift apart.
func TestHashMatchesFormat(t *testing.T) {
	splitmix := func(z uint64) uint64 {
		z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
		z = (z ^ z>>27) * 0x94d049bb133111eb
		return z ^ z>>31
	}
	for _, id := range []NodeID{"a", "node-01", "ünïcode-node", NodeID(strings.Repeat("x", 300))} {
		for _, pg := range []uint32{0, 1, 4095, 1 << 31} {
			for _, pos := range []uint8{0, 5, 255} {
				h := fnv.New64a()
				var hdr [6]byte
				hdr[0] = 0x01
				binary.BigEndian.PutUint32(hdr[1:5], pg)
				hdr[5] = pos
				h.Write(hdr[:])
				h.Write([]byte(id))
				if want, got := splitmix(h.Sum64()), placementHash(pg, pos, id); got != want {
					t.Fatalf("placementHash(%d, %d, %q) = %x, want %x", pg, pos, id, got, want)
				}
			}
		}
	}
	// The score orders like weight / -ln(u).
	r := rand.New(rand.NewPCG(7, 8))
	for range 1000 {
		h1, h2 := r.Uint64(), r.Uint64()
		w1, w2 := 1+r.Float64()*3, 1+r.Float64()*3
		f := func(w float64, h uint64) float64 { return w / -math.Log(float64(h|1)/(1<<64)) }
		a, b := f(w1, h1), f(w2, h2)
		if math.Abs(a-b)/math.Max(a, b) < 1e-6 {
			continue // too close for float64 logs to be trusted
		}
		if (a > b) != (score(w1, h1) > score(w2, h2)) {
			t.Fatalf("score order differs from weight/-ln(u) for %x,%v vs %x,%v", h1, w1, h2, w2)
		}
	}
}

func TestLog2Q32(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 10000 {
		v := r.Uint64() >> r.IntN(64)
		if v == 0 {
			v = 1
		}
		got := float64(log2Q32(v)) / (1 << 32)
		want := math.Log2(float64(v))
		if math.Abs(got-want) > 1e-8 {
			t.Fatalf("log2Q32(%d) = %.12f, want %.12f", v, got, want)
		}
	}
	if log2Q32(1) != 0 || log2Q32(1<<40) != 40<<32 {
		t.Fatal("exact powers of two")
	}
	if negLog2Q32(^uint64(0)) < 1 {
		t.Fatal("negLog2Q32 must be ≥ 1")
	}
}

func BenchmarkPlace(b *testing.B) {
	for _, nodes := range []int{6, 100} {
		b.Run(fmt.Sprint(nodes), func(b *testing.B) {
			m := mustMap(b, 4096, DefaultProfile, mkNodes(nodes, nodes/2))
			for i := range b.N {
				if _, err := m.Place(uint32(i)%4096, 6); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
