package fsm

import (
	"time"

	"github.com/cofferhq/coffer/meta/command"
)

// MaxTickElapsed bounds the real time one Tick may claim (command.Tick.Elapsed): a leader
// that stalls for longer loses the rest, and the cluster clock makes it up at the lead
// rate below.
const MaxTickElapsed = time.Minute

// ClockLeadDivisor bounds how much faster than real time the cluster clock may run: by
// 1/ClockLeadDivisor (1%) of the real time the leaders' Ticks report.
const ClockLeadDivisor = 100

// advanceClock returns the cluster clock and its ceiling after cmd.
//
// The clock follows the leader's stamps but never moves back and never passes the
// ceiling. Only a Tick raises the ceiling: to the clock plus the real time the leader
// measured on its monotonic clock since its previous Tick (Elapsed, at most
// MaxTickElapsed), plus 1% of it. So over any stretch of real time the cluster clock
// advances at most 1% more than that stretch (plus the one tick interval a Tick hands
// on), whatever the leaders' wall clocks say: a leader years ahead runs it at 1.01x and
// a 30-day lock lasts at least 29.7 real days. The first stamp ever applied sets the
// clock (bootstrap). Behind real time (after an outage, or elections) the clock catches
// up at 1% of real time: locks expire late, never early. A leader whose wall clock is
// behind the cluster clock holds it (1 ns per command) until its stamps pass it.
func advanceClock(clock, limit int64, cmd command.Command) (newClock, newLimit int64) {
	if clock == 0 {
		return cmd.Time, cmd.Time
	}
	switch t := cmd.Body.(type) {
	case command.Tick:
		e := min(max(t.Elapsed, 0), int64(MaxTickElapsed))
		limit = clock + e + e/ClockLeadDivisor
	case command.TickV1:
		// The rule old log entries were applied with (up to twice real time).
		e := min(max(t.Elapsed, 0), int64(MaxTickElapsed))
		limit = clock + 2*e
	}
	// Every command moves the clock at least 1 ns, so commit times are unique and ordered
	// like the log (a harmless creep: a billion commands for one second).
	newClock = max(clock+1, min(cmd.Time, limit))
	return newClock, max(limit, newClock)
}
