package server

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/placement"
	"github.com/hashicorp/raft"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestCommitChecksChunks(t *testing.T) {
	c := newCluster(t, 3, nil)
	ctx := ctxT(t)
	l := c.srv[c.leader()]

	v, err := l.CreateVault(ctx, newVault("photos"))
	if err != nil {
		t.Fatal(err)
	}
	if v.Created.IsZero() || v.Profile != placement.DefaultProfile {
		t.Fatalf("created vault %+v: want a cluster time and the map's profile", v)
	}
	if _, err := l.CreateVault(ctx, newVault("photos")); !errors.Is(err, meta.ErrExists) {
		t.Fatalf("duplicate vault: %v", err)
	}
	for name, bad := range map[string]meta.Vault{
		"empty id": {KeyWraps: [][]byte{{1}}},
		"no wraps": {ID: "x"},
		"profile":  {ID: "x", KeyWraps: [][]byte{{1}}, Profile: placement.Profile{K: 0, M: 2}},
	} {
		if _, err := l.CreateVault(ctx, bad); !errors.Is(err, meta.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}

	good := storedSnapshot(t, c.chunks, "photos", 50, 0)
	got, err := l.CommitSnapshot(ctx, good)
	if err != nil {
		t.Fatal(err)
	}
	if got.Time.IsZero() || got.ID != good.ID {
		t.Fatalf("committed %+v", got)
	}
	if _, err := l.CommitSnapshot(ctx, good); !errors.Is(err, meta.ErrExists) {
		t.Fatalf("recommit: %v", err)
	}

	missing := storedSnapshot(t, c.chunks, "photos", 20, 1)
	if _, err := l.CommitSnapshot(ctx, missing); !errors.Is(err, meta.ErrMissingChunks) {
		t.Fatalf("commit with a missing chunk: %v, want ErrMissingChunks", err)
	}
	if _, err := l.GetSnapshot(ctx, "photos", missing.ID); !errors.Is(err, meta.ErrNotFound) {
		t.Fatalf("refused snapshot was recorded: %v", err)
	}
	noRefs := good
	noRefs.ID, noRefs.Refs = chunk.ID{1}, nil
	if _, err := l.CommitSnapshot(ctx, noRefs); !errors.Is(err, meta.ErrInvalid) {
		t.Fatalf("no refs: %v", err)
	}
	wrongTree := storedSnapshot(t, c.chunks, "photos", 3, 0)
	wrongTree.Tree = chunk.ID{7}
	if _, err := l.CommitSnapshot(ctx, wrongTree); !errors.Is(err, meta.ErrInvalid) {
		t.Fatalf("tree not listed: %v", err)
	}
	otherVault := storedSnapshot(t, c.chunks, "nope", 3, 0)
	if _, err := l.CommitSnapshot(ctx, otherVault); !errors.Is(err, meta.ErrNotFound) {
		t.Fatalf("unknown vault: %v", err)
	}

	list, err := l.ListSnapshots(ctx, "photos")
	if err != nil || len(list) != 1 || list[0].ID != good.ID {
		t.Fatalf("list: %v %v", list, err)
	}
	// The first leader proposed the initial map.
	waitFor(t, "initial map", func() bool {
		m, err := l.ClusterMap(ctx)
		return err == nil && m.Epoch == 1
	})
	if err := l.SetClusterMap(ctx, placement.Map{Epoch: 3, PGCount: 16, Profile: placement.DefaultProfile}); !errors.Is(err, meta.ErrInvalid) {
		t.Fatalf("epoch skip: %v", err)
	}
	if err := l.SetClusterMap(ctx, placement.Map{Epoch: 2, PGCount: 32, Profile: placement.DefaultProfile}); err != nil {
		t.Fatal(err)
	}
	// Cluster time advances with ticks.
	t0 := l.fsm.Now()
	waitFor(t, "cluster time to advance", func() bool { return l.fsm.Now().After(t0) })
}

func TestFollowersRefuse(t *testing.T) {
	c := newCluster(t, 3, nil)
	ctx := ctxT(t)
	li := c.leader()
	f := c.srv[(li+1)%3]
	waitFor(t, "follower to learn the leader", func() bool { return f.LeaderAddr() == addrOf(li) })
	calls := map[string]error{}
	_, calls["CreateVault"] = f.CreateVault(ctx, newVault("a"))
	_, calls["GetVault"] = f.GetVault(ctx, "a")
	_, calls["ListVaults"] = f.ListVaults(ctx)
	_, calls["CommitSnapshot"] = f.CommitSnapshot(ctx, meta.Snapshot{})
	_, calls["ClusterMap"] = f.ClusterMap(ctx)
	calls["SetClusterMap"] = f.SetClusterMap(ctx, placement.Map{})
	for name, err := range calls {
		var nl *meta.NotLeaderError
		if !errors.As(err, &nl) || !errors.Is(err, meta.ErrNotLeader) || nl.LeaderAddr != addrOf(li) {
			t.Errorf("%s on a follower: %v, want NotLeaderError{%s}", name, err, addrOf(li))
		}
	}
	rs, err := f.RaftStatus(ctx)
	if err != nil || rs.LeaderAddr != addrOf(li) || len(rs.Servers) != 3 {
		t.Fatalf("follower RaftStatus: %+v %v", rs, err)
	}
}

// TestNoAcknowledgedCommitLost kills the leader during a run of commits: every commit
// that returned success is on the new leader afterwards.
func TestNoAcknowledgedCommitLost(t *testing.T) {
	c := newCluster(t, 3, nil)
	ctx := ctxT(t)
	li := c.leader()
	if _, err := c.srv[li].CreateVault(ctx, newVault("v")); err != nil {
		t.Fatal(err)
	}
	snaps := make([]meta.Snapshot, 50)
	for i := range snaps {
		snaps[i] = storedSnapshot(t, c.chunks, "v", 2, 0)
	}
	var acked []meta.SnapshotID
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i, s := range snaps {
			// Always send to whoever leads now (the old leader until it dies).
			mu.Lock()
			var target *Server
			for _, srv := range c.srv {
				if srv != nil && srv.IsLeader() {
					target = srv
				}
			}
			mu.Unlock()
			if target == nil {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			if _, err := target.CommitSnapshot(ctx, s); err == nil {
				acked = append(acked, s.ID)
			}
			if i == 20 {
				mu.Lock()
				c.srv[li].raft.Shutdown() // kill mid-run; Close later
				mu.Unlock()
			}
		}
	}()
	<-done
	mu.Lock()
	old := c.srv[li]
	c.srv[li] = nil
	mu.Unlock()
	old.Close()

	ni := c.leader()
	if ni == li {
		t.Fatal("dead server still leads")
	}
	nl := c.srv[ni]
	if len(acked) < 20 {
		t.Fatalf("only %d commits acknowledged", len(acked))
	}
	for _, id := range acked {
		if _, err := nl.GetSnapshot(ctx, "v", id); err != nil {
			t.Fatalf("acknowledged snapshot %s lost: %v", id.Str(), err)
		}
	}
	// Further commits succeed on the new leader.
	if _, err := nl.CommitSnapshot(ctx, storedSnapshot(t, c.chunks, "v", 2, 0)); err != nil {
		t.Fatal(err)
	}
}

func TestRestartCatchesUp(t *testing.T) {
	c := newCluster(t, 3, nil)
	ctx := ctxT(t)
	li := c.leader()
	fi := (li + 1) % 3
	if _, err := c.srv[li].CreateVault(ctx, newVault("v")); err != nil {
		t.Fatal(err)
	}
	c.kill(fi)
	var ids []meta.SnapshotID
	for range 5 {
		s, err := c.srv[li].CommitSnapshot(ctx, storedSnapshot(t, c.chunks, "v", 2, 0))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.ID)
	}
	c.restart(fi)
	f := c.srv[fi]
	waitFor(t, "restarted follower to catch up", func() bool {
		for _, id := range ids {
			if _, err := f.fsm.GetSnapshot("v", id); err != nil {
				return false
			}
		}
		return true
	})
}

func TestSnapshotInstallToRestartedFollower(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) {
		cfg.SnapshotThreshold = 4
		cfg.TrailingLogs = 2
		cfg.SnapshotInterval = 100 * time.Millisecond
	})
	ctx := ctxT(t)
	li := c.leader()
	fi := (li + 1) % 3
	if _, err := c.srv[li].CreateVault(ctx, newVault("v")); err != nil {
		t.Fatal(err)
	}
	c.kill(fi)
	var ids []meta.SnapshotID
	for range 30 {
		s, err := c.srv[li].CommitSnapshot(ctx, storedSnapshot(t, c.chunks, "v", 2, 0))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.ID)
	}
	// Compact the leader's log so the follower can only catch up from a snapshot.
	if err := c.srv[li].Snapshot(); err != nil {
		t.Fatal(err)
	}
	c.restart(fi)
	f := c.srv[fi]
	// NB: the FSM can hold the restored data a moment before raft records the installed
	// snapshot, so wait for both.
	waitFor(t, "snapshot install on the follower", func() bool {
		for _, id := range ids {
			if _, err := f.fsm.GetSnapshot("v", id); err != nil {
				return false
			}
		}
		return f.raft.Stats()["last_snapshot_index"] != "0"
	})
	// A restart after the install keeps the state (FSM and raft agree on disk).
	c.kill(fi)
	c.restart(fi)
	for _, id := range ids {
		if _, err := c.srv[fi].fsm.GetSnapshot("v", id); err != nil {
			t.Fatalf("snapshot %s gone after restart: %v", id.Str(), err)
		}
	}
}

func TestAddVoter(t *testing.T) {
	c := newCluster(t, 3, nil)
	ctx := ctxT(t)
	li := c.leader()
	if _, err := c.srv[li].CreateVault(ctx, newVault("v")); err != nil {
		t.Fatal(err)
	}
	// A fourth, empty server joins without bootstrap.
	dir := t.TempDir()
	_, tr := raft.NewInmemTransport("m3")
	c.trans = append(c.trans, tr)
	c.n = 4
	c.connect()
	cfg := c.config(0)
	cfg.ID, cfg.Addr, cfg.Dir, cfg.Transport, cfg.Bootstrap = "m3", "m3", dir, tr, nil
	joiner, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer joiner.Close()
	l := c.srv[li]
	l.cfg.PeerApplied = func(ctx context.Context, id, addr string) (uint64, error) {
		return joiner.AppliedIndex(), nil
	}
	if err := l.AddVoter(ctx, "m3", "m3"); err != nil {
		t.Fatal(err)
	}
	rs, err := l.RaftStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	voters := 0
	for _, s := range rs.Servers {
		if s.Voter {
			voters++
		}
	}
	if voters != 4 {
		t.Fatalf("%d voters after AddVoter, want 4: %+v", voters, rs.Servers)
	}
	if _, err := joiner.fsm.Vault("v"); err != nil {
		t.Fatalf("promoted voter lacks earlier state: %v", err)
	}
}

// TestLeaderReportsFollowerReachability: the leader's RaftStatus marks a follower
// reachable exactly when it answers PeerApplied.
func TestLeaderReportsFollowerReachability(t *testing.T) {
	c := newCluster(t, 3, nil)
	ctx := ctxT(t)
	li := c.leader()
	down := addrOf((li + 1) % 3)
	l := c.srv[li]
	l.cfg.PeerApplied = func(ctx context.Context, id, addr string) (uint64, error) {
		if addr == down {
			return 0, errors.New("no answer")
		}
		return 1, nil
	}
	rs, err := l.RaftStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs.Servers) != 3 {
		t.Fatalf("servers %+v", rs.Servers)
	}
	for _, s := range rs.Servers {
		if want := s.Addr != down; s.Reachable != want {
			t.Errorf("server %s reachable=%v, want %v", s.ID, s.Reachable, want)
		}
	}
}
