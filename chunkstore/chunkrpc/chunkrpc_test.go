package chunkrpc_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/chunkrpc"
	"github.com/cofferhq/coffer/chunkstore/memstore"
	"github.com/cofferhq/coffer/chunkstore/storetest"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
	"github.com/cofferhq/coffer/transport/quic"
	"github.com/cofferhq/coffer/transport/wire"
)

// net is a test cluster CA that makes QUIC endpoints on loopback.
type testNet struct {
	t  *testing.T
	ca *pki.CA
}

func newNet(t *testing.T) *testNet {
	t.Helper()
	ca, err := pki.NewCA("chunkrpc-test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &testNet{t: t, ca: ca}
}

func (n *testNet) endpoint(name string, role transport.Role, listen bool, h transport.Handler) *quic.Endpoint {
	n.t.Helper()
	return n.endpointFor(pki.IssueRequest{CommonName: name, Role: role}, listen, h)
}

// endpointFor makes an endpoint whose certificate is issued for req.
func (n *testNet) endpointFor(req pki.IssueRequest, listen bool, h transport.Handler) *quic.Endpoint {
	n.t.Helper()
	cert, key, err := n.ca.Issue(req, time.Now())
	if err != nil {
		n.t.Fatal(err)
	}
	id, err := pki.NewIdentity(n.ca.CertPEM(), cert, key)
	if err != nil {
		n.t.Fatal(err)
	}
	cfg := quic.Config{Identity: id, Handler: h}
	if listen {
		cfg.ListenAddr = "127.0.0.1:0"
	}
	ep, err := quic.New(cfg)
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() { ep.Close() })
	return ep
}

// node starts a node endpoint serving srv on a Mux.
func (n *testNet) node(name string, srv *chunkrpc.Server) *quic.Endpoint {
	mux := transport.NewMux()
	srv.Register(mux)
	return n.endpoint(name, transport.RoleNode, true, mux)
}

func id(n int) chunk.ID {
	var i chunk.ID
	i[0], i[1], i[31] = byte(n>>8), byte(n), 0x5a
	return i
}

func shard(n int, index uint8, size int) chunkstore.Shard {
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(n*31 + i)
	}
	return chunkstore.Shard{
		Key:  chunkstore.ShardKey{ID: id(n), Index: index},
		Meta: chunkstore.ShardMeta{K: 4, M: 2, ChunkLen: uint32(size * 4), ChunkCRC: uint32(n), Writer: "node-0"},
		Data: data,
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestShardStoreConformanceOverQUIC(t *testing.T) {
	n := newNet(t)
	client := n.endpoint("node-c", transport.RoleNode, false, nil)
	storetest.RunShardStore(t, func(t *testing.T) chunkstore.ShardStore {
		srv := n.node("node-s", chunkrpc.NewServer(memstore.NewShards(), nil))
		return chunkrpc.NewShardClient(client, srv.Addr())
	})
}

func TestStoreConformanceOverQUIC(t *testing.T) {
	n := newNet(t)
	client := n.endpoint("host-a", transport.RoleAgent, false, nil)
	storetest.RunStore(t, func(t *testing.T) chunkstore.Store {
		// Two coordinators in front of one store, as a cluster looks from outside.
		chunks := memstore.NewChunks()
		a := n.node("node-a", chunkrpc.NewServer(nil, chunks))
		b := n.node("node-b", chunkrpc.NewServer(nil, chunks))
		return chunkrpc.NewClient(client, []string{a.Addr(), b.Addr()})
	})
}

func TestNodeShardRoundTrip(t *testing.T) {
	n := newNet(t)
	srv := n.node("node-s", chunkrpc.NewServer(memstore.NewShards(), nil))
	sc := chunkrpc.NewShardClient(n.endpoint("node-c", transport.RoleNode, false, nil), srv.Addr())
	ctx := ctxT(t)
	var shards []chunkstore.Shard
	for i := range 2500 {
		shards = append(shards, shard(i/3, uint8(i%3), 8+i%50))
	}
	if err := sc.PutShards(ctx, shards); err != nil {
		t.Fatal(err)
	}
	got, err := sc.GetShard(ctx, shards[7].Key)
	if err != nil || !bytes.Equal(got.Data, shards[7].Data) || got.Meta != shards[7].Meta {
		t.Fatalf("GetShard: %+v %v", got.Meta, err)
	}
	has, err := sc.HasShards(ctx, []chunkstore.ShardKey{shards[0].Key, {ID: id(9999)}, shards[2499].Key})
	if err != nil || fmt.Sprint(has) != "[true false true]" {
		t.Fatalf("HasShards: %v %v", has, err)
	}
	// Enumerate crosses several pages and stays in order.
	var seen []chunkstore.ShardInfo
	if err := sc.EnumerateShards(ctx, nil, func(info chunkstore.ShardInfo) error {
		seen = append(seen, info)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(seen) != len(shards) {
		t.Fatalf("enumerated %d shards, want %d", len(seen), len(shards))
	}
	for i := 1; i < len(seen); i++ {
		if !seen[i-1].Key.Less(seen[i].Key) {
			t.Fatalf("enumeration out of order at %d", i)
		}
	}
	// A PG listing crosses pages too, in PG order, and the two PGs of 2 cover all.
	total := 0
	for pg := range uint32(2) {
		var prev *chunkstore.ShardKey
		if err := sc.EnumeratePG(ctx, 2, pg, nil, func(info chunkstore.ShardInfo) error {
			if chunkstore.PGOf(info.Key.ID, 2) != pg || (prev != nil && chunkstore.PGCompare(*prev, info.Key) >= 0) {
				t.Fatalf("PG %d listing: %s/%d out of place", pg, info.Key.ID.Str(), info.Key.Index)
			}
			k := info.Key
			prev = &k
			total++
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if total != len(shards) {
		t.Fatalf("PG listings: %d shards, want %d", total, len(shards))
	}
	after := seen[1500].Key
	count := 0
	if err := sc.EnumerateShards(ctx, &after, func(chunkstore.ShardInfo) error { count++; return nil }); err != nil || count != len(shards)-1501 {
		t.Fatalf("enumerate after #1500: %d shards, %v", count, err)
	}
	if err := sc.DeleteShards(ctx, []chunkstore.ShardKey{shards[0].Key, shards[1].Key}); err != nil {
		t.Fatal(err)
	}
	st, err := sc.Stats(ctx)
	if err != nil || st.Shards != int64(len(shards)-2) {
		t.Fatalf("Stats after delete: %+v %v", st, err)
	}
	if _, err := sc.GetShard(ctx, shards[0].Key); !errors.Is(err, chunkstore.ErrNotFound) {
		t.Fatalf("deleted shard: %v, want ErrNotFound", err)
	}
}

func TestAgentDeniedShards(t *testing.T) {
	n := newNet(t)
	shards := memstore.NewShards()
	srv := n.node("node-s", chunkrpc.NewServer(shards, memstore.NewChunks()))
	agent := n.endpoint("host-a", transport.RoleAgent, false, nil)
	admin := n.endpoint("alice", transport.RoleAdmin, false, nil)
	ctx := ctxT(t)
	for _, ep := range []*quic.Endpoint{agent, admin} {
		sc := chunkrpc.NewShardClient(ep, srv.Addr())
		k := shard(1, 0, 10).Key
		for name, err := range map[string]error{
			"put":    sc.PutShards(ctx, []chunkstore.Shard{shard(1, 0, 10)}),
			"get":    second(sc.GetShard(ctx, k)),
			"has":    second(sc.HasShards(ctx, []chunkstore.ShardKey{k})),
			"delete": sc.DeleteShards(ctx, []chunkstore.ShardKey{k}),
			"enum":   sc.EnumerateShards(ctx, nil, func(chunkstore.ShardInfo) error { return nil }),
			"stats":  second(sc.Stats(ctx)),
		} {
			if transport.CodeOf(err) != transport.PermissionDenied {
				t.Errorf("%s: %v, want PermissionDenied", name, err)
			}
		}
	}
	if st, _ := shards.Stats(ctx); st.Shards != 0 {
		t.Fatalf("a denied put stored %d shards", st.Shards)
	}
	// Chunks are open to agents.
	cl := chunkrpc.NewClient(agent, []string{srv.Addr()})
	c := chunkstore.Chunk{ID: id(5), Data: []byte("sealed")}
	if err := cl.Put(ctx, []chunkstore.Chunk{c}); err != nil {
		t.Fatal(err)
	}
	if got, err := cl.Get(ctx, c.ID); err != nil || !bytes.Equal(got, c.Data) {
		t.Fatalf("agent Get: %q %v", got, err)
	}
}

func second[T any](_ T, err error) error { return err }

// faultShards is a ShardStore whose every method fails with err.
type faultShards struct{ err error }

func (f faultShards) PutShards(context.Context, []chunkstore.Shard) error { return f.err }
func (f faultShards) GetShard(context.Context, chunkstore.ShardKey) (chunkstore.Shard, error) {
	return chunkstore.Shard{}, fmt.Errorf("faultstore: get: %w", f.err)
}
func (f faultShards) HasShards(context.Context, []chunkstore.ShardKey) ([]bool, error) {
	return nil, f.err
}
func (f faultShards) DeleteShards(context.Context, []chunkstore.ShardKey) error { return f.err }
func (f faultShards) EnumerateShards(context.Context, *chunkstore.ShardKey, func(chunkstore.ShardInfo) error) error {
	return f.err
}
func (f faultShards) Stats(context.Context) (chunkstore.ShardStats, error) {
	return chunkstore.ShardStats{}, f.err
}

func TestSentinelsSurviveTheWire(t *testing.T) {
	n := newNet(t)
	client := n.endpoint("node-c", transport.RoleNode, false, nil)
	ctx := ctxT(t)
	for _, tc := range []struct {
		remote, want error
		code         transport.Code
	}{
		{chunkstore.ErrNotFound, chunkstore.ErrNotFound, transport.NotFound},
		{chunkstore.ErrCorrupt, chunkstore.ErrCorrupt, transport.Corrupt},
		{chunkstore.ErrUnavailable, chunkstore.ErrUnavailable, transport.Unavailable},
		{chunkstore.ErrInvalid, chunkstore.ErrInvalid, transport.Invalid},
		{chunkstore.ErrClosed, chunkstore.ErrUnavailable, transport.Unavailable},
		{chunkstore.ErrNoSpace, chunkstore.ErrNoSpace, transport.NoSpace},
		// A coordinator's quorum failure quoting a full node stays Unavailable.
		{fmt.Errorf("coord: put: node n1: %w: %w", chunkstore.ErrNoSpace, chunkstore.ErrUnavailable), chunkstore.ErrUnavailable, transport.Unavailable},
		{errors.New("disk on fire"), nil, transport.Internal},
	} {
		srv := n.node("node-s", chunkrpc.NewServer(faultShards{tc.remote}, nil))
		_, err := chunkrpc.NewShardClient(client, srv.Addr()).GetShard(ctx, shard(1, 0, 1).Key)
		if tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("remote %v: got %v, want errors.Is %v", tc.remote, err, tc.want)
		}
		if transport.CodeOf(err) != tc.code {
			t.Errorf("remote %v: code %v, want %v", tc.remote, transport.CodeOf(err), tc.code)
		}
		if !strings.Contains(err.Error(), tc.remote.Error()) {
			t.Errorf("remote %v: message %q lost the remote text", tc.remote, err)
		}
	}
	// Chunk side: a missing chunk is ErrNotFound on the client.
	srv := n.node("node-s", chunkrpc.NewServer(nil, memstore.NewChunks()))
	if _, err := chunkrpc.NewClient(client, []string{srv.Addr()}).Get(ctx, id(1)); !errors.Is(err, chunkstore.ErrNotFound) {
		t.Fatalf("missing chunk: %v, want ErrNotFound", err)
	}
}

// A node whose disk is full answers shard.Put with its own code: the caller sees
// chunkstore.ErrNoSpace (not ErrUnavailable, not internal) and the node's "disk full".
func TestNoSpaceSurvivesTheWire(t *testing.T) {
	n := newNet(t)
	client := n.endpoint("node-c", transport.RoleNode, false, nil)
	ctx := ctxT(t)
	full := fmt.Errorf("segstore: put shards: %w: segstore: append to segment 1: %w", chunkstore.ErrNoSpace,
		&os.PathError{Op: "write", Path: "/data/seg-1", Err: syscall.ENOSPC})
	srv := n.node("node-s", chunkrpc.NewServer(faultShards{full}, nil))
	err := chunkrpc.NewShardClient(client, srv.Addr()).PutShards(ctx, []chunkstore.Shard{shard(1, 0, 10)})
	if !errors.Is(err, chunkstore.ErrNoSpace) || errors.Is(err, chunkstore.ErrUnavailable) {
		t.Fatalf("put on a full node = %v, want ErrNoSpace only", err)
	}
	if code := transport.CodeOf(err); code != transport.NoSpace || code.String() != "no space" {
		t.Fatalf("code %v (%d), want no space", code, code)
	}
	for _, want := range []string{"disk full", "no space left on device", srv.Addr()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q does not say %q", err, want)
		}
	}
}

func TestMalformedBodiesAreInvalid(t *testing.T) {
	n := newNet(t)
	shards := memstore.NewShards()
	srv := n.node("node-s", chunkrpc.NewServer(shards, memstore.NewChunks()))
	client := n.endpoint("node-c", transport.RoleNode, false, nil)
	ctx := ctxT(t)
	for _, method := range []string{"shard.Put", "shard.Get", "shard.Has", "shard.Delete", "shard.Enumerate", "shard.Stats", "chunk.Put", "chunk.Get", "chunk.Has"} {
		_, err := client.Call(ctx, srv.Addr(), method, []byte{0xff, 0x00, 0x13})
		if transport.CodeOf(err) != transport.Invalid || !strings.Contains(err.Error(), "malformed request body") {
			t.Errorf("%s with garbage: %v, want Invalid naming the malformed body", method, err)
		}
	}
	// Well-formed CBOR of the wrong shape is refused too.
	body, _ := wire.Marshal(map[string]string{"hello": "world"})
	if _, err := client.Call(ctx, srv.Addr(), "shard.Put", body); err != nil {
		// Unknown keys are ignored (forward compatibility): an empty put is fine.
		t.Fatalf("unknown keys: %v", err)
	}
	body, _ = wire.Marshal(map[int]string{1: "not a list"})
	if _, err := client.Call(ctx, srv.Addr(), "shard.Put", body); transport.CodeOf(err) != transport.Invalid {
		t.Fatalf("wrong type: %v, want Invalid", err)
	}
	body, _ = wire.Marshal(map[int]int{2: chunkrpc.MaxEnumerateLimit + 1})
	if _, err := client.Call(ctx, srv.Addr(), "shard.Enumerate", body); transport.CodeOf(err) != transport.Invalid {
		t.Fatalf("oversize page: %v, want Invalid", err)
	}
	if _, err := client.Call(ctx, srv.Addr(), "shard.Scrub", nil); transport.CodeOf(err) != transport.UnknownMethod {
		t.Fatalf("unknown method: %v", err)
	}
	if st, _ := shards.Stats(ctx); st.Shards != 0 {
		t.Fatalf("bad requests stored %d shards", st.Shards)
	}
}

// loopCaller serves calls in process, like a node peer would, and can fail chosen addrs.
type loopCaller struct {
	srv         map[string]transport.Handler
	unreachable map[string]bool
	mu          sync.Mutex
	calls       map[string]int
	inflight    atomic.Int32
	maxInflight atomic.Int32
	callBytes   []int
	// rendezvous > 0 holds every call until that many are in flight at once (or a
	// timeout passes), so concurrency is observable however the scheduler runs.
	rendezvous int32
	met        chan struct{}
	metOnce    sync.Once
	// hang lists addresses whose calls never answer (a peer that died silently): they
	// block until their context ends.
	hang       map[string]bool
	hangingNow atomic.Int32
}

func (c *loopCaller) Call(ctx context.Context, addr, method string, body []byte) ([]byte, error) {
	c.mu.Lock()
	c.calls[addr]++
	c.callBytes = append(c.callBytes, len(body))
	down, hung := c.unreachable[addr], c.hang[addr]
	c.mu.Unlock()
	if hung {
		c.hangingNow.Add(1)
		defer c.hangingNow.Add(-1)
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if down {
		return nil, fmt.Errorf("loop: %s: %w", addr, transport.ErrUnreachable)
	}
	cur := c.inflight.Add(1)
	defer c.inflight.Add(-1)
	for {
		m := c.maxInflight.Load()
		if cur <= m || c.maxInflight.CompareAndSwap(m, cur) {
			break
		}
	}
	if c.rendezvous > 0 {
		if cur >= c.rendezvous {
			c.metOnce.Do(func() { close(c.met) })
		}
		select {
		case <-c.met:
		case <-time.After(5 * time.Second):
		}
	}
	reply, err := c.srv[addr].ServeRPC(ctx, transport.Peer{Principal: "host-a", Role: transport.RoleAgent}, method, body)
	if err != nil {
		// What a real transport delivers: only the code and the message.
		return nil, &transport.Error{Code: transport.CodeOf(err), Msg: err.Error()}
	}
	return reply, nil
}

func TestClientSplitsAndSpreadsBatches(t *testing.T) {
	chunks := memstore.NewChunks()
	srv := chunkrpc.NewServer(nil, chunks)
	lc := &loopCaller{srv: map[string]transport.Handler{"a": srv, "b": srv, "c": srv}, calls: map[string]int{},
		rendezvous: 2, met: make(chan struct{})}
	cl := chunkrpc.NewClient(lc, []string{"a", "b", "c"})
	var batch []chunkstore.Chunk
	for i := range 40 {
		batch = append(batch, chunkstore.Chunk{ID: id(i), Data: bytes.Repeat([]byte{byte(i)}, 1<<20)})
	}
	ctx := ctxT(t)
	if err := cl.Put(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if len(lc.callBytes) != 3 {
		t.Fatalf("%d calls for 40 MiB, want 3 (16+16+8 MiB)", len(lc.callBytes))
	}
	for _, b := range lc.callBytes {
		if b > chunkrpc.MaxCallData+64<<10 {
			t.Errorf("a call carried %d bytes, limit %d", b, chunkrpc.MaxCallData)
		}
	}
	if lc.calls["a"] != 1 || lc.calls["b"] != 1 || lc.calls["c"] != 1 {
		t.Errorf("calls per addr %v, want one each", lc.calls)
	}
	if m := lc.maxInflight.Load(); m < 2 || m > 3 {
		t.Errorf("max concurrent calls %d, want 2..3", m)
	}
	has, err := cl.Has(ctx, []chunk.ID{id(0), id(39), id(40)})
	if err != nil || fmt.Sprint(has) != "[true true false]" {
		t.Fatalf("Has: %v %v", has, err)
	}
}

func TestClientInvalidBatchSendsNothing(t *testing.T) {
	lc := &loopCaller{srv: map[string]transport.Handler{"a": chunkrpc.NewServer(nil, memstore.NewChunks())}, calls: map[string]int{}}
	cl := chunkrpc.NewClient(lc, []string{"a"})
	batch := []chunkstore.Chunk{{ID: id(1), Data: []byte("x")}, {ID: id(2)}}
	if err := cl.Put(ctxT(t), batch); !errors.Is(err, chunkstore.ErrInvalid) {
		t.Fatalf("empty chunk: %v, want ErrInvalid", err)
	}
	if len(lc.callBytes) != 0 {
		t.Fatalf("%d calls sent for an invalid batch", len(lc.callBytes))
	}
}

func TestClientFailsOver(t *testing.T) {
	chunks := memstore.NewChunks()
	good := chunkrpc.NewServer(nil, chunks)
	noCoord := chunkrpc.NewServer(nil, nil) // answers Unavailable
	lc := &loopCaller{
		srv:         map[string]transport.Handler{"down": good, "busy": noCoord, "good": good, "good2": good},
		unreachable: map[string]bool{"down": true},
		calls:       map[string]int{},
	}
	cl := chunkrpc.NewClient(lc, []string{"down", "busy", "good"})
	chunkrpc.SetClock(cl, func() time.Time { return time.Unix(0, 0) }) // no probes
	ctx := ctxT(t)
	c := chunkstore.Chunk{ID: id(7), Data: []byte("data")}
	// Whatever address the round-robin starts at, every call reaches "good".
	for i := range 6 {
		if err := cl.Put(ctx, []chunkstore.Chunk{c}); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
		if got, err := cl.Get(ctx, c.ID); err != nil || !bytes.Equal(got, c.Data) {
			t.Fatalf("get %d: %q %v", i, got, err)
		}
	}
	// With no retry window, no address is tried twice within one call.
	lc.calls = map[string]int{}
	lc.callBytes = nil
	cl.SetAddrs([]string{"down", "busy"})
	cl.SetRetryWindow(0)
	_, err := cl.Get(ctx, c.ID)
	if !errors.Is(err, chunkstore.ErrUnavailable) {
		t.Fatalf("all coordinators failing: %v, want ErrUnavailable", err)
	}
	if lc.calls["down"] != 1 || lc.calls["busy"] != 1 {
		t.Fatalf("calls per addr %v, want one each", lc.calls)
	}
	// A definite answer is not retried elsewhere.
	lc.calls = map[string]int{}
	cl.SetAddrs([]string{"good", "good2"})
	if _, err := cl.Get(ctx, id(8)); !errors.Is(err, chunkstore.ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}
	if lc.calls["good"]+lc.calls["good2"] != 1 {
		t.Fatalf("NotFound was retried: %v", lc.calls)
	}
	cl.SetAddrs(nil)
	if _, err := cl.Get(ctx, c.ID); !errors.Is(err, chunkstore.ErrUnavailable) {
		t.Fatalf("no addrs: %v", err)
	}
}

// TestClientTriesSuspectsLast: once a coordinator failed, the following calls go to the
// others first, so a dead node costs one timeout, not one per call; a background probe
// brings it back once it answers again.
func TestClientTriesSuspectsLast(t *testing.T) {
	chunks := memstore.NewChunks()
	good := chunkrpc.NewServer(nil, chunks)
	lc := &loopCaller{
		srv:         map[string]transport.Handler{"down": good, "good": good, "good2": good},
		unreachable: map[string]bool{"down": true},
		calls:       map[string]int{},
	}
	var clock atomic.Int64
	cl := chunkrpc.NewClient(lc, []string{"down", "good", "good2"})
	chunkrpc.SetClock(cl, func() time.Time { return time.Unix(clock.Load(), 0) })
	ctx := ctxT(t)
	c := chunkstore.Chunk{ID: id(9), Data: []byte("data")}
	calls := func(addr string) int {
		lc.mu.Lock()
		defer lc.mu.Unlock()
		return lc.calls[addr]
	}
	for i := range 12 {
		if err := cl.Put(ctx, []chunkstore.Chunk{c}); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	if n := calls("down"); n != 1 {
		t.Fatalf("dead coordinator tried %d times in 12 calls, want once", n)
	}
	if calls("good") == 0 || calls("good2") == 0 {
		t.Fatalf("calls not spread over the live coordinators: %v", lc.calls)
	}

	// The node comes back; once SuspectHold has passed, a call starts a probe, which
	// clears the suspicion, and calls reach it again.
	lc.mu.Lock()
	lc.unreachable["down"] = false
	lc.mu.Unlock()
	clock.Add(int64(chunkrpc.SuspectHold/time.Second) + 1)
	for calls("down") < 3 {
		if err := ctx.Err(); err != nil {
			t.Fatalf("recovered coordinator not used again: %v calls", calls("down"))
		}
		if err := cl.Put(ctx, []chunkstore.Chunk{c}); err != nil {
			t.Fatalf("put: %v", err)
		}
	}

	// With every other address gone, a suspect is still tried.
	lc.mu.Lock()
	lc.unreachable["down"] = true
	lc.mu.Unlock()
	cl.SetAddrs([]string{"down"})
	cl.SetRetryWindow(0)
	for range 2 {
		if err := cl.Put(ctx, []chunkstore.Chunk{c}); !errors.Is(err, chunkstore.ErrUnavailable) {
			t.Fatalf("only a dead coordinator: %v, want ErrUnavailable", err)
		}
	}
}

// TestReadsHedgeAroundSilentCoordinator: a coordinator that never answers (no error
// either) does not stall reads: after HedgeDelay the next one is asked, its answer wins,
// and the hanging call is cancelled.
func TestReadsHedgeAroundSilentCoordinator(t *testing.T) {
	chunks := memstore.NewChunks()
	ctx := ctxT(t)
	c := chunkstore.Chunk{ID: id(11), Data: []byte("hedged")}
	if err := chunks.Put(ctx, []chunkstore.Chunk{c}); err != nil {
		t.Fatal(err)
	}
	good := chunkrpc.NewServer(nil, chunks)
	lc := &loopCaller{
		srv:   map[string]transport.Handler{"silent": good, "good": good},
		hang:  map[string]bool{"silent": true},
		calls: map[string]int{},
	}
	cl := chunkrpc.NewClient(lc, []string{"silent", "good"})
	chunkrpc.SetClock(cl, func() time.Time { return time.Unix(0, 0) }) // no probes
	for i := range 4 {
		got, err := cl.Get(ctx, c.ID)
		if err != nil || !bytes.Equal(got, c.Data) {
			t.Fatalf("get %d: %q %v", i, got, err)
		}
		ids := []chunk.ID{c.ID}
		has, err := cl.Has(ctx, ids)
		if err != nil || len(has) != 1 || !has[0] {
			t.Fatalf("has %d: %v %v", i, has, err)
		}
		ids[0] = chunk.ID{} // the caller owns ids again: attempts still running must not read it
	}
	for lc.hangingNow.Load() != 0 {
		if ctx.Err() != nil {
			t.Fatalf("%d calls to the silent coordinator were never cancelled", lc.hangingNow.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Once it has stalled a read, it is suspect: 8 reads asked it once in all.
	lc.mu.Lock()
	n := lc.calls["silent"]
	lc.mu.Unlock()
	if n != 1 {
		t.Fatalf("silent coordinator asked %d times, want 1", n)
	}
}

func TestUnreachableNodeIsUnavailable(t *testing.T) {
	lc := &loopCaller{unreachable: map[string]bool{"x": true}, calls: map[string]int{}}
	_, err := chunkrpc.NewShardClient(lc, "x").Stats(ctxT(t))
	if !errors.Is(err, chunkstore.ErrUnavailable) || !errors.Is(err, transport.ErrUnreachable) {
		t.Fatalf("got %v, want ErrUnavailable and ErrUnreachable", err)
	}
}
