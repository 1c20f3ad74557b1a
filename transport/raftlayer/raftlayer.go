// Package raftlayer carries hashicorp/raft's network transport over Coffer QUIC streams: it
// implements raft.StreamLayer on an endpoint's "coffer-raft/1" stream protocol, so Raft
// shares the node's single UDP port and its mutual TLS.
//
// Who may speak Raft: the layer dials only servers holding a meta certificate
// (transport.RoleMeta), and every stream it accepts names its verified peer (PeerOf), so
// that the meta server can admit only servers of its current Raft configuration
// (meta/server does, before raft reads a byte). The endpoint itself admits any node
// certificate to the protocol.
//
// This is the only package under transport/ that imports hashicorp/raft, so that agents,
// which link transport but never Raft, stay thin.
//
// Example:
//
//	layer := raftlayer.New(ep) // ep is a *quic.Endpoint
//	trans := raft.NewNetworkTransport(layer, 3, 10*time.Second, logOutput)
//	r, err := raft.NewRaft(conf, fsm, logs, stable, snaps, trans)
package raftlayer

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cofferhq/coffer/transport"
)

// ALPN is the stream protocol Raft runs on.
const ALPN = "coffer-raft/1"

// Endpoint is what the layer needs from a QUIC endpoint (transport/quic.Endpoint has it).
type Endpoint interface {
	// Listener returns the listener for streams of protocol alpn.
	Listener(alpn string) net.Listener
	// DialConn opens a stream of protocol alpn to addr. ctx bounds only the opening.
	// Its conns, and those of Listener, implement PeerConn.
	DialConn(ctx context.Context, addr, alpn string) (net.Conn, error)
	// Addr is the endpoint's bound host:port.
	Addr() string
}

// Layer is a raft.StreamLayer over an Endpoint. It is safe for concurrent use. Close
// closes only the layer's listener, not the endpoint.
type Layer struct {
	ep Endpoint
	ln net.Listener
}

var _ raft.StreamLayer = (*Layer)(nil)

// New registers the Raft protocol on ep and returns the layer. Create it before the
// node's peers dial it: until then the endpoint does not offer the protocol.
//
// NB: Raft advertises Addr() as this server's address, so bind the endpoint to the address
// peers should use (not 0.0.0.0) on nodes with the meta role.
func New(ep Endpoint) *Layer {
	return &Layer{ep: ep, ln: ep.Listener(ALPN)}
}

// Accept waits for the next incoming Raft stream.
func (l *Layer) Accept() (net.Conn, error) { return l.ln.Accept() }

// Close stops accepting Raft streams.
func (l *Layer) Close() error { return l.ln.Close() }

// Addr returns the endpoint's address.
func (l *Layer) Addr() net.Addr { return l.ln.Addr() }

// PeerConn is a stream that names its remote end's verified certificate
// (transport/quic's streams are).
type PeerConn interface {
	net.Conn
	Peer() transport.Peer
}

// PeerOf returns the verified identity of c's remote end; ok is false when c does not
// carry one (it is not a PeerConn), and such a conn must be refused.
func PeerOf(c net.Conn) (p transport.Peer, ok bool) {
	pc, ok := c.(PeerConn)
	if !ok {
		return transport.Peer{}, false
	}
	return pc.Peer(), true
}

// Dial opens a Raft stream to address, giving up after timeout (no limit when timeout is
// not positive). Raft writes first on every new connection, as the stream protocol needs.
// The stream is refused (closed, with an error naming the remote's role) unless the
// remote holds a meta certificate: no chunk node may pose as a Raft server.
func (l *Layer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	c, err := l.ep.DialConn(ctx, string(address), ALPN)
	if err != nil {
		return nil, fmt.Errorf("raftlayer: dial %s: %w", address, err)
	}
	p, ok := PeerOf(c)
	if !ok || p.Role != transport.RoleMeta {
		c.Close()
		return nil, fmt.Errorf("raftlayer: dial %s: remote %q has role %q: only a %q certificate may serve Raft",
			address, p.Principal, p.Role, transport.RoleMeta)
	}
	return c, nil
}
