package placement

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// MaxShards bounds K+M: shard indexes are one byte on the wire and on disk.
const MaxShards = 256

// NewMap builds a Map from a copy of nodes sorted by ID and validates it. Errors wrap
// ErrInvalid. The returned Map shares nothing with the arguments.
func NewMap(epoch uint64, pgCount uint32, profile Profile, nodes []Node) (*Map, error) {
	ns := slices.Clone(nodes)
	slices.SortFunc(ns, func(a, b Node) int { return strings.Compare(string(a.ID), string(b.ID)) })
	m := &Map{Epoch: epoch, PGCount: pgCount, Profile: profile, Nodes: ns}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// Validate checks the map's invariants: PGCount is a power of two ≥ 1; the profile has
// K ≥ 1, M ≥ 0 and K+M ≤ MaxShards; node IDs are non-empty, unique and sorted; every node
// has an address, a known state and a finite weight ≥ 0. The error wraps ErrInvalid and
// names the first problem found.
func (m *Map) Validate() error {
	if m == nil {
		return fmt.Errorf("%w: nil map", ErrInvalid)
	}
	if m.PGCount == 0 || m.PGCount&(m.PGCount-1) != 0 {
		return fmt.Errorf("%w: pg count %d is not a power of two ≥ 1", ErrInvalid, m.PGCount)
	}
	if err := m.Profile.Validate(); err != nil {
		return err
	}
	for i, n := range m.Nodes {
		if n.ID == "" {
			return fmt.Errorf("%w: node %d has an empty id", ErrInvalid, i)
		}
		if i > 0 {
			prev := m.Nodes[i-1].ID
			if prev == n.ID {
				return fmt.Errorf("%w: duplicate node id %q", ErrInvalid, n.ID)
			}
			if prev > n.ID {
				return fmt.Errorf("%w: nodes not sorted by id: %q before %q", ErrInvalid, prev, n.ID)
			}
		}
		if n.Addr == "" {
			return fmt.Errorf("%w: node %q has an empty address", ErrInvalid, n.ID)
		}
		if !n.State.Valid() {
			return fmt.Errorf("%w: node %q has unknown state %q", ErrInvalid, n.ID, n.State)
		}
		if math.IsNaN(n.Weight) || math.IsInf(n.Weight, 0) || n.Weight < 0 {
			return fmt.Errorf("%w: node %q has weight %v, want a finite value ≥ 0", ErrInvalid, n.ID, n.Weight)
		}
	}
	return nil
}

// Validate checks K ≥ 1, M ≥ 0 and K+M ≤ MaxShards. The error wraps ErrInvalid.
func (p Profile) Validate() error {
	if p.K < 1 || p.M < 0 || p.K+p.M > MaxShards {
		return fmt.Errorf("%w: profile %d+%d: want k ≥ 1, m ≥ 0, k+m ≤ %d", ErrInvalid, p.K, p.M, MaxShards)
	}
	return nil
}

// N returns K+M, the number of shards of a stripe.
func (p Profile) N() int { return p.K + p.M }

// String returns "k+m".
func (p Profile) String() string { return fmt.Sprintf("%d+%d", p.K, p.M) }

// Valid reports whether s is one of the defined states.
func (s State) Valid() bool {
	switch s {
	case StateJoining, StateActive, StateDraining, StateDecommissioned, StateDown, StateOut:
		return true
	}
	return false
}

// HoldsPGs reports whether a node in state s owns placement-group positions: Active
// nodes, and Down nodes, which keep their PGs until they are marked Out so that a
// transient failure moves no data.
func (s State) HoldsPGs() bool { return s == StateActive || s == StateDown }

// Node returns the node with the given ID. The map's nodes must be sorted (Validate).
func (m *Map) Node(id NodeID) (Node, bool) {
	i, ok := slices.BinarySearchFunc(m.Nodes, id, func(n Node, id NodeID) int {
		return strings.Compare(string(n.ID), string(id))
	})
	if !ok {
		return Node{}, false
	}
	return m.Nodes[i], true
}

// Clone returns a deep copy of m that shares no memory with it.
func (m *Map) Clone() *Map {
	if m == nil {
		return nil
	}
	c := *m
	c.Nodes = slices.Clone(m.Nodes)
	return &c
}

// Active returns a new slice of the nodes in state Active, in ID order.
func (m *Map) Active() []Node {
	var out []Node
	for _, n := range m.Nodes {
		if n.State == StateActive {
			out = append(out, n)
		}
	}
	return out
}

// EffectiveWeight returns the node's weight, with 0 meaning 1.
func (n Node) EffectiveWeight() float64 {
	if n.Weight == 0 {
		return 1
	}
	return n.Weight
}
