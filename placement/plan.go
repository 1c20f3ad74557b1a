package placement

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// NodeMove is one node's share of a movement plan.
type NodeMove struct {
	Node     NodeID `cbor:"node" json:"node"`
	PGsIn    int    `cbor:"pgs_in" json:"pgs_in"`     // PG positions the node gains
	PGsOut   int    `cbor:"pgs_out" json:"pgs_out"`   // PG positions the node loses
	BytesIn  int64  `cbor:"bytes_in" json:"bytes_in"` // shard bytes it receives
	BytesOut int64  `cbor:"bytes_out" json:"bytes_out"`
}

// Plan is the data movement from one map to another.
type Plan struct {
	FromEpoch uint64     `cbor:"from_epoch" json:"from_epoch"`
	PGs       int        `cbor:"pgs" json:"pgs"`             // PGs with at least one position moving
	Positions int        `cbor:"positions" json:"positions"` // (PG, shard index) pairs moving
	Bytes     int64      `cbor:"bytes" json:"bytes"`         // shard bytes to move
	Nodes     []NodeMove `cbor:"nodes" json:"nodes"`         // sorted by node ID
}

// PlanMove computes which PG positions change owner between from and to, and how many
// shard bytes that moves, given the shard bytes stored per PG (pgBytes[pg]: the sum
// over the PG's stripes of one shard per position times k+m, i.e. all shards of the
// PG). Positions of a PG hold equal shares of its bytes. Both maps must have the same
// PG count and profile; errors wrap ErrInvalid or ErrNotEnoughNodes (to cannot place).
// When from cannot place a PG (fewer nodes hold PGs than k+m, as in a cluster
// bootstrapped with an empty map), every position of it counts as coming in, from no one.
func PlanMove(from, to *Map, pgBytes map[uint32]int64) (Plan, error) {
	if from.PGCount != to.PGCount || from.Profile != to.Profile {
		return Plan{}, fmt.Errorf("%w: plan: maps differ in PG count or profile (%d %s vs %d %s)",
			ErrInvalid, from.PGCount, from.Profile, to.PGCount, to.Profile)
	}
	n := from.Profile.N()
	p := Plan{FromEpoch: from.Epoch}
	byNode := map[NodeID]*NodeMove{}
	get := func(id NodeID) *NodeMove {
		if byNode[id] == nil {
			byNode[id] = &NodeMove{Node: id}
		}
		return byNode[id]
	}
	for pg := range from.PGCount {
		// A map that cannot place a PG (too few nodes hold PGs: a cluster bootstrapped
		// with an empty map) has stored nothing: every position comes in new.
		a, err := from.Place(pg, n)
		if errors.Is(err, ErrNotEnoughNodes) {
			a = nil
		} else if err != nil {
			return Plan{}, fmt.Errorf("plan: %w", err)
		}
		b, err := to.Place(pg, n)
		if err != nil {
			return Plan{}, fmt.Errorf("plan: %w", err)
		}
		share := pgBytes[pg] / int64(n)
		moved := false
		for i := range n {
			if a != nil && a[i].ID == b[i].ID {
				continue
			}
			moved = true
			p.Positions++
			p.Bytes += share
			in := get(b[i].ID)
			in.PGsIn++
			in.BytesIn += share
			if a != nil {
				out := get(a[i].ID)
				out.PGsOut++
				out.BytesOut += share
			}
		}
		if moved {
			p.PGs++
		}
	}
	for _, m := range byNode {
		p.Nodes = append(p.Nodes, *m)
	}
	slices.SortFunc(p.Nodes, func(x, y NodeMove) int { return strings.Compare(string(x.Node), string(y.Node)) })
	return p, nil
}

// ActivateJoining returns a copy of m at Epoch+1 in which every joining node is active
// (Since = now), and their IDs; (nil, nil) when no node is joining.
func (m *Map) ActivateJoining(nowNanos int64) (*Map, []NodeID) {
	var ids []NodeID
	out := m.Clone()
	for i := range out.Nodes {
		if out.Nodes[i].State == StateJoining {
			out.Nodes[i].State, out.Nodes[i].Since = StateActive, nowNanos
			ids = append(ids, out.Nodes[i].ID)
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	out.Epoch++
	return out, ids
}
