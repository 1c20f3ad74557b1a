package tcp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cofferhq/coffer/transport"
)

// Defaults of the liveness watch of calls (Config.Liveness).
const (
	DefaultLivenessAfter   = time.Second
	DefaultLivenessTimeout = 2 * time.Second
)

// pingMethod is the RPC an endpoint answers itself, before CheckPeer and the handler: an
// empty reply that says only that the peer's process still serves its connections.
const pingMethod = "tcp.Ping"

// Liveness configures how a call notices a peer that stopped answering: a paused node's
// kernel still accepts and acknowledges TCP, so without it a call waits for its context.
// When a call has heard nothing from its peer (on any connection) for After, the peer is
// probed with a ping on another connection (one probe at a time per peer, shared by its
// calls); a peer that answers is merely slow and the call waits on. A probe not answered
// within Timeout ends every call waiting on it with an error matching
// transport.ErrStalled and transport.ErrUnreachable.
type Liveness struct {
	After, Timeout time.Duration
	// Off turns the watch off.
	Off bool
}

func (l Liveness) withDefaults() (Liveness, error) {
	if l.After < 0 || l.Timeout < 0 {
		return l, fmt.Errorf("tcp: negative liveness durations %v, %v", l.After, l.Timeout)
	}
	if l.After == 0 {
		l.After = DefaultLivenessAfter
	}
	if l.Timeout == 0 {
		l.Timeout = DefaultLivenessTimeout
	}
	return l, nil
}

// peerLive is the liveness record of one peer address.
type peerLive struct {
	heard atomic.Int64 // unix nanoseconds of the last answer from the peer
	mu    sync.Mutex
	probe *probe
}

type probe struct {
	done chan struct{}
	err  error
}

func (l *peerLive) heardFrom() { l.heard.Store(time.Now().UnixNano()) }

func (l *peerLive) silentFor() time.Duration { return time.Since(time.Unix(0, l.heard.Load())) }

// live returns the liveness record of addr.
func (e *Endpoint) live(addr string) *peerLive {
	e.mu.Lock()
	defer e.mu.Unlock()
	l := e.mu.live[addr]
	if l == nil {
		l = &peerLive{}
		l.heardFrom()
		e.mu.live[addr] = l
	}
	return l
}

// ping returns the outcome of a probe of addr, joining the one in progress. ctx ends
// only the wait, never the probe.
func (e *Endpoint) ping(ctx context.Context, addr string, l *peerLive) error {
	l.mu.Lock()
	p := l.probe
	if p == nil || isDone(p.done) {
		e.mu.Lock()
		closed := e.mu.closed
		if !closed {
			e.wg.Add(1)
		}
		e.mu.Unlock()
		if closed {
			l.mu.Unlock()
			return ErrClosed
		}
		p = &probe{done: make(chan struct{})}
		l.probe = p
		go func() {
			defer e.wg.Done()
			p.err = e.runPing(addr)
			if p.err == nil {
				l.heardFrom()
			}
			close(p.done)
		}()
	}
	l.mu.Unlock()
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func isDone(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// runPing sends one ping to addr on an idle or new connection, bounded by the liveness
// timeout. Any answer, an error one included, is an answer.
func (e *Endpoint) runPing(addr string) error {
	for attempt := 0; ; attempt++ {
		starved, err := e.pingOnce(addr)
		// NB: a probe whose own timeout fired late ran in a starved process: that says
		// nothing of the peer, so it is asked again, twice at most.
		if err == nil || !starved || attempt == 2 {
			return err
		}
	}
}

// pingOnce is one probe of addr. starved reports that it timed out and that its timeout
// fired more than a quarter of the timeout late.
func (e *Endpoint) pingOnce(addr string) (starved bool, err error) {
	deadline := time.Now().Add(e.liveness.Timeout)
	ctx, cancel := context.WithDeadline(e.ctx, deadline)
	defer cancel()
	late := func() bool { return time.Since(deadline) > e.liveness.Timeout/4 }
	for attempt := 0; ; attempt++ {
		c, reused, err := e.conn(ctx, addr)
		if err != nil {
			if ctx.Err() != nil && e.ctx.Err() == nil {
				return late(), fmt.Errorf("no connection for a liveness probe within %v", e.liveness.Timeout)
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
			return late(), fmt.Errorf("no answer to a liveness probe within %v", e.liveness.Timeout)
		}
		if !reused || attempt > 0 {
			return false, err
		}
		// NB: an idle connection the peer had closed says nothing of the peer: ask
		// again on a new one.
	}
}

// watch runs while a call to addr waits: once the peer has been silent for After it is
// probed, and a failed probe cancels the call with a stalledError cause.
func (e *Endpoint) watch(ctx context.Context, cancel context.CancelCauseFunc, addr string, l *peerLive) {
	t := time.NewTicker(e.liveness.After)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if l.silentFor() < e.liveness.After {
			continue
		}
		if err := e.ping(ctx, addr, l); err != nil {
			if ctx.Err() == nil {
				cancel(stalledError{err})
			}
			return
		}
	}
}

// watchedRoundTrip is roundTrip under the liveness watch of addr.
func (e *Endpoint) watchedRoundTrip(ctx context.Context, addr string, c *tls.Conn, method string, body []byte) ([]byte, bool, error) {
	if e.liveness.Off || !transport.LivenessWatched(ctx) {
		return e.roundTrip(ctx, c, method, body)
	}
	l := e.live(addr)
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.watch(wctx, cancel, addr, l)
	}()
	reply, answered, err := e.roundTripVia(wctx, c, progress{c: c, l: l}, method, body)
	if answered {
		l.heardFrom()
	}
	cancel(nil)
	<-done
	if err != nil && !answered && ctx.Err() == nil {
		if cause := context.Cause(wctx); errors.Is(cause, transport.ErrStalled) {
			return nil, false, cause
		}
	}
	return reply, answered, err
}

// progressPiece is the most a watched call writes at once: each piece that leaves
// (past the socket buffer, which takes the peer's acknowledgements) tells the watch the
// peer is alive.
const progressPiece = 256 << 10

// progress reads and writes a call's connection, recording every byte that arrives and
// every piece that leaves, so a call moving data is not taken for a silent one.
type progress struct {
	c *tls.Conn
	l *peerLive
}

func (p progress) Read(b []byte) (int, error) {
	n, err := p.c.Read(b)
	if n > 0 {
		p.l.heardFrom()
	}
	return n, err
}

func (p progress) Write(b []byte) (int, error) {
	done := 0
	for done < len(b) {
		n, err := p.c.Write(b[done:min(len(b), done+progressPiece)])
		done += n
		if err != nil {
			return done, err
		}
		p.l.heardFrom()
	}
	return done, nil
}

// stalledError is the cause of a call abandoned by its liveness watch.
type stalledError struct{ err error }

func (s stalledError) Error() string { return fmt.Sprintf("tcp: peer stalled: %v", s.err) }

func (s stalledError) Is(target error) bool {
	return target == transport.ErrStalled || target == transport.ErrUnreachable
}

func (s stalledError) Unwrap() error { return s.err }
