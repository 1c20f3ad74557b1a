package tcp

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"time"

	"github.com/cofferhq/coffer/transport"
)

// pingMethod is the RPC an endpoint answers itself, before CheckPeer and the handler: an
// empty reply that says only that the peer's process still serves its connections.
const pingMethod = "tcp.Ping"

// The liveness watch of calls (Config.Liveness, see transport.Liveness) is kept per peer
// address: when a call has heard nothing from its peer (on any connection) for After,
// the peer is probed with a ping on another connection.

// live returns the liveness record of addr.
func (e *Endpoint) live(addr string) *transport.Live {
	e.mu.Lock()
	defer e.mu.Unlock()
	l := e.mu.live[addr]
	if l == nil {
		l = transport.NewLive()
		e.mu.live[addr] = l
	}
	return l
}

// prober is how the liveness watch probes addr.
func (e *Endpoint) prober(addr string) transport.Prober {
	return transport.Prober{Go: e.goTracked, Ping: func() (bool, error) { return e.pingOnce(addr) }}
}

// goTracked runs f in a goroutine Close waits for, or returns ErrClosed.
func (e *Endpoint) goTracked(f func()) error {
	if !transport.GoTracked(&e.mu, &e.mu.closed, &e.wg, f) {
		return ErrClosed
	}
	return nil
}

// pingOnce is one probe of addr: one ping on an idle or new connection, bounded by the
// liveness timeout. Any answer, an error one included, is an answer. starved reports
// that it timed out late (transport.Starved).
func (e *Endpoint) pingOnce(addr string) (starved bool, err error) {
	deadline := time.Now().Add(e.liveness.Timeout)
	ctx, cancel := context.WithDeadline(e.ctx, deadline)
	defer cancel()
	for attempt := 0; ; attempt++ {
		c, reused, err := e.conn(ctx, addr)
		if err != nil {
			if ctx.Err() != nil && e.ctx.Err() == nil {
				return transport.Starved(deadline, e.liveness.Timeout), fmt.Errorf("tcp: no connection for a liveness probe within %v", e.liveness.Timeout)
			}
			return false, err
		}
		_, answered, err := e.roundTrip(ctx, c, pingMethod, nil)
		if answered {
			e.release(addr, c)
			return false, nil
		}
		e.drop(c)
		if ctx.Err() != nil && e.ctx.Err() == nil {
			return transport.Starved(deadline, e.liveness.Timeout), fmt.Errorf("tcp: no answer to a liveness probe within %v", e.liveness.Timeout)
		}
		if !reused || attempt > 0 {
			return false, err
		}
		// NB: an idle connection the peer had closed says nothing of the peer: ask
		// again on a new one.
	}
}

// watchedRoundTrip is roundTrip under the liveness watch of addr.
func (e *Endpoint) watchedRoundTrip(ctx context.Context, addr string, c *tls.Conn, method string, body []byte) ([]byte, bool, error) {
	if e.liveness.Off || !transport.LivenessWatched(ctx) {
		return e.roundTrip(ctx, c, method, body)
	}
	var reply []byte
	var answered bool
	err := e.live(addr).Watch(ctx, e.liveness, e.prober(addr), c, func(ctx context.Context, rw io.ReadWriter) (bool, error) {
		var err error
		reply, answered, err = e.roundTripVia(ctx, c, rw, method, body)
		return answered, err
	})
	if err != nil && !answered {
		return nil, false, err
	}
	return reply, answered, err
}
