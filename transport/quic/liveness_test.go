package quic_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/quic"
)

// crashedCall warms a connection from cli to a fresh echo server, crashes the server
// (Abort: no CONNECTION_CLOSE leaves, as with kill -9) and returns how long the next call
// took and its error.
func crashedCall(t *testing.T, c *cluster, cli *quic.Endpoint) (time.Duration, error) {
	t.Helper()
	srv := c.server("node-1", echo)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cli.Call(ctx, srv.Addr(), "x.Echo", nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.Abort(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := cli.Call(ctx, srv.Addr(), "x.Echo", []byte("anyone there?"))
	return time.Since(start), err
}

// A call on a cached connection to a peer that crashed fails within the liveness watch
// (about After+Timeout, 3 s by default), not the 8 s idle timeout, and says the peer
// stalled and is unreachable, so that callers go elsewhere.
func TestCallToCrashedPeerFailsFast(t *testing.T) {
	c := newCluster(t)
	cli := c.client("host-a", transport.RoleAgent)
	took, err := crashedCall(t, c, cli)
	if !errors.Is(err, quic.ErrStalled) || !errors.Is(err, transport.ErrUnreachable) {
		t.Fatalf("call to a crashed peer: %v, want ErrStalled and ErrUnreachable", err)
	}
	t.Logf("call to a crashed peer failed after %v: %v", took, err)
	// NB: about 3 s; on a starved machine a probe whose timeout fires late is asked again,
	// so the bound is generous, and still below the idle timeout.
	if took > 7500*time.Millisecond {
		t.Fatalf("call to a crashed peer took %v: the 8 s idle timeout, not the liveness watch", took)
	}
}

// Without the watch, the same call waits out the idle timeout: what the watch saves.
func TestCallToCrashedPeerWithoutLivenessWaitsIdleTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("waits 8 s")
	}
	c := newCluster(t)
	cli := c.endpoint(quic.Config{Identity: c.identity("host-a", transport.RoleAgent), Liveness: transport.Liveness{Off: true}})
	took, err := crashedCall(t, c, cli)
	if !errors.Is(err, transport.ErrUnreachable) || errors.Is(err, quic.ErrStalled) {
		t.Fatalf("call to a crashed peer: %v, want ErrUnreachable (idle timeout)", err)
	}
	if took < 7500*time.Millisecond {
		t.Fatalf("call to a crashed peer failed after %v without the watch; expected the 8 s idle timeout", took)
	}
}

// A slow handler is not a dead peer: probes are answered while it works, so the call
// waits for its reply however many probes it takes. Probes never reach the handler.
func TestSlowHandlerOutlivesLivenessProbes(t *testing.T) {
	c := newCluster(t)
	var calls atomic.Int32
	slow := transport.HandlerFunc(func(ctx context.Context, _ transport.Peer, method string, body []byte) ([]byte, error) {
		calls.Add(1)
		select {
		case <-time.After(1500 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return []byte("done"), nil
	})
	srv := c.server("node-1", slow)
	cli := c.endpoint(quic.Config{Identity: c.identity("host-a", transport.RoleAgent),
		Liveness: transport.Liveness{After: 100 * time.Millisecond, Timeout: time.Second}})
	got, err := cli.Call(ctxT(t), srv.Addr(), "x.Slow", nil)
	if err != nil || string(got) != "done" {
		t.Fatalf("slow call: %q, %v", got, err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("handler ran %d times, want 1 (probes must not reach it)", n)
	}
}

// The endpoint answers probes itself, before any handler is installed and for any
// authenticated peer; other methods are then still answered Unavailable.
func TestPingAnsweredWithoutHandler(t *testing.T) {
	c := newCluster(t)
	srv := c.server("node-1", nil)
	cli := c.client("host-a", transport.RoleAgent)
	if _, err := cli.Call(ctxT(t), srv.Addr(), "quic.Ping", nil); err != nil {
		t.Fatalf("ping: %v", err)
	}
	if _, err := cli.Call(ctxT(t), srv.Addr(), "x.Echo", nil); transport.CodeOf(err) != transport.Unavailable {
		t.Fatalf("call without a handler: %v, want Unavailable", err)
	}
}

func TestLivenessConfigRejectsNegative(t *testing.T) {
	c := newCluster(t)
	if _, err := quic.New(quic.Config{Identity: c.identity("host-a", transport.RoleAgent), Liveness: transport.Liveness{After: -time.Second}}); err == nil {
		t.Fatal("negative liveness accepted")
	}
}
