package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/repair"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/placement"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/wire"
)

// fakeNodes answers "node.Status" for the nodes it knows; other addresses are unreachable.
type fakeNodes struct {
	status map[string]meta.NodeStatus // by address

	mu    sync.Mutex
	calls []string
}

func (f *fakeNodes) Call(ctx context.Context, addr, method string, body []byte) ([]byte, error) {
	f.mu.Lock()
	f.calls = append(f.calls, addr)
	f.mu.Unlock()
	if _, hasDeadline := ctx.Deadline(); !hasDeadline {
		return nil, errors.New("call without a deadline")
	}
	if method != "node.Status" {
		return nil, transport.Errorf(transport.UnknownMethod, "unknown method %q", method)
	}
	var req struct{}
	if err := wire.Unmarshal(body, &req); err != nil {
		return nil, transport.Errorf(transport.Invalid, "bad request: %v", err)
	}
	st, ok := f.status[addr]
	if !ok {
		return nil, fmt.Errorf("dial %s: %w", addr, transport.ErrUnreachable)
	}
	return wire.Marshal(st)
}

func testMap() placement.Map {
	return placement.Map{Epoch: 7, PGCount: 256, Profile: placement.Profile{K: 4, M: 2}, Nodes: []placement.Node{
		{ID: "c1", Addr: "10.0.0.1:7000", Domain: "rack1", State: placement.StateActive},
		{ID: "c2", Addr: "10.0.0.2:7000", Domain: "rack2", State: placement.StateDraining},
		{ID: "m1", Addr: "10.0.0.9:7000", Domain: "rack3", State: placement.StateActive}, // meta+chunk
		{ID: "c3", Addr: "10.0.0.3:7000", Domain: "rack1", State: placement.StateDown},
	}}
}

func testRaft() meta.RaftStatus {
	return meta.RaftStatus{Leader: "m1", LeaderAddr: "10.0.0.9:7000", Term: 3, CommitIndex: 120, AppliedIndex: 119,
		Servers: []meta.Server{
			{ID: "m1", Addr: "10.0.0.9:7000", Voter: true, Leader: true, Reachable: true},
			{ID: "m2", Addr: "10.0.0.10:7000", Voter: true, Reachable: true},
			{ID: "m3", Addr: "10.0.0.11:7000", Voter: false, Reachable: false},
		}}
}

func TestStatusTargetsMergesMapAndMetaServers(t *testing.T) {
	rows := statusTargets(testMap(), testRaft())
	var ids []string
	for _, r := range rows {
		ids = append(ids, r.ID)
		if r.State != nodeDown {
			t.Errorf("%s starts %q, want down until it answers", r.ID, r.State)
		}
	}
	if want := []string{"c1", "c2", "c3", "m1", "m2", "m3"}; !reflect.DeepEqual(ids, want) {
		t.Fatalf("ids %v, want %v", ids, want)
	}
	byID := map[string]nodeRow{}
	for _, r := range rows {
		byID[r.ID] = r
	}
	if r := byID["m1"]; !reflect.DeepEqual(r.Roles, []string{"chunk", "meta"}) || r.Domain != "rack3" {
		t.Errorf("m1 (in map and raft) %+v", r)
	}
	if r := byID["m2"]; !reflect.DeepEqual(r.Roles, []string{"meta"}) || r.Addr != "10.0.0.10:7000" || r.MapState != "" {
		t.Errorf("m2 (raft only) %+v", r)
	}
	if r := byID["c2"]; r.MapState != "draining" {
		t.Errorf("c2 map state %q", r.MapState)
	}
	// A meta server known to Raft by another ID but at a mapped address is the same node.
	rs := meta.RaftStatus{Servers: []meta.Server{{ID: "raft-c1", Addr: "10.0.0.1:7000"}}}
	rows = statusTargets(testMap(), rs)
	if len(rows) != 4 {
		t.Errorf("address match not merged: %+v", rows)
	}
}

func TestQueryNodesUpAndDown(t *testing.T) {
	f := &fakeNodes{status: map[string]meta.NodeStatus{
		"10.0.0.1:7000": {ID: "c1", Roles: []string{"chunk"}, Domain: "rack1",
			Shards: chunkstore.ShardStats{Shards: 10, Bytes: 4096, Capacity: 1 << 30},
			Repair: &repair.Status{Node: "c1", Running: true, PGsLed: 40, PGsDone: 12, ShardsRebuilt: 77,
				Unreadable: []string{"pg 9: chunk abc: 3 of 6 shards usable, need 4"}}},
		"10.0.0.9:7000":  {ID: "m1", Roles: []string{"meta", "chunk"}, Domain: "rack3", Shards: chunkstore.ShardStats{Shards: 2, Bytes: 100, Corrupt: 3}},
		"10.0.0.10:7000": {ID: "m2", Roles: []string{"meta"}},
	}}
	rows := queryNodes(context.Background(), f, statusTargets(testMap(), testRaft()))
	got := map[string]nodeRow{}
	for _, r := range rows {
		got[r.ID] = r
	}
	if len(f.calls) != 6 {
		t.Errorf("%d calls, want one per node: %v", len(f.calls), f.calls)
	}
	for id, want := range map[string]string{"c1": nodeUp, "m1": nodeUp, "m2": nodeUp, "c2": nodeDown, "c3": nodeDown, "m3": nodeDown} {
		if got[id].State != want {
			t.Errorf("%s state %q, want %q", id, got[id].State, want)
		}
	}
	if r := got["c1"]; r.Shards != 10 || r.Bytes != 4096 || r.Capacity != 1<<30 || r.Error != "" || r.Damaged != 0 {
		t.Errorf("c1 %+v", r)
	}
	if r := got["m1"]; !reflect.DeepEqual(r.Roles, []string{"meta", "chunk"}) || r.Damaged != 3 {
		t.Errorf("m1 roles from its own status: %+v", r)
	}
	if r := got["c2"]; !strings.Contains(r.Error, "unreachable") || r.MapState != "draining" {
		t.Errorf("c2 %+v", r)
	}

	st := clusterStatus{Raft: testRaft(), MapEpoch: 7, PGCount: 256, Profile: "4+2", Nodes: rows}
	var buf bytes.Buffer
	printClusterStatus(&buf, st)
	out := buf.String()
	for _, want := range []string{
		"leader m1 (10.0.0.9:7000), term 3, commit index 120, applied 119",
		"epoch 7, 256 PGs, erasure coding 4+2",
		"3 up, 3 down",
		"Meta servers:",
		"Repair:",
		"c1    repair  12/40",
		"UNREADABLE pg 9: chunk abc: 3 of 6 shards usable, need 4 (led by c1)",
		"Nodes:",
		"m1: 3 damaged segment records since it started (left to repair",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	for _, row := range []struct{ id, fields string }{
		{"c1", "c1 10.0.0.1:7000 chunk rack1 up active 10 4.00 KiB 1.00 GiB"},
		{"c3", "c3 10.0.0.3:7000 chunk rack1 down down 0 0 B -"},
		{"m2", "m2 10.0.0.10:7000 meta - up - 0 0 B -"},
		{"m3 (raft)", "m3 10.0.0.11:7000 no no no"},
	} {
		found := false
		for _, line := range strings.Split(out, "\n") {
			if strings.Join(strings.Fields(line), " ") == row.fields {
				found = true
			}
		}
		if !found {
			t.Errorf("no line %q for %s:\n%s", row.fields, row.id, out)
		}
	}

	// A follower's view (its leader did not answer it) marks what it cannot know.
	partial := st
	partial.Raft.Self = "m2"
	buf.Reset()
	printClusterStatus(&buf, partial)
	for _, want := range []string{"as seen by m2, a follower the leader did not answer", "m3  10.0.0.11:7000  no     no      ?", "m2  10.0.0.10:7000  yes    no      yes"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("follower's view lacks %q:\n%s", want, buf.String())
		}
	}

	buf.Reset()
	if err := writeJSON(&buf, st); err != nil {
		t.Fatal(err)
	}
	m, _ := decodeKeys(t, buf.Bytes())
	requireKeys(t, m, "raft", "nodes", "map_epoch", "profile")
	raft := m["raft"].(map[string]any)
	requireKeys(t, raft, "leader", "term", "commit_index", "servers")
	nodes := m["nodes"].([]any)
	if len(nodes) != 6 {
		t.Fatalf("%d nodes", len(nodes))
	}
	requireKeys(t, nodes[0].(map[string]any), "id", "addr", "roles", "domain", "state", "shards", "bytes", "capacity")
	if m["map_epoch"] != 7.0 || m["profile"] != "4+2" {
		t.Errorf("%v", m)
	}
	var back clusterStatus
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil || !reflect.DeepEqual(back.Nodes, st.Nodes) {
		t.Errorf("round trip: %v", err)
	}
}

func TestQueryNodesCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c := transport.Caller(callerFunc(func(ctx context.Context, addr, method string, body []byte) ([]byte, error) {
		return nil, ctx.Err()
	}))
	rows := queryNodes(ctx, c, statusTargets(testMap(), testRaft()))
	for _, r := range rows {
		if r.State != nodeDown || r.Error == "" {
			t.Errorf("%+v", r)
		}
	}
}

type callerFunc func(ctx context.Context, addr, method string, body []byte) ([]byte, error)

func (f callerFunc) Call(ctx context.Context, addr, method string, body []byte) ([]byte, error) {
	return f(ctx, addr, method, body)
}

func TestChunkAddrsSkipsUnusableNodes(t *testing.T) {
	m := testMap()
	m.Nodes = append(m.Nodes,
		placement.Node{ID: "c4", Addr: "10.0.0.4:7000", State: placement.StateOut},
		placement.Node{ID: "c5", Addr: "10.0.0.5:7000", State: placement.StateDecommissioned},
		placement.Node{ID: "c6", Addr: "10.0.0.6:7000", State: placement.StateJoining},
		placement.Node{ID: "c7", State: placement.StateActive})
	want := []string{"10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.9:7000", "10.0.0.6:7000"}
	if got := chunkAddrs(m); !reflect.DeepEqual(got, want) {
		t.Errorf("chunkAddrs = %v, want %v", got, want)
	}
	s := &session{clusterMap: placement.Map{Epoch: 3}}
	if err := s.needChunks(); err == nil || !strings.Contains(err.Error(), "epoch 3") {
		t.Errorf("needChunks with none: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("closing an empty session: %v", err)
	}
}
