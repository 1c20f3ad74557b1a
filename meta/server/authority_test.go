package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/memstore"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
	"github.com/cofferhq/coffer/meta/fsm"
	"github.com/cofferhq/coffer/meta/metarpc"
	"github.com/cofferhq/coffer/placement"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
	"github.com/cofferhq/coffer/transport/pki/pkitest"
	"github.com/cofferhq/coffer/transport/quic"
	"github.com/cofferhq/coffer/transport/raftlayer"
	"github.com/cofferhq/coffer/transport/wire"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// quicMeta is one meta server with Raft over QUIC (transport/raftlayer) and the meta RPC
// served on the same endpoint, as a node runs it.
type quicMeta struct {
	ca     *pki.CA
	ep     *quic.Endpoint
	srv    *Server
	chunks *memstore.Chunks
}

// newQUICMeta starts a single meta server "meta-0" (a meta certificate) that has
// bootstrapped itself and leads. No timer proposes anything after start (TickInterval
// is an hour), so its log stays still while a test forges entries against it.
func newQUICMeta(t *testing.T) *quicMeta {
	t.Helper()
	ca := pkitest.NewCA(t)
	ep, err := quic.New(quic.Config{ListenAddr: "127.0.0.1:0", Identity: pkitest.Identity(t, ca, "meta-0", transport.RoleMeta)})
	if err != nil {
		t.Fatal(err)
	}
	q := &quicMeta{ca: ca, ep: ep, chunks: memstore.NewChunks()}
	q.srv, err = New(Config{
		ID: "meta-0", Addr: ep.Addr(), Dir: t.TempDir(), Layer: raftlayer.New(ep),
		Bootstrap: []meta.Server{{ID: "meta-0", Addr: ep.Addr(), Voter: true}},
		Chunks:    q.chunks, Now: time.Now,
		ChunkNotFound:    func(err error) bool { return errors.Is(err, chunkstore.ErrNotFound) },
		HeartbeatTimeout: 250 * time.Millisecond, ElectionTimeout: 250 * time.Millisecond, LeaderLeaseTimeout: 120 * time.Millisecond,
		TickInterval: time.Hour,
	})
	if err != nil {
		ep.Close()
		t.Fatal(err)
	}
	ep.SetHandler(metarpc.NewServer(q.srv, ep, q.srv))
	t.Cleanup(func() {
		q.srv.Close()
		ep.Close()
	})
	waitFor(t, "meta-0 to lead", q.srv.IsLeader)
	m := placement.Map{Epoch: 1, PGCount: 16, Profile: placement.DefaultProfile, Nodes: []placement.Node{{ID: "c1", Addr: "x:1", State: placement.StateActive}}}
	if err := q.srv.SetClusterMap(ctxT(t), m); err != nil {
		t.Fatal(err)
	}
	return q
}

// snapshot commits a snapshot to vault "v" (created on first use), locked in compliance
// mode for lock (none when zero).
func (q *quicMeta) snapshot(t *testing.T, lock time.Duration) meta.Snapshot {
	t.Helper()
	ctx := ctxT(t)
	if _, err := q.srv.GetVault(ctx, "v"); errors.Is(err, meta.ErrNotFound) {
		if _, err := q.srv.CreateVault(ctx, newVault("v")); err != nil {
			t.Fatal(err)
		}
	}
	s, err := q.srv.CommitSnapshot(ctx, storedSnapshot(t, q.chunks, "v", 3, 0))
	if err != nil {
		t.Fatal(err)
	}
	if lock > 0 {
		l := meta.Lock{Mode: meta.Compliance, Until: q.srv.fsm.Now().Add(lock)}
		if s, err = q.srv.SetLock(ctx, "v", s.ID, l, meta.Bypass{}); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func (q *quicMeta) exists(t *testing.T, s meta.Snapshot) bool {
	t.Helper()
	_, err := q.srv.fsm.GetSnapshot(s.Vault, s.ID)
	if err != nil && !errors.Is(err, meta.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

// raftPeer is an attacker's Raft transport: hashicorp/raft's NetworkTransport over the
// Coffer raft stream layer, on an endpoint holding id.
func raftPeer(t *testing.T, id *pki.Identity) (*raft.NetworkTransport, raft.RPCHeader) {
	t.Helper()
	ep, err := quic.New(quic.Config{Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: raftlayer.New(ep), MaxPool: 1, Timeout: 5 * time.Second,
		Logger: hclog.New(&hclog.LoggerOptions{Output: io.Discard}),
	})
	t.Cleanup(func() {
		trans.Close()
		ep.Close()
	})
	return trans, raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(id.Principal()), Addr: []byte(ep.Addr())}
}

// forgeAppendEntries sends, as leader of a higher term, Ticks that run cluster time past
// any lock of up to 15 minutes and then an admin's DeleteSnapshots of s, appended right
// after the target's last entry and marked committed. It returns the index the forged
// entries end at. (The attacker is handed the target's log position; it could probe for
// it with a stale-term AppendEntries.)
func forgeAppendEntries(t *testing.T, q *quicMeta, trans *raft.NetworkTransport, hdr raft.RPCHeader, s meta.Snapshot) (uint64, error) {
	t.Helper()
	st := q.srv.raft.Stats()
	last := q.srv.raft.LastIndex()
	lastTerm, err := strconv.ParseUint(st["last_log_term"], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	term := q.srv.raft.CurrentTerm() + 10
	codec := command.NewCodec()
	far := time.Now().Add(24 * time.Hour).UnixNano()
	var entries []*raft.Log
	add := func(b command.Body) {
		data, err := codec.Encode(command.Command{Time: far, Body: b})
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, &raft.Log{Index: last + uint64(len(entries)) + 1, Term: term, Type: raft.LogCommand, Data: data})
	}
	for range 15 { // each Tick raises the clock ceiling by a minute (and 1%)
		add(command.Tick{Elapsed: int64(fsm.MaxTickElapsed)})
	}
	add(command.DeleteSnapshots{Vault: s.Vault, IDs: []meta.SnapshotID{s.ID},
		By: meta.Principal{Name: "admin", Role: meta.RoleAdmin}, Action: "delete"})
	end := last + uint64(len(entries))
	req := &raft.AppendEntriesRequest{RPCHeader: hdr, Term: term, Leader: hdr.Addr,
		PrevLogEntry: last, PrevLogTerm: lastTerm, Entries: entries, LeaderCommitIndex: end}
	var resp raft.AppendEntriesResponse
	if err := trans.AppendEntries(raft.ServerID("meta-0"), raft.ServerAddress(q.ep.Addr()), req, &resp); err != nil {
		return end, err
	}
	if !resp.Success {
		return end, fmt.Errorf("forged AppendEntries answered but not appended (term %d, last log %d)", resp.Term, resp.LastLog)
	}
	return end, nil
}

// emptyFSMSnapshot is a valid FSM snapshot of a state machine holding nothing.
func emptyFSMSnapshot(t *testing.T) []byte {
	t.Helper()
	f, err := fsm.Open(t.TempDir(), fsm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink bufSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	return sink.Bytes()
}

type bufSink struct{ bytes.Buffer }

func (*bufSink) ID() string    { return "forged" }
func (*bufSink) Cancel() error { return nil }
func (*bufSink) Close() error  { return nil }

// TestRaftOnlyFromConfiguredMetaServers: a chunk node's key, or a meta certificate whose
// server is not in the Raft configuration, can neither append forged entries (Ticks and a
// DeleteSnapshots of a compliance-locked snapshot) nor install an FSM snapshot: the
// stream is refused before Raft reads it, the snapshot survives and the term is unchanged.
func TestRaftOnlyFromConfiguredMetaServers(t *testing.T) {
	attacks := []struct {
		name string
		cn   string
		role transport.Role
		snap bool // InstallSnapshot instead of AppendEntries
	}{
		{"chunk node AppendEntries", "chunk-0", transport.RoleNode, false},
		{"chunk node InstallSnapshot", "chunk-0", transport.RoleNode, true},
		{"meta certificate outside the configuration AppendEntries", "meta-9", transport.RoleMeta, false},
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			q := newQUICMeta(t)
			s := q.snapshot(t, 10*time.Minute)
			term := q.srv.raft.CurrentTerm()
			trans, hdr := raftPeer(t, pkitest.Identity(t, q.ca, a.cn, a.role))
			var err error
			var end uint64
			if a.snap {
				data := emptyFSMSnapshot(t)
				conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: "meta-0", Address: raft.ServerAddress(q.ep.Addr())}}}
				end = q.srv.raft.LastIndex() + 100
				req := &raft.InstallSnapshotRequest{RPCHeader: hdr, SnapshotVersion: raft.SnapshotVersionMax,
					Term: term + 10, Leader: hdr.Addr, LastLogIndex: end, LastLogTerm: term + 10,
					Size: int64(len(data)), Configuration: raft.EncodeConfiguration(conf), ConfigurationIndex: end}
				var resp raft.InstallSnapshotResponse
				err = trans.InstallSnapshot("meta-0", raft.ServerAddress(q.ep.Addr()), req, &resp, bytes.NewReader(data))
				if err == nil && !resp.Success {
					err = fmt.Errorf("forged InstallSnapshot answered but not installed (term %d)", resp.Term)
				}
			} else {
				end, err = forgeAppendEntries(t, q, trans, hdr, s)
			}
			if err == nil {
				t.Errorf("%s %q: forged Raft RPC accepted", a.role, a.cn)
				waitFor(t, "the forged entries to apply", func() bool { return q.srv.AppliedIndex() >= end })
			}
			if !q.exists(t, s) {
				t.Errorf("%s %q: the compliance-locked snapshot is gone", a.role, a.cn)
			}
			if got := q.srv.raft.CurrentTerm(); got != term {
				t.Errorf("%s %q: term %d → %d", a.role, a.cn, term, got)
			}
		})
	}
}

// call sends one meta RPC from a fresh client endpoint holding id.
func (q *quicMeta) call(ctx context.Context, t *testing.T, id *pki.Identity, method string, req any) error {
	t.Helper()
	ep, err := quic.New(quic.Config{Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	defer ep.Close()
	return wire.Call(ctx, ep, q.ep.Addr(), method, req, nil)
}

// TestDelegationOnlyFromConfiguredMetaServers: a chunk node's key (or a meta certificate
// outside the configuration) naming `as: admin`, or marking a request forwarded, is
// refused PermissionDenied and changes nothing; a chunk node may not set the cluster
// map; the configured meta server (a follower forwarding) is still honoured.
func TestDelegationOnlyFromConfiguredMetaServers(t *testing.T) {
	q := newQUICMeta(t)
	ctx := ctxT(t)
	admin := &meta.Principal{Name: "admin", Role: meta.RoleAdmin}
	s := q.snapshot(t, 0)
	m, _, err := q.srv.fsm.ClusterMap()
	if err != nil {
		t.Fatal(err)
	}
	chunk := pkitest.Identity(t, q.ca, "chunk-0", transport.RoleNode)
	for _, id := range []*pki.Identity{chunk, pkitest.Identity(t, q.ca, "meta-9", transport.RoleMeta)} {
		who := fmt.Sprintf("%s %q", id.Role(), id.Principal())
		for _, c := range []struct {
			method string
			req    map[string]any
		}{
			{metarpc.MethodDeleteSnapshots, map[string]any{"vault": s.Vault, "ids": []meta.SnapshotID{s.ID}, "as": admin}},
			{metarpc.MethodDeleteSnapshots, map[string]any{"vault": s.Vault, "ids": []meta.SnapshotID{s.ID}, "fwd": true}},
			{metarpc.MethodCreateEnrollToken, map[string]any{"vault": "v", "ttl": int64(time.Hour), "as": admin}},
		} {
			if err := q.call(ctx, t, id, c.method, c.req); transport.CodeOf(err) != transport.PermissionDenied {
				t.Errorf("%s: %s %v: %v, want PermissionDenied", who, c.method, c.req, err)
			}
		}
	}
	next := m
	next.Epoch++
	if err := q.call(ctx, t, chunk, metarpc.MethodSetClusterMap, map[string]any{"map": next}); transport.CodeOf(err) != transport.PermissionDenied {
		t.Errorf("chunk node SetClusterMap: %v, want PermissionDenied", err)
	}
	if !q.exists(t, s) {
		t.Error("the snapshot was deleted")
	}
	if toks, _, err := q.srv.ListEnrollTokens(ctx, true); err != nil || len(toks) != 0 {
		t.Errorf("enrollment tokens %v (%v), want none", toks, err)
	}
	if cur, _, err := q.srv.fsm.ClusterMap(); err != nil || cur.Epoch != m.Epoch {
		t.Errorf("cluster map epoch %d (%v), want %d", cur.Epoch, err, m.Epoch)
	}

	// The server in the configuration (what a follower forwarding presents) is honoured.
	self := pkitest.Identity(t, q.ca, "meta-0", transport.RoleMeta)
	if err := q.call(ctx, t, self, metarpc.MethodDeleteSnapshots, map[string]any{"vault": s.Vault, "ids": []meta.SnapshotID{s.ID}, "as": admin, "fwd": true}); err != nil {
		t.Fatalf("forwarded admin delete: %v", err)
	}
	if q.exists(t, s) {
		t.Error("the forwarded admin delete left the snapshot")
	}
	if err := q.call(ctx, t, self, metarpc.MethodSetClusterMap, map[string]any{"map": next}); err != nil {
		t.Fatalf("meta server SetClusterMap: %v", err)
	}
}

// TestCheckMetaPeer: meta authority needs a meta certificate of a server in the latest
// configuration; a server that has none yet (waiting to be added) admits any meta
// certificate and still nothing else.
func TestCheckMetaPeer(t *testing.T) {
	c := newCluster(t, 1, nil)
	c.leader()
	s := c.srv[0]
	for _, tc := range []struct {
		peer transport.Peer
		ok   bool
	}{
		{transport.Peer{Principal: "m0", Role: transport.RoleMeta}, true},
		{transport.Peer{Principal: "m0", Role: transport.RoleNode}, false},
		{transport.Peer{Principal: "m0", Role: transport.RoleAdmin}, false},
		{transport.Peer{Principal: "m7", Role: transport.RoleMeta}, false},
	} {
		if err := s.CheckMetaPeer(tc.peer); (err == nil) != tc.ok || (err != nil && !errors.Is(err, meta.ErrDenied)) {
			t.Errorf("bootstrapped: %s %q: %v, want allowed=%v", tc.peer.Role, tc.peer.Principal, err, tc.ok)
		}
		if s.IsServer(tc.peer.Principal) != (tc.peer.Principal == "m0") {
			t.Errorf("IsServer(%q) = %v", tc.peer.Principal, !(tc.peer.Principal == "m0"))
		}
	}

	_, tr := raft.NewInmemTransport("m9")
	cfg := c.config(0)
	cfg.ID, cfg.Addr, cfg.Dir, cfg.Transport, cfg.Bootstrap = "m9", "m9", t.TempDir(), tr, nil
	fresh, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if err := fresh.CheckMetaPeer(transport.Peer{Principal: "anyone", Role: transport.RoleMeta}); err != nil {
		t.Errorf("unbootstrapped server refused a meta certificate: %v", err)
	}
	if err := fresh.CheckMetaPeer(transport.Peer{Principal: "m0", Role: transport.RoleNode}); !errors.Is(err, meta.ErrDenied) {
		t.Errorf("unbootstrapped server: chunk node certificate: %v, want ErrDenied", err)
	}
}
