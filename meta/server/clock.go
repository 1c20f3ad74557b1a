package server

import (
	"time"

	"github.com/cofferhq/coffer/meta/command"
)

// tickMeter builds the leader's Ticks: it measures the real time between the Ticks one
// leader proposes in one term, on a monotonic clock (the caller's now readings), never
// on the wall clock that stamps commands. The FSM lets the cluster clock run at most
// slightly ahead of what the Ticks report (fsm.advanceClock), so the measurement is what
// bounds cluster time, and a wall clock set years ahead cannot speed it up.
//
// A new term, or a stretch without leadership (reset), starts over with Elapsed 0: a
// new leader cannot claim real time it did not measure itself. Not safe for concurrent
// use; the server's loop goroutine owns it.
type tickMeter struct {
	last time.Time // monotonic reading at the previous Tick; zero: none yet in term
	term uint64
}

// next returns the Tick to propose at monotonic time now as leader of term.
func (m *tickMeter) next(now time.Time, term uint64) command.Tick {
	var elapsed int64
	if term == m.term && !m.last.IsZero() {
		elapsed = max(int64(now.Sub(m.last)), 0)
	}
	m.last, m.term = now, term
	return command.Tick{Elapsed: elapsed}
}

// reset forgets the previous Tick (this server is not the leader).
func (m *tickMeter) reset() { m.last = time.Time{} }
