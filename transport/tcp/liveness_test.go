package tcp_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/tcp"
)

// freezer is a TCP relay in front of a server that can freeze like a paused process
// (docker pause, SIGSTOP): its connections stay open and new ones are accepted, but
// nothing moves through them any more.
type freezer struct {
	ln     net.Listener
	to     string
	frozen atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
}

func newFreezer(t *testing.T, to string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, to: to}
	t.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, c := range f.conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", to)
			if err != nil {
				c.Close()
				continue
			}
			f.mu.Lock()
			f.conns = append(f.conns, c, up)
			f.mu.Unlock()
			go f.pipe(up, c)
			go f.pipe(c, up)
		}
	}()
	return f
}

// pipe copies src to dst until either closes; while frozen, bytes read are held, never
// written.
func (f *freezer) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		for f.frozen.Load() {
			time.Sleep(10 * time.Millisecond) // the relay stands still, as the paused process
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				dst.Close()
			}
			return
		}
	}
}

// TestCallToPausedPeerStalls: a call in flight to a node that pauses (its kernel still
// holds the TCP connections) ends within the liveness watch, as unreachable and stalled,
// instead of waiting for its context; a slow but running handler is waited for.
func TestCallToPausedPeerStalls(t *testing.T) {
	c := newCluster(t)
	release := make(chan struct{})
	srv := c.endpoint(tcp.Config{ListenAddr: "127.0.0.1:0", Identity: c.identity("node-1", transport.RoleNode),
		Handler: transport.HandlerFunc(func(ctx context.Context, p transport.Peer, method string, body []byte) ([]byte, error) {
			if method == "x.Slow" {
				select {
				case <-release:
				case <-ctx.Done():
				}
			}
			return echo(ctx, p, method, body)
		})})
	f := newFreezer(t, srv.Addr())
	cl := c.endpoint(tcp.Config{Identity: c.identity("node-2", transport.RoleNode),
		Liveness: transport.Liveness{After: 200 * time.Millisecond, Timeout: time.Second}})
	ctx := ctxT(t)
	// Slow but alive: probes are answered, the call waits for its reply.
	time.AfterFunc(1500*time.Millisecond, func() { close(release) })
	if _, err := cl.Call(ctx, f.ln.Addr().String(), "x.Slow", nil); err != nil {
		t.Fatalf("slow call to a live peer: %v", err)
	}
	// Paused: the call's request is held on its way, as by a stopped process.
	f.frozen.Store(true)
	start := time.Now()
	_, err := cl.Call(ctx, f.ln.Addr().String(), "x.Echo", nil)
	took := time.Since(start)
	if !errors.Is(err, transport.ErrStalled) || !errors.Is(err, transport.ErrUnreachable) {
		t.Fatalf("call to a paused peer: %v, want ErrStalled and ErrUnreachable", err)
	}
	if took > 5*time.Second {
		t.Fatalf("call to a paused peer ended after %v", took)
	}
	t.Logf("call to a paused peer ended after %v: %v", took, err)
}
