package statuspage

import (
	"math"
	"sync"
	"time"
)

// Sample is one reading of the cluster's storage figures, taken by the serving node.
type Sample struct {
	Time time.Time
	// Used is the shard bytes stored on the nodes that answered; Capacity the bytes
	// available to their stores (0 when no store reports one).
	Used, Capacity int64
	// RepairBytes is the sum of the answering chunk nodes' repair counters (bytes
	// written by repair since each worker started; a restarted node starts again at 0).
	RepairBytes int64
	// NodesUp and NodesDown count the nodes that answered and did not.
	NodesUp, NodesDown int
}

// History is a bounded ring of samples, oldest first. It is safe for concurrent use.
type History struct {
	mu   sync.Mutex
	buf  []Sample
	head int // index of the oldest sample
	n    int
}

// NewHistory returns a ring that keeps the last size samples (at least 2).
func NewHistory(size int) *History {
	return &History{buf: make([]Sample, max(size, 2))}
}

// Add appends s, dropping the oldest sample when the ring is full. A sample not later
// than the newest one (a clock that stepped back, or a duplicate) is not kept: rates
// need time to advance. Add reports whether s was kept.
func (h *History) Add(s Sample) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n > 0 {
		last := h.buf[(h.head+h.n-1)%len(h.buf)]
		if !s.Time.After(last.Time) {
			return false
		}
	}
	if h.n < len(h.buf) {
		h.buf[(h.head+h.n)%len(h.buf)] = s
		h.n++
		return true
	}
	h.buf[h.head] = s
	h.head = (h.head + 1) % len(h.buf)
	return true
}

// Samples returns a copy of the kept samples, oldest first.
func (h *History) Samples() []Sample {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Sample, h.n)
	for i := range h.n {
		out[i] = h.buf[(h.head+i)%len(h.buf)]
	}
	return out
}

// Len returns the number of kept samples; Cap the ring's size.
func (h *History) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// Cap returns the number of samples the ring keeps at most.
func (h *History) Cap() int { return len(h.buf) }

// Rate is a per-second rate over the interval ending at Time.
type Rate struct {
	Time time.Time
	// Stored is the change of stored shard bytes per second (negative when garbage
	// collection or decommissioning freed more than was written); NaN over an interval
	// in which the number of answering nodes changed (the sums are not comparable).
	Stored float64
	// Repair is the shard bytes written by repair per second; 0 over an interval in
	// which a node's counter restarted (the sum fell).
	Repair float64
}

// Rates turns consecutive samples into per-second rates, one per interval (so one fewer
// than the samples). Samples must be time-ordered as History keeps them; pairs whose
// time does not advance are skipped.
func Rates(ss []Sample) []Rate {
	var out []Rate
	for i := 1; i < len(ss); i++ {
		a, b := ss[i-1], ss[i]
		dt := b.Time.Sub(a.Time).Seconds()
		if dt <= 0 {
			continue
		}
		r := Rate{Time: b.Time, Stored: float64(b.Used-a.Used) / dt}
		if b.RepairBytes >= a.RepairBytes {
			r.Repair = float64(b.RepairBytes-a.RepairBytes) / dt
		}
		if a.NodesUp != b.NodesUp || a.NodesDown != b.NodesDown {
			r.Stored = math.NaN()
		}
		out = append(out, r)
	}
	return out
}
