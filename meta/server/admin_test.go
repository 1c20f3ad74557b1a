package server

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/placement"
)

// fakeHealth is a controllable failure detector and PG health source.
type fakeHealth struct {
	mu      sync.Mutex
	live    map[placement.NodeID]placement.Liveness
	reports []placement.PGHealth
}

func (f *fakeHealth) liveness(id placement.NodeID) placement.Liveness {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.live[id]
}

func (f *fakeHealth) set(id placement.NodeID, l placement.Liveness) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.live[id] = l
}

func (f *fakeHealth) health(context.Context) ([]placement.PGHealth, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]placement.PGHealth(nil), f.reports...), nil
}

func waitState(t *testing.T, s *Server, id placement.NodeID, want placement.State) placement.Map {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var last placement.State
	for time.Now().Before(deadline) {
		if m, err := s.ClusterMap(ctxT(t)); err == nil {
			nd, _ := m.Node(id)
			if last = nd.State; last == want {
				return m
			}
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	t.Fatalf("node %s: state %s, want %s", id, last, want)
	return placement.Map{}
}

func TestLivenessMarksDownOutAndBack(t *testing.T) {
	fh := &fakeHealth{live: map[placement.NodeID]placement.Liveness{"c1": placement.LiveAlive}}
	c := newCluster(t, 1, func(cfg *Config) {
		cfg.Liveness, cfg.DownOut, cfg.PGHealth = fh.liveness, 300*time.Millisecond, fh.health
	})
	l := c.srv[c.leader()]
	waitState(t, l, "c1", placement.StateActive)
	fh.set("c1", placement.LiveDead)
	down := waitState(t, l, "c1", placement.StateDown)
	out := waitState(t, l, "c1", placement.StateOut)
	if out.Epoch != down.Epoch+1 {
		t.Fatalf("out at epoch %d, down at %d: want one step", out.Epoch, down.Epoch)
	}
	fh.set("c1", placement.LiveAlive)
	waitState(t, l, "c1", placement.StateActive)
	// The audit entry follows the map change: poll for it.
	want := "node.down c1,node.out c1,node.active c1"
	var got []string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		log, err := l.AuditLog(ctxT(t), 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		got = got[:0]
		for _, e := range log {
			if e.Principal == "system" && e.Outcome == meta.AuditOK {
				got = append(got, e.Action+" "+e.Target)
			}
		}
		if strings.Join(got, ",") == want {
			return
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	t.Fatalf("audit %q, want %q", strings.Join(got, ","), want)
}

func TestNodeActionsAuthorizedCheckedAndAudited(t *testing.T) {
	fh := &fakeHealth{live: map[placement.NodeID]placement.Liveness{}}
	c := newCluster(t, 1, func(cfg *Config) { cfg.PGHealth = fh.health })
	l := c.srv[c.leader()]
	waitState(t, l, "c1", placement.StateActive)
	admin := meta.WithPrincipal(ctxT(t), meta.Principal{Name: "ops", Role: meta.RoleAdmin})
	agent := meta.WithPrincipal(ctxT(t), meta.Principal{Name: "host1", Role: meta.RoleBackupAgent})

	if _, err := l.NodeAction(agent, meta.NodeActionRequest{Node: "c1", Action: meta.NodeDrain}); !errors.Is(err, meta.ErrDenied) {
		t.Fatalf("drain by an agent: %v", err)
	}
	if _, err := l.NodeAction(admin, meta.NodeActionRequest{Node: "nope", Action: meta.NodeDrain}); !errors.Is(err, meta.ErrNotFound) {
		t.Fatalf("unknown node: %v", err)
	}
	if _, err := l.NodeAction(admin, meta.NodeActionRequest{Node: "c1", Action: meta.NodeDecommission}); !errors.Is(err, meta.ErrInvalid) {
		t.Fatalf("decommission of an active node: %v", err)
	}
	m, err := l.NodeAction(admin, meta.NodeActionRequest{Node: "c1", Action: meta.NodeDrain, Reason: "disk"})
	if err != nil {
		t.Fatal(err)
	}
	// Reports from the epoch before the drain do not count.
	fh.mu.Lock()
	for pg := range m.PGCount {
		fh.reports = append(fh.reports, placement.PGHealth{PG: pg, Epoch: m.Epoch - 1, N: 6, MinHealthy: 6})
	}
	fh.mu.Unlock()
	if _, err := l.NodeAction(admin, meta.NodeActionRequest{Node: "c1", Action: meta.NodeDecommission}); !errors.Is(err, meta.ErrInvalid) || !strings.Contains(err.Error(), "pg 0: not yet verified") {
		t.Fatalf("decommission on stale reports: %v", err)
	}
	fh.mu.Lock()
	for i := range fh.reports {
		fh.reports[i].Epoch = m.Epoch
	}
	fh.reports[3].MinHealthy, fh.reports[3].Degraded = 5, 2
	fh.mu.Unlock()
	if _, err := l.NodeAction(admin, meta.NodeActionRequest{Node: "c1", Action: meta.NodeDecommission}); err == nil || !strings.Contains(err.Error(), "pg 3: 1 of 6 shards missing") {
		t.Fatalf("decommission with a degraded PG: %v", err)
	}
	fh.mu.Lock()
	fh.reports[3].MinHealthy, fh.reports[3].Degraded = 6, 0
	fh.mu.Unlock()
	m, err = l.NodeAction(admin, meta.NodeActionRequest{Node: "c1", Action: meta.NodeDecommission, Reason: "retired"})
	if err != nil {
		t.Fatal(err)
	}
	if nd, _ := m.Node("c1"); nd.State != placement.StateDecommissioned {
		t.Fatalf("state %s", nd.State)
	}
	log, err := l.AuditLog(ctxT(t), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range log {
		got = append(got, e.Principal+" "+e.Action+" "+e.Outcome)
	}
	want := "host1 node.drain refused,ops node.drain refused,ops node.decommission refused,ops node.drain ok," +
		"ops node.decommission refused,ops node.decommission refused,ops node.decommission ok"
	if strings.Join(got, ",") != want {
		t.Fatalf("audit:\n%s\nwant:\n%s", strings.Join(got, ","), want)
	}
}
