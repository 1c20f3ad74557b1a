package quic_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/quic"
	"github.com/cofferhq/coffer/transport/wire"
)

// TestCheckPeerBeforeBody: CheckPeer decides on a request from its header. A refused
// request announcing 8 MiB is answered before any of its body is sent, and a refused
// call through Call gets the check's error (not a reset) although its body was never
// read; the handler never runs for either.
func TestCheckPeerBeforeBody(t *testing.T) {
	c := newCluster(t)
	var served atomic.Int64
	var mu sync.Mutex
	var checked []string
	srv := c.endpoint(quic.Config{ListenAddr: "127.0.0.1:0", Identity: c.identity("node-1", transport.RoleNode),
		Handler: transport.HandlerFunc(func(_ context.Context, _ transport.Peer, m string, body []byte) ([]byte, error) {
			served.Add(1)
			return []byte(fmt.Sprintf("%s:%d", m, len(body))), nil
		}),
		CheckPeer: func(_ context.Context, p transport.Peer, method string) error {
			mu.Lock()
			checked = append(checked, method)
			mu.Unlock()
			if method == "x.Forbidden" {
				return transport.Errorf(transport.PermissionDenied, "%s may not call %s", p.Principal, method)
			}
			return nil
		}})
	cli := c.server("node-2", nil)
	ctx := ctxT(t)
	const n = 8 << 20

	conn, err := cli.DialConn(ctx, srv.Addr(), quic.ALPNRPC)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(requestHeader("x.Forbidden", n)); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	code, msg, _, err := wire.ReadResponse(conn)
	if err != nil || code != transport.PermissionDenied {
		t.Fatalf("refused request announcing %d bytes, none sent: code %v %q, err %v; want PermissionDenied before the body", n, code, msg, err)
	}

	if _, err := cli.Call(ctx, srv.Addr(), "x.Forbidden", make([]byte, n)); transport.CodeOf(err) != transport.PermissionDenied {
		t.Fatalf("refused call with a %d-byte body: %v, want PermissionDenied", n, err)
	}
	if got, err := cli.Call(ctx, srv.Addr(), "x.Ok", []byte("abc")); err != nil || string(got) != "x.Ok:3" {
		t.Fatalf("allowed call: %q %v", got, err)
	}
	if s := served.Load(); s != 1 {
		t.Fatalf("handler ran %d times, want 1", s)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"x.Forbidden", "x.Forbidden", "x.Ok"}; fmt.Sprint(checked) != fmt.Sprint(want) {
		t.Fatalf("checked %v, want %v", checked, want)
	}
}

// logCounter counts Warn records by message and "addr" attribute.
type logCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (l *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCounter) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logCounter) WithGroup(string) slog.Handler            { return l }
func (l *logCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn {
		return nil
	}
	addr := ""
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "addr" {
			addr = a.Value.String()
		}
		return true
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n[r.Message+" "+addr]++
	return nil
}

func (l *logCounter) count(msg, addr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n[msg+" "+addr]
}

// waitDone waits for ctx to end, failing the test after d.
func waitDone(t *testing.T, what string, ctx context.Context, d time.Duration) {
	t.Helper()
	select {
	case <-ctx.Done():
	case <-time.After(d):
		t.Fatalf("%s: not done after %v", what, d)
	}
}

// TestAnonymousLimits exercises each limit on peers without a certificate with small
// values: body size (refused from the header), requests in progress per connection, the
// read deadline, connections per address and in all (refused at the handshake, the slot
// given back when a connection closes), and one log line per address and kind.
func TestAnonymousLimits(t *testing.T) {
	c := newCluster(t)
	logs := &logCounter{n: map[string]int{}}
	lim := quic.AnonymousLimits{MaxBody: 1024, ReadTimeout: time.Second, MaxStreamsPerConn: 2, MaxConnsPerAddr: 2, MaxConns: 3}
	srv := c.endpoint(quic.Config{ListenAddr: "127.0.0.1:0", Identity: c.identity("meta-1", transport.RoleMeta),
		Handler: echo, AnonymousMethods: []string{"meta.Enroll"}, Anonymous: lim, Logger: slog.New(logs)})
	ctx := ctxT(t)
	a := newRawAnon(t, "127.0.0.2")
	conn1, err := a.dial(ctx, srv.Addr())
	if err != nil {
		t.Fatal(err)
	}

	// Body size: one byte over is refused from the header, nothing of it sent.
	str, err := conn1.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	str.Write(requestHeader("meta.Enroll", uint32(lim.MaxBody+1)))
	str.SetReadDeadline(time.Now().Add(10 * time.Second))
	code, msg, _, err := wire.ReadResponse(str)
	if err != nil || code != transport.Invalid || !strings.Contains(msg, "1025 bytes exceeds the 1024") {
		t.Fatalf("anonymous body of %d bytes announced: code %v %q err %v, want Invalid before the body", lim.MaxBody+1, code, msg, err)
	}
	// Exactly the limit is served.
	str, err = conn1.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := wire.WriteRequest(str, "meta.Enroll", make([]byte, lim.MaxBody)); err != nil {
		t.Fatal(err)
	}
	str.Close()
	str.SetReadDeadline(time.Now().Add(10 * time.Second))
	if code, msg, body, err := wire.ReadResponse(str); err != nil || code != transport.OK || len(body) != len("meta.Enroll|||")+lim.MaxBody {
		t.Fatalf("anonymous body of %d bytes: code %v %q err %v", lim.MaxBody, code, msg, err)
	}

	// Nothing may follow an anonymous request but its FIN.
	str, err = conn1.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := wire.WriteRequest(str, "meta.Enroll", []byte("x")); err != nil {
		t.Fatal(err)
	}
	str.Write([]byte("more"))
	str.Close()
	str.SetReadDeadline(time.Now().Add(10 * time.Second))
	if code, msg, _, err := wire.ReadResponse(str); err != nil || code != transport.Invalid || !strings.Contains(msg, "data after the request") {
		t.Fatalf("anonymous request followed by more data: code %v %q err %v, want Invalid", code, msg, err)
	}

	// Requests in progress: two stalled requests hold the connection's two slots; the
	// third stream is reset at once; the stalled ones are reset at the read deadline.
	var stalled []*quicgo.Stream
	for range 2 {
		s, err := conn1.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s.Write(append(requestHeader("meta.Enroll", 100), 1, 2, 3))
		stalled = append(stalled, s)
	}
	start := time.Now()
	third, err := conn1.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	third.Write(requestHeader("meta.Enroll", 10))
	waitDone(t, "third stream on a connection with two requests in progress", third.Context(), 5*time.Second)
	var se *quicgo.StreamError
	if _, err := third.Read(make([]byte, 1)); !errors.As(err, &se) || !se.Remote {
		t.Fatalf("third stream: read %v, want a reset by the server", err)
	}
	for i, s := range stalled {
		waitDone(t, fmt.Sprintf("stalled request %d", i), s.Context(), 10*time.Second)
	}
	if d := time.Since(start); d < lim.ReadTimeout/2 {
		t.Fatalf("stalled requests reset after %v, before the read deadline of %v", d, lim.ReadTimeout)
	}
	// The slots are free again.
	str, err = conn1.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := wire.WriteRequest(str, "meta.Enroll", []byte("x")); err != nil {
		t.Fatal(err)
	}
	str.Close()
	str.SetReadDeadline(time.Now().Add(10 * time.Second))
	if code, _, _, err := wire.ReadResponse(str); err != nil || code != transport.OK {
		t.Fatalf("request after the stalled ones ended: code %v err %v", code, err)
	}

	// Connections: two from one address, three in all.
	conn2, err := a.dial(ctx, srv.Addr())
	if err != nil {
		t.Fatalf("second connection from one address: %v", err)
	}
	defer conn2.CloseWithError(0, "")
	for i := range 3 {
		if _, err := a.dial(ctx, srv.Addr()); !isCryptoErr(err) {
			t.Fatalf("connection %d from an address at its limit: %v, want refused at the handshake", 3+i, err)
		}
	}
	b := newRawAnon(t, "127.0.0.3")
	conn3, err := b.dial(ctx, srv.Addr())
	if err != nil {
		t.Fatalf("first connection from another address: %v", err)
	}
	defer conn3.CloseWithError(0, "")
	if _, err := b.dial(ctx, srv.Addr()); !isCryptoErr(err) {
		t.Fatalf("fourth anonymous connection in all: %v, want refused at the handshake", err)
	}
	// Closing one gives its slot back (once the server has seen the close).
	conn1.CloseWithError(0, "")
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := b.dial(ctx, srv.Addr())
		if err == nil {
			conn.CloseWithError(0, "")
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a slot freed by a closed connection was not given back: %v", err)
		}
	}

	// One log line per address and kind, however many refusals.
	if n := logs.count("refused a connection without a certificate", "127.0.0.2"); n != 1 {
		t.Errorf("%d log lines for 3 refused connections from one address, want 1", n)
	}
	if n := logs.count("refused a connection without a certificate", "127.0.0.3"); n != 1 {
		t.Errorf("%d log lines for refused connections from another address, want 1", n)
	}
	if n := logs.count("refused a stream without a certificate", "127.0.0.2"); n != 1 {
		t.Errorf("%d log lines for a refused stream, want 1", n)
	}
}

func isCryptoErr(err error) bool {
	var te *quicgo.TransportError
	return errors.As(err, &te) && te.ErrorCode.IsCryptoError()
}
