package placement

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func TestFollowLiveness(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	m := mustMap(t, 8, Profile{K: 2, M: 1}, mkNodes(4, 4))
	live := map[NodeID]Liveness{"node-00": LiveAlive, "node-01": LiveDead, "node-02": LiveUnknown}
	f := func(id NodeID) Liveness { return live[id] }

	m2, ts := m.FollowLiveness(t0, 10*time.Minute, f)
	if m2 == nil || len(ts) != 1 || ts[0].Node != "node-01" || ts[0].To != StateDown {
		t.Fatalf("dead node: got %v %v", m2, ts)
	}
	if m2.Epoch != m.Epoch+1 || m.Nodes[1].State != StateActive {
		t.Fatalf("epoch %d (want %d) or input modified (%s)", m2.Epoch, m.Epoch+1, m.Nodes[1].State)
	}
	if again, ts := m2.FollowLiveness(t0.Add(9*time.Minute), 10*time.Minute, f); again != nil || ts != nil {
		t.Fatalf("before down_out_interval: %v", ts)
	}
	m3, ts := m2.FollowLiveness(t0.Add(10*time.Minute), 10*time.Minute, f)
	if m3 == nil || len(ts) != 1 || ts[0].To != StateOut {
		t.Fatalf("after down_out_interval: %v", ts)
	}
	live["node-01"] = LiveAlive
	m4, ts := m3.FollowLiveness(t0.Add(11*time.Minute), 10*time.Minute, f)
	if m4 == nil || len(ts) != 1 || ts[0].From != StateOut || ts[0].To != StateActive {
		t.Fatalf("rejoin: %v", ts)
	}
	// A down node that comes back before the timer is active again, keeping its PGs.
	live["node-01"] = LiveDead
	m5, _ := m4.FollowLiveness(t0.Add(12*time.Minute), 10*time.Minute, f)
	live["node-01"] = LiveAlive
	m6, ts := m5.FollowLiveness(t0.Add(13*time.Minute), 10*time.Minute, f)
	if len(ts) != 1 || ts[0].From != StateDown || ts[0].To != StateActive || m6.Epoch != m.Epoch+5 {
		t.Fatalf("down then alive: %v (epoch %d)", ts, m6.Epoch)
	}
	// Draining nodes are left to the admin.
	d, _, err := m6.SetState("node-02", StateDraining, t0)
	if err != nil {
		t.Fatal(err)
	}
	live["node-02"] = LiveDead
	if _, ts := d.FollowLiveness(t0.Add(time.Hour), time.Minute, f); len(ts) != 0 {
		t.Fatalf("draining node changed by liveness: %v", ts)
	}
}

func TestSetState(t *testing.T) {
	m := mustMap(t, 8, Profile{K: 2, M: 1}, mkNodes(4, 4))
	now := time.Unix(1_700_000_000, 0)
	if _, _, err := m.SetState("node-00", StateDecommissioned, now); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "active") {
		t.Fatalf("decommission an active node: %v", err)
	}
	if _, _, err := m.SetState("nope", StateDraining, now); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unknown node: %v", err)
	}
	d, tr, err := m.SetState("node-00", StateDraining, now)
	if err != nil || tr.From != StateActive || d.Epoch != 2 || d.Nodes[0].State != StateDraining || m.Nodes[0].State != StateActive {
		t.Fatalf("drain: %v %v", tr, err)
	}
	u, _, err := d.SetState("node-00", StateActive, now)
	if err != nil || u.Nodes[0].State != StateActive {
		t.Fatalf("undrain: %v", err)
	}
	x, _, err := d.SetState("node-00", StateDecommissioned, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x.SetState("node-00", StateActive, now); err == nil {
		t.Fatal("decommissioned node reactivated")
	}
}

// TestCheckDecommissionProperty draws random cluster states (maps, node states, which
// shards each PG's stripes really have, stale and missing health reports) and checks
// that decommission is never accepted while some stripe would be left with fewer than
// k+m healthy shards without the node.
func TestCheckDecommissionProperty(t *testing.T) {
	const states = 10_000
	rng := rand.New(rand.NewPCG(5, 5))
	accepted, refused := 0, 0
	for it := 0; accepted+refused < states; it++ {
		nNodes := 4 + rng.IntN(9)
		nodes := mkNodes(nNodes, 1+rng.IntN(5))
		p := Profile{K: 1 + rng.IntN(3), M: rng.IntN(3)}
		for i := range nodes {
			switch r := rng.IntN(10); {
			case r == 0:
				nodes[i].State = StateDown
			case r == 1:
				nodes[i].State = StateOut
			case r == 2:
				nodes[i].State = StateDraining
			}
		}
		x := nodes[rng.IntN(nNodes)].ID
		old, err := NewMap(uint64(3+rng.IntN(5)), 8, p, nodes)
		if err != nil {
			t.Fatal(err)
		}
		// The current map: usually the node is drained (or out) one epoch later.
		cur := old
		if rng.IntN(4) != 0 {
			to := StateDraining
			if rng.IntN(2) == 0 {
				to = StateOut
			}
			if nd, _ := old.Node(x); nd.State != to {
				c := old.Clone()
				c.Epoch++
				for i := range c.Nodes {
					if c.Nodes[i].ID == x {
						c.Nodes[i].State = to
					}
				}
				cur = c
			}
		}
		n := p.N()
		var reports []PGHealth
		ok := true // ground truth: no stripe depends on x
		placeable := true
		for pg := range cur.PGCount {
			desired, err := cur.Place(pg, n)
			if err != nil {
				placeable = false
				break
			}
			oldDesired, oldErr := old.Place(pg, n)
			h := PGHealth{PG: pg, Epoch: cur.Epoch, N: n, MinHealthy: n}
			hOld := PGHealth{PG: pg, Epoch: old.Epoch, N: n, MinHealthy: n}
			for range 1 + rng.IntN(3) {
				held := make([]bool, n)
				for i := range held {
					held[i] = rng.IntN(40) != 0
				}
				hs := StripeHealthy(desired, held)
				h.Stripes++
				h.MinHealthy = min(h.MinHealthy, hs)
				if hs < n {
					h.Degraded++
				}
				if oldErr == nil {
					ho := StripeHealthy(oldDesired, held)
					hOld.MinHealthy = min(hOld.MinHealthy, ho)
				}
				without := 0
				for i, d := range desired {
					if held[i] && d.State == StateActive && d.ID != x {
						without++
					}
				}
				if without < n {
					ok = false
				}
			}
			switch r := rng.IntN(20); {
			case r == 0: // no report yet
			case r == 1 && oldErr == nil: // only a stale report from the old epoch
				reports = append(reports, hOld)
			default:
				reports = append(reports, h)
			}
		}
		if !placeable {
			continue
		}
		err = CheckDecommission(cur, x, reports)
		if err == nil {
			accepted++
			if !ok {
				t.Fatalf("state %d: decommission of %s accepted while a PG depends on it (map %+v)", it, x, cur)
			}
		} else {
			refused++
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("state %d: refusal does not wrap ErrInvalid: %v", it, err)
			}
		}
	}
	t.Logf("%d states: %d accepted, %d refused", accepted+refused, accepted, refused)
	if accepted == 0 || refused == 0 {
		t.Fatalf("property test did not exercise both outcomes: %d accepted, %d refused", accepted, refused)
	}
}

func TestCheckDecommissionNamesPGs(t *testing.T) {
	m := mustMap(t, 4, Profile{K: 2, M: 1}, mkNodes(4, 4))
	d, _, _ := m.SetState("node-01", StateDraining, time.Unix(0, 1))
	var reps []PGHealth
	for pg := range uint32(4) {
		reps = append(reps, PGHealth{PG: pg, Epoch: d.Epoch, N: 3, MinHealthy: 3, Stripes: 2})
	}
	if err := CheckDecommission(d, "node-01", reps); err != nil {
		t.Fatalf("fully healthy: %v", err)
	}
	reps[2].MinHealthy, reps[2].Degraded = 1, 1
	err := CheckDecommission(d, "node-01", reps[:3])
	if err == nil || !strings.Contains(err.Error(), "pg 2: 2 of 3 shards missing") || !strings.Contains(err.Error(), "pg 3: not yet verified") {
		t.Fatalf("refusal: %v", err)
	}
}

func TestPlanMove(t *testing.T) {
	nodes := mkNodes(10, 10)
	nodes[8].State, nodes[9].State = StateJoining, StateJoining
	from := mustMap(t, 64, Profile{K: 4, M: 2}, nodes)
	to, ids := from.ActivateJoining(1)
	if len(ids) != 2 || to.Epoch != 2 || from.Nodes[8].State != StateJoining {
		t.Fatalf("activate joining: %v epoch %d", ids, to.Epoch)
	}
	pgBytes := map[uint32]int64{}
	for pg := range uint32(64) {
		pgBytes[pg] = 6000
	}
	p, err := PlanMove(from, to, pgBytes)
	if err != nil {
		t.Fatal(err)
	}
	var in, out int64
	for _, nm := range p.Nodes {
		in += nm.BytesIn
		out += nm.BytesOut
		if (nm.Node == "node-08" || nm.Node == "node-09") && (nm.PGsIn == 0 || nm.PGsOut != 0) {
			t.Errorf("new node %s: %+v", nm.Node, nm)
		}
	}
	if in != p.Bytes || out != p.Bytes || p.Bytes != int64(p.Positions)*1000 {
		t.Fatalf("plan does not balance: in %d out %d bytes %d positions %d", in, out, p.Bytes, p.Positions)
	}
	// Two new nodes of ten take about a fifth of the 384 positions.
	if p.Positions < 384/10 || p.Positions > 384*3/10 {
		t.Fatalf("%d of 384 positions move", p.Positions)
	}
	if same, _ := PlanMove(from, from, pgBytes); same.Positions != 0 || same.Bytes != 0 {
		t.Fatalf("identity plan moves %+v", same)
	}
}
