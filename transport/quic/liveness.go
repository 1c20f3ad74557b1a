package quic

import (
	"context"
	"errors"
	"fmt"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/cofferhq/coffer/transport"
)

// pingMethod is the RPC an endpoint answers itself, before CheckPeer and the handler, for
// any authenticated peer: an empty reply that says only that the peer's endpoint still
// reads its connection. It is not a method of any handler.
const pingMethod = "quic.Ping"

// ErrStalled is transport.ErrStalled: a call abandoned by its liveness watch.
var ErrStalled = transport.ErrStalled

// The liveness watch of calls (Config.Liveness, see transport.Liveness) is kept per
// outgoing connection: when a call has heard nothing on its connection for After, the
// peer is probed with a ping on a new stream of that connection.

// live returns the liveness record of conn, made on first use and dropped when the
// connection ends.
func (e *Endpoint) live(conn *quicgo.Conn) *transport.Live {
	e.mu.Lock()
	defer e.mu.Unlock()
	l := e.mu.live[conn]
	if l == nil {
		l = transport.NewLive()
		e.mu.live[conn] = l
		context.AfterFunc(conn.Context(), func() {
			e.mu.Lock()
			delete(e.mu.live, conn)
			e.mu.Unlock()
		})
	}
	return l
}

// prober is how the liveness watch probes conn.
func (e *Endpoint) prober(conn *quicgo.Conn) transport.Prober {
	return transport.Prober{Go: e.goTracked, Ping: func() (bool, error) { return e.pingOnce(conn) }}
}

// goTracked runs f in a goroutine Close waits for, or returns ErrClosed.
func (e *Endpoint) goTracked(f func()) error {
	if !transport.GoTracked(&e.mu, &e.mu.closed, &e.wg, f) {
		return ErrClosed
	}
	return nil
}

// pingOnce is one probe of conn: one ping, waiting for any answer up to the liveness
// timeout. An error answer (an old peer that does not know the ping) is an answer too.
// starved reports that it timed out late (transport.Starved).
func (e *Endpoint) pingOnce(conn *quicgo.Conn) (starved bool, err error) {
	deadline := time.Now().Add(e.liveness.Timeout)
	ctx, cancel := context.WithDeadline(e.ctx, deadline)
	defer cancel()
	str, err := conn.OpenStreamSync(ctx)
	if err == nil {
		_, _, err = e.roundTrip(ctx, str, pingMethod, nil)
		var te *transport.Error
		if err == nil || errors.As(err, &te) {
			return false, nil
		}
	} else {
		err = fmt.Errorf("quic: open a probe stream: %w", err)
	}
	if ctx.Err() != nil && e.ctx.Err() == nil {
		return transport.Starved(deadline, e.liveness.Timeout), fmt.Errorf("quic: no answer to a liveness probe within %v", e.liveness.Timeout)
	}
	return false, err
}
