package quic

import (
	"context"
	"errors"
	"fmt"
	"net"

	quicgo "github.com/quic-go/quic-go"

	"github.com/cofferhq/coffer/transport"
)

// conn returns a live cached connection to addr for alpn, dialing when there is none.
// Concurrent callers share one dial. fresh reports whether this call waited for a new
// dial. Failures wrap transport.ErrUnreachable (or are the caller's ctx error).
func (e *Endpoint) conn(ctx context.Context, addr, alpn string) (c *quicgo.Conn, fresh bool, err error) {
	key := dialKey{addr, alpn}
	for {
		e.mu.Lock()
		if e.mu.closed {
			e.mu.Unlock()
			return nil, false, fmt.Errorf("quic: dial %s: %w: %w", addr, transport.ErrUnreachable, ErrClosed)
		}
		d := e.mu.dials[key]
		if d != nil {
			select {
			case <-d.ready:
				if d.conn != nil && d.conn.Context().Err() != nil {
					// NB: the cached connection died (idle timeout, peer restart): drop it and
					// dial again.
					delete(e.mu.dials, key)
					e.mu.Unlock()
					continue
				}
			default:
			}
		} else {
			d = &dialEntry{ready: make(chan struct{})}
			e.mu.dials[key] = d
			fresh = true
			e.wg.Add(1)
			go e.dial(key, d)
		}
		e.mu.Unlock()
		select {
		case <-d.ready:
		case <-ctx.Done():
			return nil, false, fmt.Errorf("quic: dial %s: %w", addr, ctx.Err())
		}
		if d.err != nil {
			return nil, false, d.err
		}
		return d.conn, fresh, nil
	}
}

// dial runs one handshake, bounded by handshakeTimeout and the endpoint's lifetime rather
// than by any one caller, since several callers may wait for it.
func (e *Endpoint) dial(key dialKey, d *dialEntry) {
	defer e.wg.Done()
	ctx, cancel := context.WithTimeout(e.ctx, handshakeTimeout)
	defer cancel()
	conn, err := e.dialConn(ctx, key)
	e.mu.Lock()
	if err == nil && e.mu.closed {
		conn.CloseWithError(codeClosing, "endpoint closed")
		conn, err = nil, fmt.Errorf("quic: dial %s: %w: %w", key.addr, transport.ErrUnreachable, ErrClosed)
	}
	d.conn, d.err = conn, err
	if err != nil && e.mu.dials[key] == d {
		// A failed dial is not cached: the next call tries again.
		delete(e.mu.dials, key)
	}
	close(d.ready)
	e.mu.Unlock()
	if err != nil {
		e.log.Debug("quic dial failed", "addr", key.addr, "alpn", key.alpn, "err", err)
	}
}

func (e *Endpoint) dialConn(ctx context.Context, key dialKey) (*quicgo.Conn, error) {
	uaddr, err := net.ResolveUDPAddr("udp", key.addr)
	if err != nil {
		return nil, fmt.Errorf("quic: dial %s: %w: %w", key.addr, transport.ErrUnreachable, err)
	}
	conn, err := e.tr.Dial(ctx, uaddr, e.id.ClientTLS(key.alpn), e.qconf)
	if err != nil {
		return nil, fmt.Errorf("quic: dial %s (%s): %w: %w", key.addr, key.alpn, unreachable(err), err)
	}
	return conn, nil
}

// forget drops c from the cache if it is still the cached connection for key.
func (e *Endpoint) forget(key dialKey, c *quicgo.Conn) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if d := e.mu.dials[key]; d != nil && d.conn == c {
		delete(e.mu.dials, key)
	}
}

// openStream opens a stream on a cached connection, dialing again once when the cached
// connection turns out to be dead.
func (e *Endpoint) openStream(ctx context.Context, addr, alpn string) (*quicgo.Stream, *quicgo.Conn, error) {
	for attempt := 0; ; attempt++ {
		c, fresh, err := e.conn(ctx, addr, alpn)
		if err != nil {
			return nil, nil, err
		}
		str, err := c.OpenStreamSync(ctx)
		if err == nil {
			return str, c, nil
		}
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("quic: open stream to %s: %w", addr, ctx.Err())
		}
		e.forget(dialKey{addr, alpn}, c)
		if fresh || attempt > 0 {
			return nil, nil, fmt.Errorf("quic: open stream to %s: %w: %w", addr, unreachable(err), err)
		}
	}
}

// unreachable returns the sentinel for a connection-level failure err: an error matching
// both transport.ErrRefused and transport.ErrUnreachable when the TLS handshake was
// refused (a QUIC CRYPTO_ERROR from either side), else transport.ErrUnreachable.
func unreachable(err error) error {
	var te *quicgo.TransportError
	if errors.As(err, &te) && te.ErrorCode.IsCryptoError() {
		return refusedErr{}
	}
	return transport.ErrUnreachable
}

// refusedErr matches transport.ErrRefused and transport.ErrUnreachable.
type refusedErr struct{}

func (refusedErr) Error() string { return transport.ErrRefused.Error() }

func (refusedErr) Is(target error) bool {
	return target == transport.ErrRefused || target == transport.ErrUnreachable
}
