package tcp_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
	"github.com/cofferhq/coffer/transport/tcp"
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
