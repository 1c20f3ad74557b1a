package fsm

import (
	"time"

	"github.com/cofferhq/coffer/meta/command"
)

// MaxTickElapsed bounds the real time one Tick may claim (command.Tick.Elapsed): a leader
// that stalls for longer catches the cluster clock up over several ticks.
const MaxTickElapsed = time.Minute

// advanceClock returns the cluster clock and its ceiling after cmd.
//
// The clock follows the leader's stamps but never moves back and never passes the
// ceiling. Only a Tick raises the ceiling: to the clock plus twice the real time the
// leader measured (on its monotonic clock) since its previous tick. So the cluster clock
// advances at most about twice as fast as real time, whatever the leader's wall clock
// says: a leader whose clock is years ahead moves it 2 s per real second, and a
// compliance lock cannot expire early. The first stamp ever applied sets the clock
// (bootstrap). After a cluster outage the clock lags real time by the outage and
// catches up at one extra second per second.
func advanceClock(clock, limit int64, cmd command.Command) (newClock, newLimit int64) {
	if clock == 0 {
		return cmd.Time, cmd.Time
	}
	if t, ok := cmd.Body.(command.Tick); ok {
		e := min(max(t.Elapsed, 0), int64(MaxTickElapsed))
		limit = clock + 2*e
	}
	// Every command moves the clock at least 1 ns, so commit times are unique and ordered
	// like the log (a harmless creep: a billion commands for one second).
	newClock = max(clock+1, min(cmd.Time, limit))
	return newClock, max(limit, newClock)
}
