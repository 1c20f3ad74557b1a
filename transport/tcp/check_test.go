package tcp_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
	"github.com/cofferhq/coffer/transport/tcp"
	"github.com/cofferhq/coffer/transport/wire"
)

// TestCheckPeerOnPooledConnection: once the check refuses a node's certificate, its next
// call on a pooled connection opened before is refused without reaching the handler.
func TestCheckPeerOnPooledConnection(t *testing.T) {
	c := newCluster(t)
	var revoked atomic.Bool
	var served atomic.Int64
	peerID := c.identity("node-2", transport.RoleNode)
	serial := pki.SerialString(peerID.Leaf().SerialNumber)
	srv := c.endpoint(tcp.Config{ListenAddr: "127.0.0.1:0", Identity: c.identity("node-1", transport.RoleNode),
		Handler: transport.HandlerFunc(func(context.Context, transport.Peer, string, []byte) ([]byte, error) {
			served.Add(1)
			return nil, nil
		}),
		CheckPeer: func(_ context.Context, p transport.Peer, _ string) error {
			if revoked.Load() && p.Serial == serial {
				return transport.Errorf(transport.PermissionDenied, "revoked")
			}
			return nil
		}})
	cl := c.endpoint(tcp.Config{Identity: peerID})
	ctx := ctxT(t)
	if _, err := cl.Call(ctx, srv.Addr(), "shard.Stats", nil); err != nil {
		t.Fatal(err)
	}
	revoked.Store(true)
	if _, err := cl.Call(ctx, srv.Addr(), "shard.Stats", nil); transport.CodeOf(err) != transport.PermissionDenied {
		t.Fatalf("after revocation: %v, want PermissionDenied", err)
	}
	if n := served.Load(); n != 1 {
		t.Fatalf("handler ran %d times, want 1", n)
	}
}

// TestCheckPeerBeforeBody: the check decides on a request from its header. A refused
// request that announces 8 MiB is answered before any of its body is sent; the body is
// then dropped and the connection carries the next request. A refused call through the
// client gets the check's error, and the handler never runs for it.
func TestCheckPeerBeforeBody(t *testing.T) {
	c := newCluster(t)
	var served atomic.Int64
	var checked []string
	var mu sync.Mutex
	srv := c.endpoint(tcp.Config{ListenAddr: "127.0.0.1:0", Identity: c.identity("node-1", transport.RoleNode),
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
	id := c.identity("node-2", transport.RoleNode)
	conn, err := tls.Dial("tcp", srv.Addr(), id.ClientTLS(tcp.ALPN))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const n = 8 << 20
	var hdr bytes.Buffer
	if err := wire.WriteRequest(&hdr, "x.Forbidden", nil); err != nil {
		t.Fatal(err)
	}
	frame := hdr.Bytes()
	binary.BigEndian.PutUint32(frame[len(frame)-4:], n)
	if _, err := conn.Write(frame); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	code, msg, _, err := wire.ReadResponse(conn)
	if err != nil || code != transport.PermissionDenied {
		t.Fatalf("refused request announcing %d bytes, none sent: code %v %q, err %v; want PermissionDenied before the body", n, code, msg, err)
	}
	if _, err := conn.Write(make([]byte, n)); err != nil {
		t.Fatal(err)
	}
	if err := wire.WriteRequest(conn, "x.Ok", []byte("abc")); err != nil {
		t.Fatal(err)
	}
	code, msg, body, err := wire.ReadResponse(conn)
	if err != nil || code != transport.OK || string(body) != "x.Ok:3" {
		t.Fatalf("next request on the connection: code %v %q body %q err %v", code, msg, body, err)
	}

	cl := c.endpoint(tcp.Config{Identity: id})
	ctx := ctxT(t)
	if _, err := cl.Call(ctx, srv.Addr(), "x.Forbidden", make([]byte, n)); transport.CodeOf(err) != transport.PermissionDenied {
		t.Fatalf("refused call with an %d-byte body: %v, want PermissionDenied", n, err)
	}
	if got, err := cl.Call(ctx, srv.Addr(), "x.Ok", nil); err != nil || string(got) != "x.Ok:0" {
		t.Fatalf("call after a refusal: %q %v", got, err)
	}
	if s := served.Load(); s != 2 {
		t.Fatalf("handler ran %d times, want 2 (the refused calls never reach it)", s)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"x.Forbidden", "x.Ok", "x.Forbidden", "x.Ok"}; fmt.Sprint(checked) != fmt.Sprint(want) {
		t.Fatalf("checked %v, want %v", checked, want)
	}
}
