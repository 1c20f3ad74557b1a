package quic

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
)

// Listener returns a net.Listener for the stream protocol alpn (anything but ALPNRPC).
// Streams that node peers open on connections negotiated with alpn come out of Accept as
// net.Conn, with a method Peer() transport.Peer naming the verified remote certificate. Register the protocol before peers dial it: the endpoint offers alpn in
// handshakes only while the listener is open. Asking again for an open protocol returns
// the same listener. Closing the listener stops offering alpn; established connections
// have their new streams refused.
//
// NB: a stream reaches the accepting side only once its first byte arrives, so dialers
// must write first (Raft does: every RPC starts with a type byte).
func (e *Endpoint) Listener(alpn string) net.Listener {
	if alpn == ALPNRPC || alpn == "" {
		panic(fmt.Sprintf("quic: Listener(%q): reserved or empty protocol", alpn))
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if l := e.mu.listeners[alpn]; l != nil {
		return l
	}
	l := &streamListener{
		e:      e,
		alpn:   alpn,
		conns:  make(chan net.Conn),
		closed: make(chan struct{}),
	}
	if e.mu.closed {
		close(l.closed)
		return l
	}
	e.mu.listeners[alpn] = l
	return l
}

// DialConn opens a new stream for protocol alpn to addr, on a connection cached per
// (addr, alpn), and returns it as a net.Conn whose method Peer() transport.Peer names the
// server's verified certificate. The peer accepts it only after the first
// byte, so write first. Failures wrap transport.ErrUnreachable or ctx.Err().
func (e *Endpoint) DialConn(ctx context.Context, addr, alpn string) (net.Conn, error) {
	str, conn, err := e.openStream(ctx, addr, alpn)
	if err != nil {
		return nil, fmt.Errorf("quic: dial stream %s: %w", alpn, err)
	}
	return newStreamConn(str, conn), nil
}

// streamListener hands accepted streams to Accept. conns is never closed; closed is closed
// once, by Close.
type streamListener struct {
	e         *Endpoint
	alpn      string
	conns     chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
}

func (l *streamListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, fmt.Errorf("quic: accept %s: %w", l.alpn, net.ErrClosed)
	}
}

func (l *streamListener) Close() error {
	l.closeOnce.Do(func() {
		close(l.closed)
		l.e.mu.Lock()
		if l.e.mu.listeners[l.alpn] == l {
			delete(l.e.mu.listeners, l.alpn)
		}
		l.e.mu.Unlock()
	})
	return nil
}

func (l *streamListener) Addr() net.Addr { return l.e.udp.LocalAddr() }

// deliver blocks until Accept takes c, or reports false when the listener or ctx closes.
func (l *streamListener) deliver(ctx context.Context, c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.closed:
		return false
	case <-ctx.Done():
		return false
	}
}

// streamConn is a QUIC stream as a net.Conn that also names its verified remote peer.
type streamConn struct {
	*quicgo.Stream
	conn          *quicgo.Conn
	local, remote net.Addr
}

func newStreamConn(str *quicgo.Stream, c *quicgo.Conn) *streamConn {
	return &streamConn{Stream: str, conn: c, local: c.LocalAddr(), remote: c.RemoteAddr()}
}

// Peer returns the remote end's identity from its verified certificate: the client's on
// a stream accepted through Listener, the server's on one opened by DialConn. (Both
// ends' certificates are always verified against the cluster CA; an enrollment
// connection never carries these streams.)
func (c *streamConn) Peer() transport.Peer {
	return pki.PeerFromTLS(c.conn.ConnectionState().TLS, c.remote)
}

// Close closes both directions: it stops reading and sends a FIN after pending data.
func (c *streamConn) Close() error {
	c.Stream.CancelRead(0)
	return c.Stream.Close()
}

// CloseWrite closes only the send direction (sends a FIN), like net.TCPConn.CloseWrite.
func (c *streamConn) CloseWrite() error { return c.Stream.Close() }

func (c *streamConn) LocalAddr() net.Addr  { return c.local }
func (c *streamConn) RemoteAddr() net.Addr { return c.remote }

func (c *streamConn) SetDeadline(t time.Time) error      { return c.Stream.SetDeadline(t) }
func (c *streamConn) SetReadDeadline(t time.Time) error  { return c.Stream.SetReadDeadline(t) }
func (c *streamConn) SetWriteDeadline(t time.Time) error { return c.Stream.SetWriteDeadline(t) }

var _ net.Conn = (*streamConn)(nil)
