package placement

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func TestAddNode(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	m := mustMap(t, 16, Profile{K: 2, M: 1}, mkNodes(4, 4))
	m.Nodes[3].State = StateDecommissioned
	nm, err := m.AddNode(Node{ID: "node-015", Addr: "10.0.1.1:7000", Domain: "rack-9", Weight: 2, State: StateActive}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if nm.Epoch != m.Epoch+1 || len(nm.Nodes) != 5 || len(m.Nodes) != 4 {
		t.Fatalf("epoch %d, %d nodes (input %d nodes)", nm.Epoch, len(nm.Nodes), len(m.Nodes))
	}
	n, ok := nm.Node("node-015")
	if !ok || n.State != StateJoining || n.Since != t0.UnixNano() || n.Weight != 2 || n.Domain != "rack-9" {
		t.Fatalf("added node: %+v %v", n, ok)
	}
	if err := nm.Validate(); err != nil {
		t.Fatalf("result not sorted or invalid: %v", err)
	}
	// A joining node holds no PG position: placement is unchanged.
	for pg := range m.PGCount {
		a, _ := m.Place(pg, 3)
		b, _ := nm.Place(pg, 3)
		for i := range a {
			if a[i].ID != b[i].ID {
				t.Fatalf("pg %d moved after adding a joining node", pg)
			}
		}
	}
	// The address of a decommissioned node may be reused.
	if _, err := m.AddNode(Node{ID: "node-99", Addr: m.Nodes[3].Addr}, t0); err != nil {
		t.Fatalf("reuse a decommissioned node's address: %v", err)
	}
	for _, tc := range []struct {
		n    Node
		want string
	}{
		{Node{Addr: "x:1"}, "empty id"},
		{Node{ID: "n"}, "empty address"},
		{Node{ID: "n", Addr: "x:1", Weight: math.NaN()}, "weight"},
		{Node{ID: "n", Addr: "x:1", Weight: -1}, "weight"},
		{Node{ID: "node-01", Addr: "x:1"}, "already in the cluster map"},
		{Node{ID: "node-03", Addr: "x:1"}, "already in the cluster map (epoch 1) as decommissioned"},
		{Node{ID: "n", Addr: m.Nodes[1].Addr}, "belongs to node node-01"},
	} {
		_, err := m.AddNode(tc.n, t0)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("AddNode(%+v) = %v, want ErrInvalid naming %q", tc.n, err, tc.want)
		}
	}
}

// TestPlanFromEmptyMap: a cluster bootstrapped with an empty map brings its first
// nodes in with a plan in which every position comes in and nothing goes out.
func TestPlanFromEmptyMap(t *testing.T) {
	empty := mustMap(t, 8, Profile{K: 2, M: 1}, nil)
	m := empty
	for _, n := range mkNodes(4, 4) {
		var err error
		if m, err = m.AddNode(n, time.Unix(1, 0)); err != nil {
			t.Fatal(err)
		}
	}
	to, ids := m.ActivateJoining(2)
	if len(ids) != 4 {
		t.Fatalf("activated %v", ids)
	}
	p, err := PlanMove(m, to, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.PGs != 8 || p.Positions != 8*3 || p.Bytes != 0 {
		t.Fatalf("plan %+v", p)
	}
	for _, nm := range p.Nodes {
		if nm.PGsOut != 0 || nm.PGsIn == 0 {
			t.Fatalf("node move %+v", nm)
		}
	}
	// Too few nodes to place in the target map is still an error.
	small, _ := empty.AddNode(Node{ID: "a", Addr: "a:1"}, time.Unix(1, 0))
	smallTo, _ := small.ActivateJoining(2)
	if _, err := PlanMove(small, smallTo, nil); !errors.Is(err, ErrNotEnoughNodes) {
		t.Fatalf("plan onto one node: %v", err)
	}
}
