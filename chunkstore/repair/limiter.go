package repair

import (
	"context"
	"sync"
	"time"
)

// limiter paces writes to a byte rate. The zero rate means unlimited.
type limiter struct {
	rate int64 // bytes per second
	now  func() time.Time

	mu   sync.Mutex
	next time.Time // when the bytes reserved so far have been "paid"
}

// wait blocks until n more bytes fit the rate, or ctx is done.
func (l *limiter) wait(ctx context.Context, n int) error {
	if l.rate <= 0 || n <= 0 {
		return nil
	}
	l.mu.Lock()
	now := l.now()
	if l.next.Before(now) {
		l.next = now
	}
	l.next = l.next.Add(time.Duration(float64(n) / float64(l.rate) * float64(time.Second)))
	// Allow a burst of a quarter second of traffic before blocking.
	d := l.next.Sub(now) - 250*time.Millisecond
	l.mu.Unlock()
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
