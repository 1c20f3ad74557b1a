package quic

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/cofferhq/coffer/transport"
)

// Defaults of the liveness watch of calls (Config.Liveness).
const (
	// DefaultLivenessAfter is how long a call waits without hearing from its peer before
	// the peer is probed, and how often while the call runs.
	DefaultLivenessAfter = time.Second
	// DefaultLivenessTimeout is how long a probe waits for its answer before the call is
	// abandoned.
	DefaultLivenessTimeout = 2 * time.Second
)

// pingMethod is the RPC an endpoint answers itself, before CheckPeer and the handler, for
// any authenticated peer: an empty reply that says only that the peer's endpoint still
// reads its connection. It is not a method of any handler.
const pingMethod = "quic.Ping"

// ErrStalled is transport.ErrStalled: a call abandoned by its liveness watch.
var ErrStalled = transport.ErrStalled

// Liveness configures how a call notices a peer that went silent: without it a call to a
// crashed or paused node (which sends nothing, not even a CONNECTION_CLOSE) waits out
// the connection's idle timeout. When a call has heard nothing on its connection for
// After, it probes the peer with a ping on a new stream of that connection (one at a
// time per connection, shared by every call on it); a peer that answers is alive and
// merely slow, and the call goes on waiting (probed again every After). A probe not
// answered within Timeout ends every call waiting on it with an error matching
// ErrStalled and transport.ErrUnreachable.
type Liveness struct {
	After, Timeout time.Duration
	// Off turns the watch off: calls wait for their reply, their context or the idle
	// timeout.
	Off bool
}

func (l Liveness) withDefaults() (Liveness, error) {
	if l.After < 0 || l.Timeout < 0 {
		return l, fmt.Errorf("negative liveness durations %v, %v", l.After, l.Timeout)
	}
	if l.After == 0 {
		l.After = DefaultLivenessAfter
	}
	if l.Timeout == 0 {
		l.Timeout = DefaultLivenessTimeout
	}
	return l, nil
}

// connLive is the liveness record of one outgoing connection.
type connLive struct {
	heard atomic.Int64 // unix nanoseconds of the last answer on the connection
	mu    sync.Mutex
	probe *probe // the probe running or last finished; nil before the first
}

// probe is one ping of a connection; done is closed once err is set.
type probe struct {
	done chan struct{}
	err  error
}

// live returns the liveness record of conn, made on first use and dropped when the
// connection ends.
func (e *Endpoint) live(conn *quicgo.Conn) *connLive {
	e.mu.Lock()
	defer e.mu.Unlock()
	l := e.mu.live[conn]
	if l == nil {
		l = &connLive{}
		l.heard.Store(time.Now().UnixNano())
		e.mu.live[conn] = l
		context.AfterFunc(conn.Context(), func() {
			e.mu.Lock()
			delete(e.mu.live, conn)
			e.mu.Unlock()
		})
	}
	return l
}

// heardFrom records an answer on the connection.
func (l *connLive) heardFrom() { l.heard.Store(time.Now().UnixNano()) }

// silentFor reports how long the connection has gone without an answer.
func (l *connLive) silentFor() time.Duration {
	return time.Since(time.Unix(0, l.heard.Load()))
}

// ping returns the outcome of a probe of conn, joining the one in progress when there is
// one. ctx ends only the wait, never the probe: other calls may be waiting on it.
func (e *Endpoint) ping(ctx context.Context, conn *quicgo.Conn, l *connLive) error {
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
			p.err = e.runPing(conn)
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

// runPing sends one ping on conn and waits for any answer up to the liveness timeout. An
// error answer (an old peer that does not know the ping) is an answer too.
func (e *Endpoint) runPing(conn *quicgo.Conn) error {
	for attempt := 0; ; attempt++ {
		starved, err := e.pingOnce(conn)
		// NB: a probe whose own timeout fired late ran in a starved process (every
		// goroutine, the peer's answer too when it shares the process, waits for a CPU):
		// that says nothing of the peer, so it is asked again, twice at most.
		if err == nil || !starved || attempt == 2 {
			return err
		}
	}
}

// pingOnce is one probe of conn. starved reports that it timed out and that its timeout
// fired more than a quarter of the timeout late.
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
		err = fmt.Errorf("open a probe stream: %w", err)
	}
	if ctx.Err() != nil && e.ctx.Err() == nil {
		return time.Since(deadline) > e.liveness.Timeout/4, fmt.Errorf("no answer to a liveness probe within %v", e.liveness.Timeout)
	}
	return false, err
}

// watch runs while a call on conn waits for its reply: once the connection has been
// silent for Liveness.After it probes the peer, and when a probe fails it cancels the
// call with a cause matching ErrStalled. It returns when ctx ends.
func (e *Endpoint) watch(ctx context.Context, cancel context.CancelCauseFunc, conn *quicgo.Conn, l *connLive) {
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
		if err := e.ping(ctx, conn, l); err != nil {
			if ctx.Err() == nil {
				cancel(stalledError{err})
			}
			return
		}
	}
}

// progressPiece is the most a watched call writes at once, so that each piece written
// (packed and sent, which past the first congestion window needs the peer's
// acknowledgements) tells the watch the peer is alive.
const progressPiece = 256 << 10

// progress reads and writes a call's stream, recording on its connection every byte
// that arrives and every piece that leaves: a call moving data hears from its peer, so a
// connection busy with bulk transfers (whose probes may queue behind them) is not taken
// for a silent one.
type progress struct {
	str *quicgo.Stream
	l   *connLive
}

func (p progress) Read(b []byte) (int, error) {
	n, err := p.str.Read(b)
	if n > 0 {
		p.l.heardFrom()
	}
	return n, err
}

func (p progress) Write(b []byte) (int, error) {
	done := 0
	for done < len(b) {
		n, err := p.str.Write(b[done:min(len(b), done+progressPiece)])
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

func (s stalledError) Error() string { return fmt.Sprintf("quic: peer stalled: %v", s.err) }

func (s stalledError) Is(target error) bool {
	return target == ErrStalled || target == transport.ErrUnreachable
}

func (s stalledError) Unwrap() error { return s.err }
