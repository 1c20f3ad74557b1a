package placement

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Liveness is what failure detection (gossip) knows about a node.
type Liveness uint8

// Liveness values. LiveUnknown (never seen) changes nothing.
const (
	LiveUnknown Liveness = iota
	LiveAlive
	LiveDead
)

// Transition is one node state change made by FollowLiveness or an admin action.
type Transition struct {
	Node   NodeID `json:"node"`
	From   State  `json:"from"`
	To     State  `json:"to"`
	Reason string `json:"reason,omitempty"`
}

func (t Transition) String() string {
	return fmt.Sprintf("%s: %s -> %s (%s)", t.Node, t.From, t.To, t.Reason)
}

// FollowLiveness returns the map that follows from the failure detector's view at
// cluster time now, and the transitions it made. When nothing changes it returns (nil,
// nil); otherwise the new map has Epoch+1 and m is not modified. The rules:
//   - active and dead: down (keeps its PG positions, so a short outage moves no data);
//   - down and alive again: active;
//   - down for at least downOut: out (its positions go to other nodes and repair
//     rebuilds its shards there);
//   - out and alive again: active (it rejoins; repair catches it up).
//
// Joining, draining and decommissioned nodes change only by admin action.
func (m *Map) FollowLiveness(now time.Time, downOut time.Duration, live func(NodeID) Liveness) (*Map, []Transition) {
	var ts []Transition
	var nodes []Node
	for i, n := range m.Nodes {
		to, why := n.State, ""
		l := live(n.ID)
		switch {
		case n.State == StateActive && l == LiveDead:
			to, why = StateDown, "failure detector reports the node dead"
		case (n.State == StateDown || n.State == StateOut) && l == LiveAlive:
			to, why = StateActive, "node is alive again"
		case n.State == StateDown && n.Since != 0 && now.Sub(time.Unix(0, n.Since)) >= downOut:
			to, why = StateOut, fmt.Sprintf("down for more than %v", downOut)
		case n.State == StateDown && n.Since == 0:
			// Down since an unknown time: start the timer now.
			if nodes == nil {
				nodes = slices.Clone(m.Nodes)
			}
			nodes[i].Since = now.UnixNano()
			continue
		}
		if to == n.State {
			continue
		}
		if nodes == nil {
			nodes = slices.Clone(m.Nodes)
		}
		nodes[i].State, nodes[i].Since = to, now.UnixNano()
		ts = append(ts, Transition{Node: n.ID, From: n.State, To: to, Reason: why})
	}
	if nodes == nil {
		return nil, nil
	}
	out := *m
	out.Epoch++
	out.Nodes = nodes
	return &out, ts
}

// SetState returns a copy of m at Epoch+1 in which node id has state to (Since = now),
// checking that the admin transition is allowed:
//   - drain: active, down or out → draining (its positions move to other nodes);
//   - undrain: draining → active;
//   - decommission: draining or out → decommissioned (the caller must also check
//     CheckDecommission); decommissioned is final.
//   - activate: joining → active.
//
// Errors wrap ErrInvalid and name the node and both states.
func (m *Map) SetState(id NodeID, to State, now time.Time) (*Map, Transition, error) {
	i, ok := slices.BinarySearchFunc(m.Nodes, id, func(n Node, id NodeID) int {
		return strings.Compare(string(n.ID), string(id))
	})
	if !ok {
		return nil, Transition{}, fmt.Errorf("%w: node %q is not in the cluster map (epoch %d)", ErrInvalid, id, m.Epoch)
	}
	from := m.Nodes[i].State
	allowed := false
	switch to {
	case StateDraining:
		allowed = from == StateActive || from == StateDown || from == StateOut
	case StateActive:
		allowed = from == StateDraining || from == StateJoining
	case StateDecommissioned:
		allowed = from == StateDraining || from == StateOut
	}
	if !allowed {
		return nil, Transition{}, fmt.Errorf("%w: node %s is %s: cannot become %s", ErrInvalid, id, from, to)
	}
	out := m.Clone()
	out.Epoch++
	out.Nodes[i].State, out.Nodes[i].Since = to, now.UnixNano()
	return out, Transition{Node: id, From: from, To: to}, nil
}
