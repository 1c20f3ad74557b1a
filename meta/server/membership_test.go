package server

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/placement"
	"github.com/cofferhq/coffer/transport"
	"github.com/hashicorp/raft"
)

func adminCtx(t *testing.T) context.Context {
	return meta.WithPrincipal(ctxT(t), meta.Principal{Name: "ops", Role: meta.RoleAdmin})
}

// downSet is a controllable PeerApplied: servers in it do not answer.
type downSet struct {
	mu   sync.Mutex
	down map[string]bool
	srv  func(addr string) *Server
}

func (d *downSet) applied(_ context.Context, id, addr string) (uint64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.down[addr] {
		return 0, errors.New("no answer")
	}
	if s := d.srv(addr); s != nil {
		return s.AppliedIndex(), nil
	}
	return 0, errors.New("no such server")
}

func voterIDs(rs meta.RaftStatus) []string {
	var out []string
	for _, s := range rs.Servers {
		if s.Voter {
			out = append(out, s.ID)
		}
	}
	return out
}

func auditHas(t *testing.T, s *Server, action, target, outcome string) {
	t.Helper()
	log, err := s.AuditLog(ctxT(t), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range log {
		if e.Action == action && e.Target == target && e.Outcome == outcome {
			return
		}
	}
	t.Fatalf("no audit entry %s %s %s in %+v", action, target, outcome, log)
}

func TestChangeMetaRemoveRefusals(t *testing.T) {
	ds := &downSet{down: map[string]bool{}}
	var c *cluster
	c = newCluster(t, 3, func(cfg *Config) { cfg.PeerApplied = ds.applied })
	ds.srv = func(addr string) *Server {
		for i, s := range c.srv {
			if addrOf(i) == addr {
				return s
			}
		}
		return nil
	}
	li := c.leader()
	l := c.srv[li]
	a, b := addrOf((li+1)%3), addrOf((li+2)%3)

	// Not an admin: refused and audited.
	agent := meta.WithPrincipal(ctxT(t), meta.Principal{Name: "laptop", Role: meta.RoleBackupAgent})
	if _, err := l.ChangeMeta(agent, meta.MetaChange{Action: meta.MetaRemove, ID: a}); !errors.Is(err, meta.ErrDenied) {
		t.Fatalf("agent remove: %v, want ErrDenied", err)
	}
	auditHas(t, l, "meta.remove", a, meta.AuditRefused)

	// Unknown ID.
	_, err := l.ChangeMeta(adminCtx(t), meta.MetaChange{Action: meta.MetaRemove, ID: "nope"})
	if !errors.Is(err, meta.ErrNotFound) || !strings.Contains(err.Error(), `"nope" is not a meta server`) {
		t.Fatalf("unknown remove: %v", err)
	}
	if _, err := l.ChangeMeta(adminCtx(t), meta.MetaChange{Action: "promote", ID: a}); !errors.Is(err, meta.ErrInvalid) {
		t.Fatalf("unknown action: %v", err)
	}

	// b does not answer: removing a would leave {leader, b} with one answering.
	ds.mu.Lock()
	ds.down[b] = true
	ds.mu.Unlock()
	_, err = l.ChangeMeta(adminCtx(t), meta.MetaChange{Action: meta.MetaRemove, ID: a, Reason: "retire"})
	if !errors.Is(err, meta.ErrInvalid) || !strings.Contains(err.Error(), "would lose the quorum") || !strings.Contains(err.Error(), "not answering: "+b) {
		t.Fatalf("quorum-losing remove: %v", err)
	}
	auditHas(t, l, "meta.remove", a, meta.AuditRefused)
	if rs, _ := l.RaftStatus(ctxT(t)); len(voterIDs(rs)) != 3 {
		t.Fatalf("refused removal changed the voters: %v", voterIDs(rs))
	}

	// Removing the silent one is fine: {leader, a} both answer.
	if _, err := l.ChangeMeta(adminCtx(t), meta.MetaChange{Action: meta.MetaRemove, ID: b}); err != nil {
		t.Fatalf("remove the silent voter: %v", err)
	}
	auditHas(t, l, "meta.remove", b, meta.AuditOK)
	if l.IsServer(b) {
		t.Fatalf("%s still in the configuration", b)
	}
	// The removed server's certificate no longer has meta authority here.
	if err := l.CheckMetaPeer(metaPeer(b)); !errors.Is(err, meta.ErrDenied) {
		t.Fatalf("removed server still has meta authority: %v", err)
	}

	// One change at a time.
	l.memberMu.Lock()
	_, err = l.ChangeMeta(adminCtx(t), meta.MetaChange{Action: meta.MetaRemove, ID: a})
	l.memberMu.Unlock()
	if !errors.Is(err, meta.ErrInvalid) || !strings.Contains(err.Error(), "in progress") {
		t.Fatalf("concurrent change: %v", err)
	}
	// Two voters, a silent: removing a leaves the leader alone, a majority of one.
	ds.mu.Lock()
	ds.down[a] = true
	ds.mu.Unlock()
	if _, err := l.ChangeMeta(adminCtx(t), meta.MetaChange{Action: meta.MetaRemove, ID: a}); err != nil {
		t.Fatalf("remove to one voter: %v", err)
	}
	// The last voter is never removed.
	_, err = l.ChangeMeta(adminCtx(t), meta.MetaChange{Action: meta.MetaRemove, ID: addrOf(li)})
	if !errors.Is(err, meta.ErrInvalid) || !strings.Contains(err.Error(), "last voter") {
		t.Fatalf("remove the last voter: %v", err)
	}
	// The group still works.
	if _, err := l.CreateVault(ctxT(t), newVault("after")); err != nil {
		t.Fatal(err)
	}
}

func TestChangeMetaAdd(t *testing.T) {
	c := newCluster(t, 3, nil)
	li := c.leader()
	l := c.srv[li]
	if _, err := l.CreateVault(ctxT(t), newVault("v")); err != nil {
		t.Fatal(err)
	}
	_, tr := raft.NewInmemTransport("m3")
	c.trans = append(c.trans, tr)
	c.n = 4
	c.connect()
	cfg := c.config(0)
	cfg.ID, cfg.Addr, cfg.Dir, cfg.Transport, cfg.Bootstrap, cfg.InitialMap = "m3", "m3", t.TempDir(), tr, nil, nil
	joiner, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer joiner.Close()
	byAddr := func(addr string) *Server {
		if addr == "m3" {
			return joiner
		}
		for i, s := range c.srv {
			if addrOf(i) == addr {
				return s
			}
		}
		return nil
	}
	l.cfg.PeerApplied = func(_ context.Context, id, addr string) (uint64, error) {
		if s := byAddr(addr); s != nil {
			return s.AppliedIndex(), nil
		}
		return 0, errors.New("no answer")
	}
	l.cfg.PeerStatus = func(ctx context.Context, addr string) (meta.RaftStatus, error) {
		if s := byAddr(addr); s != nil {
			return s.RaftStatus(ctx)
		}
		return meta.RaftStatus{}, errors.New("no answer")
	}
	for _, tc := range []struct {
		req  meta.MetaChange
		want error
		msg  string
	}{
		{meta.MetaChange{Action: meta.MetaAdd, ID: "m3"}, meta.ErrInvalid, "empty address"},
		{meta.MetaChange{Action: meta.MetaAdd, ID: "m9", Addr: "m9"}, meta.ErrInvalid, "no meta server answers at m9"},
		{meta.MetaChange{Action: meta.MetaAdd, ID: "m7", Addr: "m3"}, meta.ErrInvalid, `is "m3", not "m7"`},
		{meta.MetaChange{Action: meta.MetaAdd, ID: addrOf(li), Addr: addrOf(li)}, meta.ErrExists, "already a voter"},
		{meta.MetaChange{Action: meta.MetaAdd, ID: "m8", Addr: addrOf(li)}, meta.ErrInvalid, "belongs to meta server"},
	} {
		_, err := l.ChangeMeta(adminCtx(t), tc.req)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%+v: %v, want %v naming %q", tc.req, err, tc.want, tc.msg)
		}
	}
	// A server that already belongs to a configuration is refused (here: a voter's
	// identity at an unused address is impossible, so ask for a voter's own view).
	if rs, err := l.ChangeMeta(adminCtx(t), meta.MetaChange{Action: meta.MetaAdd, ID: "m3", Addr: "m3", Reason: "grow"}); err != nil {
		t.Fatalf("add m3: %v", err)
	} else if v := voterIDs(rs); len(v) != 4 {
		t.Fatalf("voters after add: %v", v)
	}
	auditHas(t, l, "meta.add", "m3", meta.AuditOK)
	if _, err := joiner.fsm.Vault("v"); err != nil {
		t.Fatalf("new voter lacks earlier state: %v", err)
	}
	ms, err := l.MetaServers(ctxT(t))
	if err != nil || len(ms) != 4 {
		t.Fatalf("MetaServers: %+v %v", ms, err)
	}
	// A voter's status is refused as a fresh server (it has a configuration).
	l.cfg.PeerStatus = func(ctx context.Context, addr string) (meta.RaftStatus, error) {
		rs, err := joiner.RaftStatus(ctx)
		rs.Self = "m5"
		return rs, err
	}
	if _, err := l.ChangeMeta(adminCtx(t), meta.MetaChange{Action: meta.MetaAdd, ID: "m5", Addr: "m5"}); !errors.Is(err, meta.ErrInvalid) || !strings.Contains(err.Error(), "already belongs to a Raft configuration") {
		t.Fatalf("add a server of another configuration: %v", err)
	}
}

func TestNodeAddFromCandidates(t *testing.T) {
	cands := map[placement.NodeID]placement.Node{"c2": {ID: "c2", Addr: "y:2", Domain: "rack-b"}}
	c := newCluster(t, 1, func(cfg *Config) {
		cfg.Candidate = func(id placement.NodeID) (placement.Node, bool) { n, ok := cands[id]; return n, ok }
	})
	l := c.srv[c.leader()]
	waitFor(t, "initial map", func() bool { _, err := l.ClusterMap(ctxT(t)); return err == nil })
	if _, err := l.NodeAction(adminCtx(t), meta.NodeActionRequest{Node: "c9", Action: meta.NodeAdd}); !errors.Is(err, meta.ErrNotFound) || !strings.Contains(err.Error(), "pending") {
		t.Fatalf("unknown node: %v", err)
	}
	if _, err := l.NodeAction(adminCtx(t), meta.NodeActionRequest{Node: "c1", Action: meta.NodeAdd}); !errors.Is(err, meta.ErrExists) {
		t.Fatalf("node already in the map: %v", err)
	}
	agent := meta.WithPrincipal(ctxT(t), meta.Principal{Name: "laptop", Role: meta.RoleBackupAgent})
	if _, err := l.NodeAction(agent, meta.NodeActionRequest{Node: "c2", Action: meta.NodeAdd}); !errors.Is(err, meta.ErrDenied) {
		t.Fatalf("agent: %v", err)
	}
	m, err := l.NodeAction(adminCtx(t), meta.NodeActionRequest{Node: "c2", Action: meta.NodeAdd, Weight: 2, Reason: "new rack"})
	if err != nil {
		t.Fatal(err)
	}
	n, ok := m.Node("c2")
	if !ok || n.State != placement.StateJoining || n.Addr != "y:2" || n.Domain != "rack-b" || n.Weight != 2 {
		t.Fatalf("added node %+v %v", n, ok)
	}
	auditHas(t, l, "node.add", "c2", meta.AuditOK)
	auditHas(t, l, "node.add", "c9", meta.AuditRefused)
	// Then rebalance apply brings it in.
	m, err = l.NodeAction(adminCtx(t), meta.NodeActionRequest{Action: meta.RebalanceApply})
	if n, _ := m.Node("c2"); err != nil || n.State != placement.StateActive {
		t.Fatalf("rebalance apply: %+v %v", n, err)
	}
}

func metaPeer(id string) transport.Peer {
	return transport.Peer{Principal: id, Role: transport.RoleMeta}
}
