package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Liveness.
const (
	// DefaultLivenessAfter is how long a call waits without hearing from its peer before
	// the peer is probed, and how often while the call runs.
	DefaultLivenessAfter = time.Second
	// DefaultLivenessTimeout is how long a probe waits for its answer before the calls
	// waiting on it are abandoned.
	DefaultLivenessTimeout = 2 * time.Second
)

// Liveness configures the liveness watch of an endpoint's calls (transport/quic and
// transport/tcp): how a call notices a peer that went silent. A crashed node sends
// nothing, not even a CONNECTION_CLOSE, and a paused node's kernel still accepts and
// acknowledges TCP, so without the watch a call waits for its context or the
// connection's idle timeout. When a call has heard nothing from its peer for After, the
// peer is probed with a ping its endpoint answers itself (one probe at a time per peer,
// shared by every call waiting on it); a peer that answers is merely slow, and the call
// goes on waiting (probed again every After). A probe not answered within Timeout ends
// every call waiting on it with an error matching ErrStalled and ErrUnreachable. Zero
// durations take the defaults (DefaultLivenessAfter, DefaultLivenessTimeout).
type Liveness struct {
	After, Timeout time.Duration
	// Off turns the watch off: calls wait for their reply, their context or the
	// connection's failure.
	Off bool
}

// WithDefaults returns l with its zero durations set to the defaults; negative
// durations are an error.
func (l Liveness) WithDefaults() (Liveness, error) {
	if l.After < 0 || l.Timeout < 0 {
		return l, fmt.Errorf("transport: negative liveness durations %v, %v", l.After, l.Timeout)
	}
	if l.After == 0 {
		l.After = DefaultLivenessAfter
	}
	if l.Timeout == 0 {
		l.Timeout = DefaultLivenessTimeout
	}
	return l, nil
}

// Live is the liveness record of one peer as an endpoint's calls see it (a QUIC
// connection, or a TCP peer address): when it was last heard from, and the probe of it
// running or last finished. Make one with NewLive.
type Live struct {
	heard atomic.Int64 // unix nanoseconds of the last answer from the peer
	mu    sync.Mutex
	probe *probe // the probe running or last finished; nil before the first
}

// probe is one ping of a peer; done is closed once err is set.
type probe struct {
	done chan struct{}
	err  error
}

// NewLive returns a record of a peer heard from now.
func NewLive() *Live {
	l := &Live{}
	l.HeardFrom()
	return l
}

// HeardFrom records an answer from the peer.
func (l *Live) HeardFrom() { l.heard.Store(time.Now().UnixNano()) }

// SilentFor reports how long the peer has gone without an answer.
func (l *Live) SilentFor() time.Duration { return time.Since(time.Unix(0, l.heard.Load())) }

// Prober is what the liveness watch needs of an endpoint and a peer.
type Prober struct {
	// Go runs f in a goroutine the endpoint waits for when it closes, or returns the
	// endpoint's closed error (and runs nothing) once it is closing.
	Go func(f func()) error
	// Ping sends one probe to the peer and waits for any answer (an error answer too)
	// up to the liveness timeout. starved reports that it timed out and that its timeout
	// fired late (see Starved).
	Ping func() (starved bool, err error)
}

// GoTracked runs f in a goroutine counted in wg unless *closed, and reports whether it
// did. mu guards closed and is held across the check and wg.Add, so an endpoint's Close
// (which sets closed under mu, then waits for wg) never misses the goroutine. Endpoints
// build Prober.Go from it.
func GoTracked(mu sync.Locker, closed *bool, wg *sync.WaitGroup, f func()) bool {
	mu.Lock()
	defer mu.Unlock()
	if *closed {
		return false
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		f()
	}()
	return true
}

// Starved reports whether a probe whose timeout (of length timeout, ending at deadline)
// fired now ran in a starved process: its timer fired more than a quarter of the
// timeout late.
func Starved(deadline time.Time, timeout time.Duration) bool {
	return time.Since(deadline) > timeout/4
}

// Probe returns the outcome of a probe of the peer, joining the one in progress when
// there is one. ctx ends only the wait, never the probe: other calls may be waiting on
// it. A probe that starved is asked again, twice at most: every goroutine, the peer's
// answer too when it shares the process, waited for a CPU, and that says nothing of the
// peer.
func (l *Live) Probe(ctx context.Context, pr Prober) error {
	l.mu.Lock()
	p := l.probe
	if p == nil || isDone(p.done) {
		p = &probe{done: make(chan struct{})}
		err := pr.Go(func() {
			for attempt := 0; ; attempt++ {
				starved, err := pr.Ping()
				if err == nil || !starved || attempt == 2 {
					p.err = err
					break
				}
			}
			if p.err == nil {
				l.HeardFrom()
			}
			close(p.done)
		})
		if err != nil {
			l.mu.Unlock()
			return err
		}
		l.probe = p
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

// Watch runs call, one call to the peer over rw, under the liveness watch of cfg: while
// it waits, the peer is probed whenever it has been silent for cfg.After, and a failed
// probe cancels the call's context. call gets that context and rw wrapped so that every
// byte that arrives, and every piece of at most ProgressPiece bytes that leaves, counts
// as hearing from the peer (a call moving data is not taken for a silent one); it
// reports whether the peer answered. Watch returns call's error, or for a call the watch
// abandoned an error matching ErrStalled and ErrUnreachable.
func (l *Live) Watch(ctx context.Context, cfg Liveness, pr Prober, rw io.ReadWriter, call func(ctx context.Context, rw io.ReadWriter) (answered bool, err error)) error {
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.watch(wctx, cancel, cfg.After, pr)
	}()
	answered, err := call(wctx, progress{rw: rw, l: l})
	if answered {
		l.HeardFrom()
	}
	cancel(nil)
	<-done
	if err != nil && !answered && ctx.Err() == nil {
		if cause := context.Cause(wctx); errors.Is(cause, ErrStalled) {
			return cause
		}
	}
	return err
}

// watch runs while a call waits for its reply: once the peer has been silent for after
// it is probed, and when a probe fails the call is cancelled with a stalledError cause.
// It returns when ctx ends.
func (l *Live) watch(ctx context.Context, cancel context.CancelCauseFunc, after time.Duration, pr Prober) {
	t := time.NewTicker(after)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if l.SilentFor() < after {
			continue
		}
		if err := l.Probe(ctx, pr); err != nil {
			if ctx.Err() == nil {
				cancel(stalledError{err})
			}
			return
		}
	}
}

// ProgressPiece is the most a watched call writes at once, so that each piece written
// (which past the socket buffer or the first congestion window needs the peer's
// acknowledgements) tells the watch the peer is alive.
const ProgressPiece = 256 << 10

// progress reads and writes a call's stream or connection, recording every byte that
// arrives and every piece that leaves: a call moving data hears from its peer, so a
// connection busy with bulk transfers (whose probes may queue behind them) is not taken
// for a silent one.
type progress struct {
	rw io.ReadWriter
	l  *Live
}

func (p progress) Read(b []byte) (int, error) {
	n, err := p.rw.Read(b)
	if n > 0 {
		p.l.HeardFrom()
	}
	return n, err
}

func (p progress) Write(b []byte) (int, error) {
	done := 0
	for done < len(b) {
		n, err := p.rw.Write(b[done:min(len(b), done+ProgressPiece)])
		done += n
		if err != nil {
			return done, err
		}
		p.l.HeardFrom()
	}
	return done, nil
}

// stalledError is the cause of a call abandoned by its liveness watch.
type stalledError struct{ err error }

func (s stalledError) Error() string { return fmt.Sprintf("transport: peer stalled: %v", s.err) }

func (s stalledError) Is(target error) bool {
	return target == ErrStalled || target == ErrUnreachable
}

func (s stalledError) Unwrap() error { return s.err }
