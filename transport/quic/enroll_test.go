package quic_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync/atomic"
	"testing"

	quicgo "github.com/quic-go/quic-go"

	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
	"github.com/cofferhq/coffer/transport/quic"
)

// TestAnonymousPeerMayOnlyEnroll: a client without a certificate connects over the
// enrollment protocol, reaches the handler only for the allowed method (as an anonymous
// peer) and gets Unauthenticated for everything else; it still verifies the server
// against the CA.
func TestAnonymousPeerMayOnlyEnroll(t *testing.T) {
	c := newCluster(t)
	srv := c.endpoint(quic.Config{ListenAddr: "127.0.0.1:0", Identity: c.identity("node-1", transport.RoleNode),
		Handler: echo, AnonymousMethods: []string{"meta.Enroll"}})
	anon, err := pki.NewAnonymousIdentity(c.ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	cli := c.endpoint(quic.Config{Identity: anon})
	ctx := ctxT(t)
	got, err := cli.Call(ctx, srv.Addr(), "meta.Enroll", []byte("csr"))
	if err != nil || string(got) != "meta.Enroll|||csr" {
		t.Fatalf("anonymous enroll: %q %v, want to reach the handler as an anonymous peer", got, err)
	}
	for _, m := range []string{"meta.ListVaults", "shard.Delete", "meta.DeleteSnapshots"} {
		if _, err := cli.Call(ctx, srv.Addr(), m, nil); transport.CodeOf(err) != transport.Unauthenticated {
			t.Errorf("anonymous %s: %v, want Unauthenticated", m, err)
		}
	}
	if _, err := quic.New(quic.Config{ListenAddr: "127.0.0.1:0", Identity: anon}); err == nil {
		t.Error("an anonymous identity could listen")
	}

	// A server of another CA is refused by the enrolling client.
	other := newCluster(t)
	foreign := other.endpoint(quic.Config{ListenAddr: "127.0.0.1:0", Identity: other.identity("evil", transport.RoleNode),
		Handler: echo, AnonymousMethods: []string{"meta.Enroll"}})
	if _, err := cli.Call(ctx, foreign.Addr(), "meta.Enroll", nil); !errors.Is(err, transport.ErrRefused) {
		t.Fatalf("enroll at a server of another CA: %v, want ErrRefused", err)
	}
}

// TestNoCertificateOnRPCProtocolRefused: a raw TLS client without a certificate offering
// the RPC protocol fails the handshake; so does one offering both protocols (it gets the
// RPC configuration, which needs a certificate).
func TestNoCertificateOnRPCProtocolRefused(t *testing.T) {
	c := newCluster(t)
	srv := c.server("node-1", echo)
	ctx := ctxT(t)
	for _, protos := range [][]string{{quic.ALPNRPC}, {quic.ALPNRPC, quic.ALPNEnroll}} {
		addr, err := net.ResolveUDPAddr("udp", srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		conn, err := quicgo.DialAddr(ctx, addr.String(), &tls.Config{InsecureSkipVerify: true, NextProtos: protos, MinVersion: tls.VersionTLS13}, nil)
		if err == nil {
			// TLS 1.3: the client may finish before the server's verdict; the first
			// stream then fails.
			str, serr := conn.OpenStreamSync(ctx)
			if serr == nil {
				str.Write([]byte{0})
				_, serr = str.Read(make([]byte, 1))
			}
			conn.CloseWithError(0, "")
			if serr == nil {
				t.Fatalf("protocols %v: a client without a certificate got a working connection", protos)
			}
			continue
		}
		var te *quicgo.TransportError
		if !errors.As(err, &te) || !te.ErrorCode.IsCryptoError() {
			t.Fatalf("protocols %v: %v, want a TLS refusal", protos, err)
		}
	}
}

// TestCheckPeerAppliesToOpenConnections: once the check starts refusing a peer, its next
// call on the already-open connection is refused without reaching the handler.
func TestCheckPeerAppliesToOpenConnections(t *testing.T) {
	c := newCluster(t)
	var revoked atomic.Bool
	var served atomic.Int64
	h := transport.HandlerFunc(func(ctx context.Context, p transport.Peer, method string, body []byte) ([]byte, error) {
		served.Add(1)
		return nil, nil
	})
	agent := c.identity("host-a", transport.RoleAgent)
	serial := pki.SerialString(agent.Leaf().SerialNumber)
	srv := c.endpoint(quic.Config{ListenAddr: "127.0.0.1:0", Identity: c.identity("node-1", transport.RoleNode), Handler: h,
		CheckPeer: func(_ context.Context, p transport.Peer, method string) error {
			if p.Serial == "" || p.Issued.IsZero() {
				return transport.Errorf(transport.Internal, "peer without serial or issue time")
			}
			if revoked.Load() && p.Serial == serial {
				return transport.Errorf(transport.PermissionDenied, "certificate %s revoked", p.Serial)
			}
			return nil
		}})
	cli := c.endpoint(quic.Config{Identity: agent})
	ctx := ctxT(t)
	if _, err := cli.Call(ctx, srv.Addr(), "x.A", nil); err != nil {
		t.Fatal(err)
	}
	revoked.Store(true)
	if _, err := cli.Call(ctx, srv.Addr(), "x.A", nil); transport.CodeOf(err) != transport.PermissionDenied {
		t.Fatalf("call after revocation on the open connection: %v, want PermissionDenied", err)
	}
	if n := served.Load(); n != 1 {
		t.Fatalf("handler ran %d times, want 1", n)
	}
	other := c.client("host-b", transport.RoleAgent)
	if _, err := other.Call(ctx, srv.Addr(), "x.A", nil); err != nil {
		t.Fatalf("another certificate refused: %v", err)
	}
}
