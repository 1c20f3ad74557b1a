package quic_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
	"github.com/cofferhq/coffer/transport/pki/pkitest"
	"github.com/cofferhq/coffer/transport/quic"
	"github.com/cofferhq/coffer/transport/wire"
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

func (c *cluster) endpoint(cfg quic.Config) *quic.Endpoint {
	c.t.Helper()
	ep, err := quic.New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { ep.Close() })
	return ep
}

func (c *cluster) server(name string, h transport.Handler) *quic.Endpoint {
	return c.endpoint(quic.Config{ListenAddr: "127.0.0.1:0", Identity: c.identity(name, transport.RoleNode), Handler: h})
}

func (c *cluster) client(name string, role transport.Role) *quic.Endpoint {
	return c.endpoint(quic.Config{Identity: c.identity(name, role)})
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// echo answers "method|principal|role|" + body.
var echo = transport.HandlerFunc(func(_ context.Context, p transport.Peer, method string, body []byte) ([]byte, error) {
	return append([]byte(method+"|"+p.Principal+"|"+string(p.Role)+"|"), body...), nil
})

func TestRoundTrip(t *testing.T) {
	c := newCluster(t)
	srv := c.server("node-1", echo)
	cli := c.client("host-a", transport.RoleAgent)
	got, err := cli.Call(ctxT(t), srv.Addr(), "x.Echo", []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "x.Echo|host-a|agent|hello"; string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	// Node to node, both listening on one port each.
	n2 := c.server("node-2", echo)
	got, err = n2.Call(ctxT(t), srv.Addr(), "y.Z", nil)
	if err != nil || string(got) != "y.Z|node-2|node|" {
		t.Fatalf("node call: %q %v", got, err)
	}
}

func TestConcurrentCalls(t *testing.T) {
	c := newCluster(t)
	srv := c.server("node-1", echo)
	cli := c.client("host-a", transport.RoleAgent)
	ctx := ctxT(t)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := bytes.Repeat([]byte{byte(i)}, 1000+i)
			got, err := cli.Call(ctx, srv.Addr(), "x.Echo", body)
			if err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(got[len("x.Echo|host-a|agent|"):], body) {
				errs <- fmt.Errorf("call %d: wrong reply", i)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestLargeBody(t *testing.T) {
	c := newCluster(t)
	var gotSum [32]byte
	srv := c.server("node-1", transport.HandlerFunc(func(_ context.Context, _ transport.Peer, _ string, body []byte) ([]byte, error) {
		gotSum = sha256.Sum256(body)
		return body, nil
	}))
	cli := c.client("host-a", transport.RoleAgent)
	body := make([]byte, 8<<20)
	for i := range body {
		body[i] = byte(i * 7 >> 3)
	}
	got, err := cli.Call(ctxT(t), srv.Addr(), "x.Big", body)
	if err != nil {
		t.Fatal(err)
	}
	if want := sha256.Sum256(body); gotSum != want || !bytes.Equal(got, body) {
		t.Fatalf("8 MiB body corrupted in transit (server saw %x)", gotSum[:4])
	}
}

func TestForeignClientRefused(t *testing.T) {
	c := newCluster(t)
	var called atomic.Int32
	srv := c.server("node-1", transport.HandlerFunc(func(context.Context, transport.Peer, string, []byte) ([]byte, error) {
		called.Add(1)
		return nil, nil
	}))
	other, err := pki.NewCA("intruder", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := other.Issue(pki.IssueRequest{CommonName: "node-x", Role: transport.RoleNode}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// The intruder trusts the real cluster CA too, so the refusal is the server's.
	id, err := pki.NewIdentity(append(c.ca.CertPEM(), other.CertPEM()...), cert, key)
	if err != nil {
		t.Fatal(err)
	}
	cli := c.endpoint(quic.Config{Identity: id})
	for range 2 {
		_, err = cli.Call(ctxT(t), srv.Addr(), "x.Echo", []byte("hi"))
		if !errors.Is(err, transport.ErrUnreachable) || !errors.Is(err, transport.ErrRefused) {
			t.Fatalf("got %v, want ErrUnreachable and ErrRefused", err)
		}
	}
	if n := called.Load(); n != 0 {
		t.Fatalf("handler called %d times for a refused client", n)
	}
}

func TestGarbageStreamsDoNotHurtTheEndpoint(t *testing.T) {
	c := newCluster(t)
	srv := c.server("node-1", echo)
	cli := c.server("node-2", nil)
	ctx := ctxT(t)
	var frame bytes.Buffer
	if err := wire.WriteRequest(&frame, "x.Echo", make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	for name, in := range map[string][]byte{
		"garbage":   []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"truncated": frame.Bytes()[:frame.Len()-10],
	} {
		conn, err := cli.DialConn(ctx, srv.Addr(), quic.ALPNRPC)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write(in); err != nil {
			t.Fatal(err)
		}
		if err := conn.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		code, msg, _, err := wire.ReadResponse(conn)
		if err != nil {
			t.Fatalf("%s: reading the answer: %v", name, err)
		}
		if code != transport.Invalid {
			t.Fatalf("%s: code %v (%s), want Invalid", name, code, msg)
		}
		conn.Close()
	}
	// A stream abandoned half-way is reset; nothing else is affected.
	conn, err := cli.DialConn(ctx, srv.Addr(), quic.ALPNRPC)
	if err != nil {
		t.Fatal(err)
	}
	conn.Write(frame.Bytes()[:5])
	conn.Close()

	got, err := cli.Call(ctx, srv.Addr(), "x.Echo", []byte("ok"))
	if err != nil || string(got) != "x.Echo|node-2|node|ok" {
		t.Fatalf("good call after garbage: %q %v", got, err)
	}
}

func TestHandlerErrorCodes(t *testing.T) {
	c := newCluster(t)
	mux := transport.NewMux()
	mux.Handle("e", transport.HandlerFunc(func(_ context.Context, _ transport.Peer, method string, _ []byte) ([]byte, error) {
		switch method {
		case "e.NotFound":
			return nil, fmt.Errorf("wrapped: %w", transport.Errorf(transport.NotFound, "chunk abc not found"))
		case "e.Plain":
			return nil, errors.New("disk on fire")
		case "e.Panic":
			panic("boom")
		}
		return []byte("fine"), nil
	}))
	srv := c.endpoint(quic.Config{ListenAddr: "127.0.0.1:0", Identity: c.identity("node-1", transport.RoleNode)})
	cli := c.client("alice", transport.RoleAdmin)
	ctx := ctxT(t)
	_, err := cli.Call(ctx, srv.Addr(), "e.Ok", nil)
	if transport.CodeOf(err) != transport.Unavailable {
		t.Fatalf("no handler: %v, want Unavailable", err)
	}
	srv.SetHandler(mux)
	for _, tc := range []struct {
		method string
		code   transport.Code
		msg    string
	}{
		{"e.NotFound", transport.NotFound, "wrapped: chunk abc not found"},
		{"e.Plain", transport.Internal, "disk on fire"},
		{"e.Panic", transport.Internal, "quic: e.Panic: internal error"},
		{"nope.X", transport.UnknownMethod, `transport: unknown method "nope.X"`},
	} {
		_, err := cli.Call(ctx, srv.Addr(), tc.method, nil)
		var te *transport.Error
		if !errors.As(err, &te) || te.Code != tc.code || te.Msg != tc.msg {
			t.Errorf("%s: got %#v, want code %v msg %q", tc.method, err, tc.code, tc.msg)
		}
		if errors.Is(err, transport.ErrUnreachable) {
			t.Errorf("%s: a remote error must not look unreachable", tc.method)
		}
	}
	if got, err := cli.Call(ctx, srv.Addr(), "e.Ok", nil); err != nil || string(got) != "fine" {
		t.Fatalf("after errors: %q %v", got, err)
	}
	// A method that cannot be framed fails locally as Invalid.
	if _, err := cli.Call(ctx, srv.Addr(), "bad method", nil); transport.CodeOf(err) != transport.Invalid {
		t.Fatalf("bad method name: %v", err)
	}
}

// blocker is a handler that waits for its context and counts starts and cancellations.
type blocker struct {
	started, cancelled atomic.Int32
}

func (b *blocker) ServeRPC(ctx context.Context, _ transport.Peer, _ string, _ []byte) ([]byte, error) {
	b.started.Add(1)
	<-ctx.Done()
	b.cancelled.Add(1)
	return nil, ctx.Err()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCallContextCancelReachesHandler(t *testing.T) {
	c := newCluster(t)
	b := &blocker{}
	srv := c.server("node-1", b)
	cli := c.client("host-a", transport.RoleAgent)
	ctx, cancel := context.WithCancel(ctxT(t))
	done := make(chan error, 1)
	go func() {
		_, err := cli.Call(ctx, srv.Addr(), "x.Block", nil)
		done <- err
	}()
	waitFor(t, "handler start", func() bool { return b.started.Load() == 1 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("call: %v, want context.Canceled", err)
	}
	waitFor(t, "handler context cancelled", func() bool { return b.cancelled.Load() == 1 })
}

func TestCloseWithCallsInFlight(t *testing.T) {
	for _, side := range []string{"server", "client"} {
		t.Run(side, func(t *testing.T) {
			c := newCluster(t)
			b := &blocker{}
			srv := c.server("node-1", b)
			cli := c.client("host-a", transport.RoleAgent)
			ctx := ctxT(t)
			const n = 8
			errs := make(chan error, n)
			for range n {
				go func() {
					_, err := cli.Call(ctx, srv.Addr(), "x.Block", nil)
					errs <- err
				}()
			}
			waitFor(t, "all handlers started", func() bool { return b.started.Load() == n })
			victim := srv
			if side == "client" {
				victim = cli
			}
			closed := make(chan error, 1)
			go func() { closed <- victim.Close() }()
			select {
			case err := <-closed:
				if err != nil {
					t.Fatalf("Close: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Close did not return with calls in flight")
			}
			for range n {
				if err := <-errs; err == nil {
					t.Fatal("a call in flight succeeded across Close")
				}
			}
			if side == "client" {
				if _, err := cli.Call(ctx, srv.Addr(), "x", nil); !errors.Is(err, quic.ErrClosed) {
					t.Fatalf("call after Close: %v", err)
				}
			}
		})
	}
}

func TestRedialAfterPeerRestart(t *testing.T) {
	c := newCluster(t)
	id := c.identity("node-1", transport.RoleNode)
	srv := c.endpoint(quic.Config{ListenAddr: "127.0.0.1:0", Identity: id, Handler: echo})
	addr := srv.Addr()
	cli := c.client("host-a", transport.RoleAgent)
	ctx := ctxT(t)
	if _, err := cli.Call(ctx, addr, "x.A", nil); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	srv2 := c.endpoint(quic.Config{ListenAddr: addr, Identity: id, Handler: echo})
	var got []byte
	var err error
	// The old connection's close may still be in flight: poll until the redial works.
	waitFor(t, "call to the restarted peer", func() bool {
		got, err = cli.Call(ctx, srv2.Addr(), "x.B", nil)
		return err == nil
	})
	if string(got) != "x.B|host-a|agent|" {
		t.Fatalf("got %q", got)
	}
}

func TestStreamListener(t *testing.T) {
	c := newCluster(t)
	srv := c.server("node-1", nil)
	ln := srv.Listener("test/1")
	defer ln.Close()
	if srv.Listener("test/1") != ln {
		t.Fatal("second Listener call returned a different listener")
	}
	peer := c.server("node-2", nil)
	ctx := ctxT(t)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				io.Copy(conn, conn) // echo until the dialer closes
			}()
		}
	}()
	for i := range 3 {
		conn, err := peer.DialConn(ctx, srv.Addr(), "test/1")
		if err != nil {
			t.Fatal(err)
		}
		msg := []byte(fmt.Sprintf("ping %d", i))
		if _, err := conn.Write(msg); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(conn, buf); err != nil || !bytes.Equal(buf, msg) {
			t.Fatalf("echo %d: %q %v", i, buf, err)
		}
		if conn.RemoteAddr().String() != srv.Addr() {
			t.Errorf("RemoteAddr %v, want %s", conn.RemoteAddr(), srv.Addr())
		}
		conn.Close()
	}

	// Stream protocols are for nodes only: an agent certificate is refused.
	agent := c.client("host-a", transport.RoleAgent)
	conn, err := agent.DialConn(ctx, srv.Addr(), "test/1")
	if err == nil {
		// TLS 1.3 lets the client finish before the server refuses it: the refusal
		// then shows up on the first exchange.
		conn.Write([]byte("x"))
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Read(make([]byte, 1))
	}
	if err == nil {
		t.Fatal("an agent reached a node-only stream protocol")
	}
	// An unregistered protocol fails the handshake.
	if _, err := peer.DialConn(ctx, srv.Addr(), "nope/1"); !errors.Is(err, transport.ErrUnreachable) {
		t.Fatalf("unknown protocol: %v", err)
	}
	ln.Close()
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
	wg.Wait()
}
