package placement

import (
	"errors"
	"slices"
	"testing"
)

// TestPlaceBestShort: with 5 eligible nodes for 6 shards, Place fails and PlaceBest
// places the first 5 positions as Place(pg, 5) does, leaves the last one empty and says
// why in the words admin pgs shows.
func TestPlaceBestShort(t *testing.T) {
	ns := mkNodes(6, 6)
	full := mustMap(t, 64, DefaultProfile, ns)
	for pg := range full.PGCount {
		a, _ := full.Place(pg, 6)
		b, short, err := full.PlaceBest(pg, 6)
		if err != nil || short != "" || !slices.Equal(a, b) {
			t.Fatalf("pg %d: PlaceBest on a full map = %v %q %v, want Place's answer", pg, b, short, err)
		}
	}
	ns[3].State = StateOut
	m := mustMap(t, 64, DefaultProfile, ns)
	if _, err := m.Place(0, 6); !errors.Is(err, ErrNotEnoughNodes) {
		t.Fatalf("Place with 5 eligible = %v", err)
	}
	for pg := range m.PGCount {
		got, short, err := m.PlaceBest(pg, 6)
		if err != nil {
			t.Fatal(err)
		}
		if short != "cannot place: 6 shards need 6 domains, 5 eligible" {
			t.Fatalf("short = %q", short)
		}
		want, _ := m.Place(pg, 5)
		if len(got) != 6 || !slices.Equal(got[:5], want) || got[5].ID != "" {
			t.Fatalf("pg %d: %v, want %v and an empty last position", pg, got, want)
		}
	}
	// Fewer domains than nodes: the reason names both.
	ns = mkNodes(5, 3)
	m = mustMap(t, 8, DefaultProfile, ns)
	if _, short, _ := m.PlaceBest(1, 6); short != "cannot place: 6 shards need 6 nodes, 5 eligible in 3 domains" {
		t.Fatalf("short = %q", short)
	}
	// No eligible node: still an error.
	if _, _, err := mustMap(t, 8, DefaultProfile, nil).PlaceBest(0, 6); !errors.Is(err, ErrNotEnoughNodes) {
		t.Fatalf("empty map: %v", err)
	}
	if _, _, err := m.PlaceBest(8, 6); !errors.Is(err, ErrInvalid) {
		t.Fatalf("pg out of range: %v", err)
	}
}

// TestSpares: spares are the active non-owners, in an order that depends only on the
// map, and change little when an unrelated node goes.
func TestSpares(t *testing.T) {
	ns := mkNodes(9, 9)
	ns[7].State = StateDown
	m := mustMap(t, 64, DefaultProfile, ns)
	first := map[NodeID]int{}
	for pg := range m.PGCount {
		owners, _ := m.Place(pg, 6)
		sp := m.Spares(pg, owners, 10)
		// 9 nodes - 6 owners, minus the down node when it is not an owner.
		want := 3
		if !slices.ContainsFunc(owners, func(o Node) bool { return o.ID == "node-07" }) {
			want = 2
		}
		if len(sp) != want {
			t.Fatalf("pg %d: %d spares %v, want %d", pg, len(sp), sp, want)
		}
		for _, s := range sp {
			if s.State != StateActive || slices.ContainsFunc(owners, func(o Node) bool { return o.ID == s.ID }) {
				t.Fatalf("pg %d: spare %v is an owner or not active", pg, s)
			}
		}
		if again := m.Spares(pg, owners, 10); !slices.Equal(sp, again) {
			t.Fatal("spares not deterministic")
		}
		if one := m.Spares(pg, owners, 1); len(one) != 1 || one[0].ID != sp[0].ID {
			t.Fatalf("Spares(1) = %v, want the first of %v", one, sp)
		}
		first[sp[0].ID]++
	}
	if len(first) < 3 {
		t.Fatalf("first spares spread over %d nodes only: %v", len(first), first)
	}
	if m.Spares(0, nil, 0) != nil {
		t.Fatal("count 0")
	}
}
