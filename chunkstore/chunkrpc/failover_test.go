package chunkrpc_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunkrpc"
	"github.com/cofferhq/coffer/chunkstore/memstore"
	"github.com/cofferhq/coffer/transport"
)

// shortOf answers every call Unavailable with msg, like a coordinator whose PG lacks live
// shard nodes.
func shortOf(msg string) transport.Handler {
	return transport.HandlerFunc(func(context.Context, transport.Peer, string, []byte) ([]byte, error) {
		return nil, transport.Errorf(transport.Unavailable, "%s", msg)
	})
}

// TestAllFailedNamesTheLiveAnswer: when every coordinator fails, the error leads with
// what a live coordinator answered ("2 of 6 shards failed"), whatever order they were
// tried in, not with the dead one's unreachable, which is still listed after it.
func TestAllFailedNamesTheLiveAnswer(t *testing.T) {
	const cause = "coord: erasure: 2 of 6 shards failed, need 5 ok: chunkstore: unavailable"
	lc := &loopCaller{
		srv:         map[string]transport.Handler{"busy": shortOf(cause)},
		unreachable: map[string]bool{"down": true},
		calls:       map[string]int{},
	}
	cl := chunkrpc.NewClient(lc, []string{"down", "busy"})
	cl.SetRetryWindow(0)
	chunkrpc.SetClock(cl, func() time.Time { return time.Unix(0, 0) }) // no probes
	ctx := ctxT(t)
	c := chunkstore.Chunk{ID: id(21), Data: []byte("data")}
	for i := range 4 { // both orders: round-robin, then suspects last
		err := cl.Put(ctx, []chunkstore.Chunk{c})
		var all *chunkrpc.AllFailedError
		if !errors.As(err, &all) || !errors.Is(err, chunkstore.ErrUnavailable) {
			t.Fatalf("put %d: %v, want an AllFailedError matching ErrUnavailable", i, err)
		}
		msg := err.Error()
		if at, down := strings.Index(msg, "2 of 6 shards failed"), strings.Index(msg, "down: unreachable"); at < 0 || down < at {
			t.Fatalf("put %d: %q does not lead with the live coordinator's answer and then name the dead one", i, msg)
		}
		if transport.CodeOf(err) != transport.Unavailable {
			t.Fatalf("put %d: code %v, want the live answer's Unavailable", i, transport.CodeOf(err))
		}
	}
}

// TestClientRetriesRoundsWhileNoneIsReady: coordinators that all answer Unavailable for
// a while (nodes still starting, a PG waiting for the cluster to notice a failure) are
// asked again in rounds, and the call succeeds once one of them can serve it.
func TestClientRetriesRoundsWhileNoneIsReady(t *testing.T) {
	chunks := memstore.NewChunks()
	good := chunkrpc.NewServer(nil, chunks)
	var refusals atomic.Int32
	refusals.Store(5)
	starting := transport.HandlerFunc(func(ctx context.Context, p transport.Peer, method string, body []byte) ([]byte, error) {
		if refusals.Add(-1) >= 0 {
			return nil, transport.Errorf(transport.Unavailable, "quic: %s: no handler installed yet", method)
		}
		return good.ServeRPC(ctx, p, method, body)
	})
	lc := &loopCaller{srv: map[string]transport.Handler{"a": starting, "b": starting}, calls: map[string]int{}}
	cl := chunkrpc.NewClient(lc, []string{"a", "b"})
	ctx := ctxT(t)
	c := chunkstore.Chunk{ID: id(22), Data: []byte("data")}
	if err := cl.Put(ctx, []chunkstore.Chunk{c}); err != nil {
		t.Fatalf("put while the coordinators start: %v", err)
	}
	refusals.Store(5)
	if got, err := cl.Get(ctx, c.ID); err != nil || !bytes.Equal(got, c.Data) {
		t.Fatalf("get while the coordinators start: %q %v", got, err)
	}
	// A definite answer ends the call at once, whatever the window.
	if _, err := cl.Get(ctx, id(23)); !errors.Is(err, chunkstore.ErrNotFound) {
		t.Fatalf("missing chunk: %v", err)
	}
}

// TestPutFailsOverFromCrashedCoordinator, over real QUIC: the agent's coordinator crashes
// (no CONNECTION_CLOSE: its peers hear nothing, as with kill -9) while the agent holds a
// connection to it; every put still succeeds through the other coordinator, and none waits
// out the 8 s idle timeout.
func TestPutFailsOverFromCrashedCoordinator(t *testing.T) {
	n := newNet(t)
	chunks := memstore.NewChunks()
	a := n.node("node-a", chunkrpc.NewServer(nil, chunks))
	b := n.node("node-b", chunkrpc.NewServer(nil, chunks))
	agent := n.endpoint("host-a", transport.RoleAgent, false, nil)
	cl := chunkrpc.NewClient(agent, []string{a.Addr(), b.Addr()})
	ctx := ctxT(t)
	for i := range 4 { // connections to both
		if err := cl.Put(ctx, []chunkstore.Chunk{{ID: id(30 + i), Data: []byte("warm")}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Abort(); err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		c := chunkstore.Chunk{ID: id(40 + i), Data: []byte("after the crash")}
		start := time.Now()
		if err := cl.Put(ctx, []chunkstore.Chunk{c}); err != nil {
			t.Fatalf("put %d after the coordinator crashed: %v", i, err)
		}
		if took := time.Since(start); took > 6*time.Second {
			t.Fatalf("put %d took %v: waited out the idle timeout", i, took)
		} else if took > time.Second {
			t.Logf("put %d failed over in %v", i, took)
		}
		if got, err := chunks.Get(ctx, c.ID); err != nil || !bytes.Equal(got, c.Data) {
			t.Fatalf("chunk %d not stored: %v", i, err)
		}
	}
}
