package tcp_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
	"github.com/cofferhq/coffer/transport/pki/pkitest"
	"github.com/cofferhq/coffer/transport/tcp"
)

type cluster struct {
	t  testing.TB
	ca *pki.CA
}

func newCluster(t testing.TB) *cluster {
	t.Helper()
	return &cluster{t: t, ca: pkitest.NewCA(t)}
}

func (c *cluster) identity(name string, role transport.Role) *pki.Identity {
	c.t.Helper()
	return pkitest.Identity(c.t, c.ca, name, role)
}

func (c *cluster) endpoint(cfg tcp.Config) *tcp.Endpoint {
	c.t.Helper()
	ep, err := tcp.New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { ep.Close() })
	return ep
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var echo = transport.HandlerFunc(func(_ context.Context, p transport.Peer, method string, body []byte) ([]byte, error) {
	return append([]byte(method+"|"+p.Principal+"|"+string(p.Role)+"|"), body...), nil
})

func TestRoundTripConcurrentAndErrors(t *testing.T) {
	c := newCluster(t)
	srv := c.endpoint(tcp.Config{ListenAddr: "127.0.0.1:0", Identity: c.identity("node-1", transport.RoleNode),
		Handler: transport.HandlerFunc(func(ctx context.Context, p transport.Peer, method string, body []byte) ([]byte, error) {
			if method == "x.Fail" {
				return nil, transport.Errorf(transport.NotFound, "no such %s", body)
			}
			return echo(ctx, p, method, body)
		})})
	cl := c.endpoint(tcp.Config{Identity: c.identity("node-2", transport.RoleNode), MaxIdle: 4})
	ctx := ctxT(t)
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			body := bytes.Repeat([]byte{byte(i)}, 1000*i)
			got, err := cl.Call(ctx, srv.Addr(), "x.Echo", body)
			want := append([]byte("x.Echo|node-2|node|"), body...)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("call %d: %d bytes, %v", i, len(got), err)
			}
		})
	}
	wg.Wait()
	_, err := cl.Call(ctx, srv.Addr(), "x.Fail", []byte("thing"))
	var te *transport.Error
	if !errors.As(err, &te) || te.Code != transport.NotFound || te.Msg != "no such thing" {
		t.Fatalf("remote error: %v", err)
	}
	// The connection that carried the error is reused.
	if got, err := cl.Call(ctx, srv.Addr(), "x.Echo", nil); err != nil || string(got) != "x.Echo|node-2|node|" {
		t.Fatalf("after an error: %q %v", got, err)
	}
	// A bad method name is refused locally, as Invalid.
	if _, err := cl.Call(ctx, srv.Addr(), "bad method", nil); transport.CodeOf(err) != transport.Invalid {
		t.Fatalf("bad method: %v", err)
	}
}

func TestOnlyNodeCertificates(t *testing.T) {
	c := newCluster(t)
	var calls atomic.Int64
	srv := c.endpoint(tcp.Config{ListenAddr: "127.0.0.1:0", Identity: c.identity("node-1", transport.RoleNode),
		Handler: transport.HandlerFunc(func(context.Context, transport.Peer, string, []byte) ([]byte, error) {
			calls.Add(1)
			return nil, nil
		})})
	ctx := ctxT(t)
	for _, role := range []transport.Role{transport.RoleAgent, transport.RoleAdmin, transport.RoleRestore} {
		cl := c.endpoint(tcp.Config{Identity: c.identity("x", role)})
		if _, err := cl.Call(ctx, srv.Addr(), "shard.Delete", nil); !errors.Is(err, transport.ErrUnreachable) {
			t.Errorf("%s: %v, want a refused connection", role, err)
		}
	}
	// A certificate from another CA.
	other := newCluster(t)
	cl := c.endpoint(tcp.Config{Identity: other.identity("node-9", transport.RoleNode)})
	if _, err := cl.Call(ctx, srv.Addr(), "shard.Delete", nil); !errors.Is(err, transport.ErrUnreachable) {
		t.Errorf("foreign CA: %v, want a refused connection", err)
	}
	if calls.Load() != 0 {
		t.Fatalf("handler ran %d times for refused peers", calls.Load())
	}
}

// TestServerRestart: pooled connections to a server that restarted on the same address
// fail once and the call is sent again on a new connection.
func TestServerRestart(t *testing.T) {
	c := newCluster(t)
	id := c.identity("node-1", transport.RoleNode)
	srv, err := tcp.New(tcp.Config{ListenAddr: "127.0.0.1:0", Identity: id, Handler: echo})
	if err != nil {
		t.Fatal(err)
	}
	addr := srv.Addr()
	cl := c.endpoint(tcp.Config{Identity: c.identity("node-2", transport.RoleNode)})
	ctx := ctxT(t)
	if _, err := cl.Call(ctx, addr, "x.Echo", nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Call(ctx, addr, "x.Echo", nil); !errors.Is(err, transport.ErrUnreachable) {
		t.Fatalf("call to a stopped server: %v, want ErrUnreachable", err)
	}
	srv2 := c.endpoint(tcp.Config{ListenAddr: addr, Identity: id, Handler: echo})
	if got, err := cl.Call(ctx, srv2.Addr(), "x.Echo", []byte("again")); err != nil || string(got) != "x.Echo|node-2|node|again" {
		t.Fatalf("after restart: %q %v", got, err)
	}
}

// TestCancel: a call whose context ends while the handler runs returns at once.
func TestCancel(t *testing.T) {
	c := newCluster(t)
	release, started := make(chan struct{}), make(chan struct{})
	srv := c.endpoint(tcp.Config{ListenAddr: "127.0.0.1:0", Identity: c.identity("node-1", transport.RoleNode),
		Handler: transport.HandlerFunc(func(ctx context.Context, _ transport.Peer, _ string, _ []byte) ([]byte, error) {
			close(started)
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil, nil
		})})
	defer close(release)
	cl := c.endpoint(tcp.Config{Identity: c.identity("node-2", transport.RoleNode)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := cl.Call(ctx, srv.Addr(), "x.Block", nil)
		done <- err
	}()
	<-started
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled call: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cancelled call did not return")
	}
}

func BenchmarkCall1MiB(b *testing.B) {
	c := newCluster(b)
	srv := c.endpoint(tcp.Config{ListenAddr: "127.0.0.1:0", Identity: c.identity("node-1", transport.RoleNode),
		Handler: transport.HandlerFunc(func(context.Context, transport.Peer, string, []byte) ([]byte, error) { return nil, nil })})
	cl := c.endpoint(tcp.Config{Identity: c.identity("node-2", transport.RoleNode)})
	body := make([]byte, 1<<20)
	ctx := context.Background()
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := cl.Call(ctx, srv.Addr(), "x.Put", body); err != nil {
			b.Fatal(fmt.Sprint(err))
		}
	}
}
