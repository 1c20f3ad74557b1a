package placement

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// PlaceBest is Place for a map that may hold too few eligible nodes for n positions.
// When Place succeeds it returns Place's answer and short is "". When fewer than n nodes
// are eligible (active or down), it places the first e positions exactly as
// Place(pg, e) does, e being the number of eligible nodes, and leaves positions e..n-1
// empty (the zero Node, ID ""); short says why, in the words `coffer admin pgs` shows:
// "cannot place: 6 shards need 6 domains, 5 eligible" (every eligible node its own
// domain) or "cannot place: 6 shards need 6 nodes, 5 eligible in 3 domains".
//
// The parity positions are the ones left empty, so the data shards still read directly.
// A stripe written under such a map holds e shards and survives the loss of e-k of
// them; repair fills the empty positions once enough nodes are eligible again (the map
// then places all n). Errors are Place's except ErrNotEnoughNodes; no eligible node at
// all is ErrNotEnoughNodes.
func (m *Map) PlaceBest(pg uint32, n int) (nodes []Node, short string, err error) {
	nodes, err = m.Place(pg, n)
	if err == nil || !errors.Is(err, ErrNotEnoughNodes) {
		return nodes, "", err
	}
	e, domains := m.eligible()
	if e == 0 {
		return nil, "", err
	}
	got, err := m.Place(pg, e)
	if err != nil {
		return nil, "", err
	}
	out := make([]Node, n)
	copy(out, got)
	return out, ShortReason(n, e, domains), nil
}

// ShortReason is the reason PlaceBest gives when only e eligible nodes in the given
// number of failure domains are there for n shards.
func ShortReason(n, e, domains int) string {
	if domains == e {
		return fmt.Sprintf("cannot place: %d shards need %d domains, %d eligible", n, n, e)
	}
	return fmt.Sprintf("cannot place: %d shards need %d nodes, %d eligible in %d domains", n, n, e, domains)
}

// eligible counts the nodes that hold PGs and their failure domains (a node with an
// empty Domain is a domain of its own).
func (m *Map) eligible() (nodes, domains int) {
	seen := map[string]bool{}
	for _, nd := range m.Nodes {
		if !nd.State.HoldsPGs() {
			continue
		}
		nodes++
		if nd.Domain == "" {
			domains++
		} else if !seen[nd.Domain] {
			seen[nd.Domain] = true
			domains++
		}
	}
	return nodes, domains
}

// Spares returns up to count substitute candidates for PG pg whose owners (Place or
// PlaceBest's answer, empty positions allowed) are given: the active nodes that own no
// position of the PG, best first by the placement score of (pg, position len(owners),
// node), ties to the lower ID. A writer that finds an owner down puts that position's
// shard on the first live spare whose failure domain the stripe does not use yet (any
// live spare when every domain is used), and readers and repair know where to look:
// the order depends only on the map. The result is a new slice.
func (m *Map) Spares(pg uint32, owners []Node, count int) []Node {
	if count <= 0 {
		return nil
	}
	type scored struct {
		node  Node
		score float64
	}
	pos := uint8(len(owners)) // a position past the stripe; wraps only at MaxShards
	var cands []scored
	for _, nd := range m.Nodes {
		if nd.State != StateActive || slices.ContainsFunc(owners, func(o Node) bool { return o.ID == nd.ID }) {
			continue
		}
		cands = append(cands, scored{nd, score(nd.EffectiveWeight(), placementHash(pg, pos, nd.ID))})
	}
	slices.SortFunc(cands, func(a, b scored) int {
		switch {
		case a.score > b.score:
			return -1
		case a.score < b.score:
			return 1
		}
		return strings.Compare(string(a.node.ID), string(b.node.ID))
	})
	out := make([]Node, 0, min(count, len(cands)))
	for _, c := range cands[:min(count, len(cands))] {
		out = append(out, c.node)
	}
	return out
}
