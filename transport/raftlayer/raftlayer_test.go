package raftlayer_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
	"github.com/cofferhq/coffer/transport/pki/pkitest"
	"github.com/cofferhq/coffer/transport/quic"
	"github.com/cofferhq/coffer/transport/raftlayer"
)

// counterFSM records commands (index, value) idempotently, so a command retried after a
// leadership change counts once; it reports the sum of values and how many indexes it has.
type counterFSM struct {
	mu   sync.Mutex
	vals map[uint64]uint64
}

func (f *counterFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.vals == nil {
		f.vals = make(map[uint64]uint64)
	}
	f.vals[binary.BigEndian.Uint64(l.Data[:8])] = binary.BigEndian.Uint64(l.Data[8:])
	return nil
}

func (f *counterFSM) state() (sum uint64, count int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, v := range f.vals {
		sum += v
	}
	return sum, len(f.vals)
}

func (f *counterFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b []byte
	for k, v := range f.vals {
		b = binary.BigEndian.AppendUint64(b, k)
		b = binary.BigEndian.AppendUint64(b, v)
	}
	return snap(b), nil
}

func (f *counterFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	vals := make(map[uint64]uint64)
	for ; len(b) >= 16; b = b[16:] {
		vals[binary.BigEndian.Uint64(b[:8])] = binary.BigEndian.Uint64(b[8:16])
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.vals = vals
	return nil
}

type snap []byte

func (s snap) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (snap) Release() {}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRaftOverQUIC(t *testing.T) {
	ca, err := pki.NewCA("raft-test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Error, Output: io.Discard})
	const n = 3
	type node struct {
		ep    *quic.Endpoint
		trans *raft.NetworkTransport
		fsm   *counterFSM
		r     *raft.Raft
	}
	nodes := make([]*node, n)
	var servers []raft.Server
	for i := range nodes {
		cert, key, err := ca.Issue(pki.IssueRequest{CommonName: fmt.Sprintf("meta-%d", i), Role: transport.RoleMeta}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		id, err := pki.NewIdentity(ca.CertPEM(), cert, key)
		if err != nil {
			t.Fatal(err)
		}
		ep, err := quic.New(quic.Config{ListenAddr: "127.0.0.1:0", Identity: id})
		if err != nil {
			t.Fatal(err)
		}
		layer := raftlayer.New(ep)
		if layer.Addr().String() != ep.Addr() {
			t.Fatalf("layer address %v, endpoint %s", layer.Addr(), ep.Addr())
		}
		trans := raft.NewNetworkTransportWithLogger(layer, 3, 5*time.Second, logger)
		nodes[i] = &node{ep: ep, trans: trans, fsm: &counterFSM{}}
		servers = append(servers, raft.Server{ID: raft.ServerID(id.Principal()), Address: trans.LocalAddr()})
	}
	defer func() {
		for _, nd := range nodes {
			if nd.r != nil {
				nd.r.Shutdown().Error()
			}
			nd.trans.Close()
			nd.ep.Close()
		}
	}()
	for i, nd := range nodes {
		conf := raft.DefaultConfig()
		conf.LocalID = servers[i].ID
		conf.Logger = logger
		conf.HeartbeatTimeout = 200 * time.Millisecond
		conf.ElectionTimeout = 200 * time.Millisecond
		conf.LeaderLeaseTimeout = 100 * time.Millisecond
		conf.CommitTimeout = 5 * time.Millisecond
		logs, snaps := raft.NewInmemStore(), raft.NewInmemSnapshotStore()
		r, err := raft.NewRaft(conf, nd.fsm, logs, logs, snaps, nd.trans)
		if err != nil {
			t.Fatal(err)
		}
		nd.r = r
	}
	if err := nodes[0].r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
		t.Fatal(err)
	}

	leader := func() *raft.Raft {
		for _, nd := range nodes {
			if nd.r.State() == raft.Leader {
				return nd.r
			}
		}
		return nil
	}
	waitFor(t, "a leader", 20*time.Second, func() bool { return leader() != nil })

	var want uint64
	for i := range 100 {
		v := uint64(i*i + 1)
		want += v
		var cmd [16]byte
		binary.BigEndian.PutUint64(cmd[:8], uint64(i))
		binary.BigEndian.PutUint64(cmd[8:], v)
		var err error
		waitFor(t, fmt.Sprintf("apply %d", i), 20*time.Second, func() bool {
			l := leader()
			if l == nil {
				return false
			}
			err = l.Apply(cmd[:], 5*time.Second).Error()
			// NB: a leadership change may fail an apply that still commits; the FSM is
			// idempotent per command index, so retrying is safe.
			return err == nil || !(errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost))
		})
		if err != nil {
			t.Fatalf("apply %d: %v", i, err)
		}
	}
	waitFor(t, "all FSMs to converge", 20*time.Second, func() bool {
		for _, nd := range nodes {
			if sum, count := nd.fsm.state(); sum != want || count != 100 {
				return false
			}
		}
		return true
	})
}

// TestDialRefusesNonMetaServer: a Raft stream to a chunk node's endpoint (a node
// certificate, not a meta one) is refused on the dialing side, naming the role; one to a
// meta server opens and names its peer.
func TestDialRefusesNonMetaServer(t *testing.T) {
	ca := pkitest.NewCA(t)
	identity := func(cn string, role transport.Role) *pki.Identity { return pkitest.Identity(t, ca, cn, role) }
	listen := func(cn string, role transport.Role) *quic.Endpoint {
		ep, err := quic.New(quic.Config{ListenAddr: "127.0.0.1:0", Identity: identity(cn, role)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ep.Close() })
		raftlayer.New(ep) // offer the protocol
		return ep
	}
	chunk, metaSrv := listen("chunk-0", transport.RoleNode), listen("meta-1", transport.RoleMeta)
	dialer, err := quic.New(quic.Config{Identity: identity("meta-0", transport.RoleMeta)})
	if err != nil {
		t.Fatal(err)
	}
	defer dialer.Close()
	layer := raftlayer.New(dialer)
	if c, err := layer.Dial(raft.ServerAddress(chunk.Addr()), 5*time.Second); err == nil {
		c.Close()
		t.Fatal("Raft stream to a chunk node's certificate opened")
	} else if !strings.Contains(err.Error(), `role "node"`) {
		t.Fatalf("refusal does not name the role: %v", err)
	}
	c, err := layer.Dial(raft.ServerAddress(metaSrv.Addr()), 5*time.Second)
	if err != nil {
		t.Fatalf("Raft stream to a meta server: %v", err)
	}
	defer c.Close()
	if p, ok := raftlayer.PeerOf(c); !ok || p.Principal != "meta-1" || p.Role != transport.RoleMeta {
		t.Fatalf("PeerOf = %+v, %v; want meta-1 with the meta role", p, ok)
	}
}
