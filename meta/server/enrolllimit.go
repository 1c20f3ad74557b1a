package server

import (
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/cofferhq/coffer/meta"
)

// Limits on failed enrollments. Enroll is the one call a peer without a certificate may
// make, and every attempt that reaches the Raft log writes an entry and an audit record,
// so unbounded failures would let anyone who reaches the port grow the log and the audit
// list at will. An attempt with a live token (one an admin created, not yet spent) is
// not counted, so enrolling many agents at once is never slowed down.
const (
	// enrollSourceBurst failed attempts from one source address are allowed at once,
	// then one per enrollSourceEvery.
	enrollSourceBurst = 10
	enrollSourceEvery = 30 * time.Second
	// enrollGlobalBurst failed attempts from all sources together, then one per
	// enrollGlobalEvery (at most about 17,000 audit records a day under attack).
	enrollGlobalBurst = 60
	enrollGlobalEvery = 5 * time.Second
	// enrollMaxSources bounds the sources tracked; beyond it (after dropping sources
	// whose allowance is whole again) new sources are held by the global limit alone.
	enrollMaxSources = 10000
)

// bucket is a token bucket: up to burst tokens, refilled one per every.
type bucket struct {
	tokens  float64
	last    time.Time
	refused bool // an attempt was refused since the last one allowed
}

func (b *bucket) refill(now time.Time, burst int, every time.Duration) {
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(float64(burst), b.tokens+float64(el)/float64(every))
	}
	b.last = now
}

// wait is how long until the bucket holds one token, rounded up to a second.
func (b *bucket) wait(every time.Duration) time.Duration {
	d := time.Duration((1 - b.tokens) * float64(every))
	return (d + time.Second - 1).Truncate(time.Second)
}

// enrollLimiter counts enrollment attempts that are bound to fail (their token is not
// live), per source address and in all. Safe for concurrent use.
type enrollLimiter struct {
	mu      sync.Mutex
	global  bucket
	sources map[string]*bucket
}

func newEnrollLimiter(now time.Time) *enrollLimiter {
	return &enrollLimiter{global: bucket{tokens: enrollGlobalBurst, last: now}, sources: map[string]*bucket{}}
}

// sourceOf returns the address an attempt is counted under: the host of from (the
// caller's address as the receiving server saw it), or from itself when it has no port.
func sourceOf(from string) string {
	if host, _, err := net.SplitHostPort(from); err == nil {
		return host
	}
	if from == "" {
		return "(unknown address)"
	}
	return from
}

// take counts one failed attempt from src at now. It refuses, wrapping meta.ErrDenied
// and saying how long to wait, when src or all sources together have used their
// allowance; first reports whether this is the first refusal since that allowance was
// last available (to log it once).
func (l *enrollLimiter) take(src string, now time.Time) (first bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.global.refill(now, enrollGlobalBurst, enrollGlobalEvery)
	b := l.sources[src]
	if b == nil {
		if len(l.sources) >= enrollMaxSources {
			for s, ob := range l.sources {
				if ob.refill(now, enrollSourceBurst, enrollSourceEvery); ob.tokens >= enrollSourceBurst {
					delete(l.sources, s)
				}
			}
		}
		b = &bucket{tokens: enrollSourceBurst, last: now}
		if len(l.sources) < enrollMaxSources {
			l.sources[src] = b
		}
	}
	b.refill(now, enrollSourceBurst, enrollSourceEvery)
	if b.tokens < 1 {
		first, b.refused = !b.refused, true
		return first, fmt.Errorf("%w: server: enroll: too many failed enrollment attempts from %s; try again in %v",
			meta.ErrDenied, src, b.wait(enrollSourceEvery))
	}
	if l.global.tokens < 1 {
		first, l.global.refused = !l.global.refused, true
		return first, fmt.Errorf("%w: server: enroll: too many failed enrollment attempts from all addresses; try again in %v",
			meta.ErrDenied, l.global.wait(enrollGlobalEvery))
	}
	b.tokens--
	l.global.tokens--
	b.refused, l.global.refused = false, false
	return false, nil
}
