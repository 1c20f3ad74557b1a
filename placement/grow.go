package placement

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// AddNode returns a copy of m at Epoch+1 with n added as joining (Since = now): it
// holds no PG position until it is activated (ActivateJoining, SetState). n's State and
// Since are ignored. Refused (errors wrap ErrInvalid and name the node) when n has no ID
// or address, a weight that is not finite and ≥ 0, an ID already in the map (in any
// state, decommissioned included: IDs are permanent), or the address of a node that is
// not decommissioned. m is not modified.
func (m *Map) AddNode(n Node, now time.Time) (*Map, error) {
	switch {
	case n.ID == "":
		return nil, fmt.Errorf("%w: add node: empty id", ErrInvalid)
	case n.Addr == "":
		return nil, fmt.Errorf("%w: add node %s: empty address", ErrInvalid, n.ID)
	case math.IsNaN(n.Weight) || math.IsInf(n.Weight, 0) || n.Weight < 0:
		return nil, fmt.Errorf("%w: add node %s: weight %v, want a finite value ≥ 0", ErrInvalid, n.ID, n.Weight)
	}
	for _, o := range m.Nodes {
		if o.ID == n.ID {
			return nil, fmt.Errorf("%w: add node %s: already in the cluster map (epoch %d) as %s", ErrInvalid, n.ID, m.Epoch, o.State)
		}
		if o.Addr == n.Addr && o.State != StateDecommissioned {
			return nil, fmt.Errorf("%w: add node %s: address %s belongs to node %s (%s)", ErrInvalid, n.ID, n.Addr, o.ID, o.State)
		}
	}
	out := m.Clone()
	out.Epoch++
	n.State, n.Since = StateJoining, now.UnixNano()
	i, _ := slices.BinarySearchFunc(out.Nodes, n.ID, func(x Node, id NodeID) int {
		return strings.Compare(string(x.ID), string(id))
	})
	out.Nodes = slices.Insert(out.Nodes, i, n)
	if err := out.Validate(); err != nil {
		return nil, fmt.Errorf("add node %s: %w", n.ID, err)
	}
	return out, nil
}
