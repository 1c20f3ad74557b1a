// Package hedge decides when a read that has not answered yet should be duplicated to
// another replica ("hedged"). The delay adapts to observed latency, so that hedges
// catch silent or dead peers without multiplying work when everything is slow: a
// fixed delay under overload turns every slow read into two, which makes it slower.
package hedge

import (
	"sync/atomic"
	"time"
)

// Delay tracks an exponentially weighted moving average of answered-call latency and
// derives the hedge delay from it. The zero value is not usable; use New. Safe for
// concurrent use.
type Delay struct {
	floor time.Duration
	ewma  atomic.Int64 // nanoseconds; 0 until the first observation
}

// Factor is how many times the average latency a call may take before it is hedged.
const Factor = 4

// New returns a Delay that never hedges sooner than floor.
func New(floor time.Duration) *Delay { return &Delay{floor: floor} }

// Observe records the latency of a call that answered.
func (d *Delay) Observe(lat time.Duration) {
	for {
		old := d.ewma.Load()
		next := int64(lat)
		if old != 0 {
			next = old + (int64(lat)-old)/8 // weight 1/8
		}
		if d.ewma.CompareAndSwap(old, next) {
			return
		}
	}
}

// Get returns how long to wait for a call before hedging it: Factor times the average
// latency, at least the floor.
func (d *Delay) Get() time.Duration {
	return max(d.floor, Factor*time.Duration(d.ewma.Load()))
}
