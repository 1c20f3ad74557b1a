package server

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
	"github.com/cofferhq/coffer/meta/fsm"
	"github.com/cofferhq/coffer/placement"
	"github.com/hashicorp/raft"
)

// simLeader is one meta server in the clock simulation: its wall clock is off by skew,
// its monotonic clock counts from its own origin (never comparable across servers).
type simLeader struct {
	id    string
	skew  time.Duration
	mono  time.Time
	meter tickMeter
}

// clockSim drives an FSM the way the leaders' loops would: a Tick from each leader's
// tickMeter every step of real time, stamped with its wall clock, and other commands
// in between; no raft, no sleeping. Real time r starts at 0.
type clockSim struct {
	t     *testing.T
	f     *fsm.FSM
	epoch time.Time // real wall time at r = 0
	index uint64
	term  uint64
	cur   *simLeader
	batch []*raft.Log
}

func (c *clockSim) add(r time.Duration, body command.Body) {
	c.t.Helper()
	data, err := command.Encode(command.Command{Time: c.epoch.Add(r + c.cur.skew).UnixNano(), Body: body})
	if err != nil {
		c.t.Fatal(err)
	}
	c.index++
	c.batch = append(c.batch, &raft.Log{Index: c.index, Term: c.term, Type: raft.LogCommand, Data: data})
}

// flush applies the pending entries and returns their results.
func (c *clockSim) flush() []any {
	out := c.f.ApplyBatch(c.batch)
	c.batch = c.batch[:0]
	return out
}

// one proposes body now and returns its result.
func (c *clockSim) one(r time.Duration, body command.Body) fsm.Result {
	c.t.Helper()
	c.add(r, body)
	res := c.flush()
	return res[len(res)-1].(fsm.Result)
}

// lead makes l the leader of a new term.
func (c *clockSim) lead(l *simLeader) { c.term++; c.cur = l; l.meter.reset() }

// tick proposes the current leader's Tick at real time r.
func (c *clockSim) tick(r time.Duration) { c.add(r, c.cur.meter.next(c.cur.mono.Add(r), c.term)) }

// TestLockOutlastsLeadersAhead: leaders whose wall clocks are years ahead lead in turn
// through three leader changes (each new one ahead too, or a mix with honest and late
// clocks) for 30 simulated days. A 30-day compliance lock set just before must still
// refuse a delete after 29.7 real days, and over every hour cluster time runs at most
// 1% faster than real time (plus one tick's measurement).
func TestLockOutlastsLeadersAhead(t *testing.T) {
	const (
		day  = 24 * time.Hour
		year = 365 * day
		step = 30 * time.Second // the leaders' tick interval
		gap  = 3 * time.Second  // election time at each leader change
	)
	for _, tc := range []struct {
		name  string
		skews []time.Duration // the leaders after the honest first one, in turn
		// stalls is set when every leader after the first is ahead: cluster time must
		// then keep up with real time (a frozen clock would pass the lock check
		// trivially).
		ahead bool
	}{
		{"all-ahead", []time.Duration{10 * year, 10*year + 3*day, 7 * year, 10 * year}, true},
		{"mix", []time.Duration{10 * year, 0, 10 * year, -1 * year}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := fsm.Open(t.TempDir(), fsm.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			c := &clockSim{t: t, f: f, epoch: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
			honest := &simLeader{id: "m0", mono: time.Unix(0, 0).Add(17 * time.Hour)}
			c.lead(honest)
			admin := meta.Principal{Name: "ops", Role: meta.RoleAdmin}
			if r := c.one(0, command.CreateVault{Vault: meta.Vault{ID: "v", Profile: placement.DefaultProfile, KeyWraps: [][]byte{{1}}}}); r.Err != nil {
				t.Fatal(r.Err)
			}
			id := chunk.ID{7}
			snap := meta.Snapshot{ID: id, Vault: "v", Host: "h", Tree: chunk.ID{0xee}, Refs: []chunk.ID{{0xaa}}}
			if r := c.one(time.Second, command.CommitSnapshot{Snapshot: snap}); r.Err != nil {
				t.Fatal(r.Err)
			}
			// The honest leader runs for an hour, then locks the snapshot for 30 days.
			var r time.Duration
			for r = 2 * time.Second; r < time.Hour; r += step {
				c.tick(r)
			}
			c.flush()
			lockedAt := r
			until := f.Now().Add(30 * day)
			if res := c.one(r, command.SetLock{Vault: "v", ID: id, Lock: meta.Lock{Mode: meta.Compliance, Until: until}, By: admin}); res.Err != nil {
				t.Fatal(res.Err)
			}
			start := f.Now()

			// Three leader changes after the first skewed leader takes over.
			var leaders []*simLeader
			for i, s := range tc.skews {
				leaders = append(leaders, &simLeader{id: fmt.Sprintf("m%d", i+1), skew: s, mono: time.Unix(0, 0).Add(time.Duration(i*1000+3) * time.Hour)})
			}
			changes := []time.Duration{lockedAt + time.Minute, lockedAt + 5*day, lockedAt + 12*day, lockedAt + 21*day}
			check := lockedAt + 29*day + 7*day/10 // 29.7 days after the lock was set
			end := lockedAt + 31*day
			next := 0
			prevClock, prevReal := f.Now(), r
			var expiredAt time.Duration
			var worst string // the first hour that ran too fast
			for r += step; r <= end; r += step {
				if next < len(changes) && r >= changes[next] {
					c.flush()
					c.lead(leaders[next])
					next++
					r += gap // nothing is committed while the group elects
				}
				c.tick(r)
				if r%(5*time.Minute) == 0 {
					// Other commands, stamped by the leader's wall clock, move the clock too.
					c.add(r, command.RecordAudit{Entry: meta.AuditEntry{Principal: "ops", Role: meta.RoleAdmin, Action: "probe", Outcome: meta.AuditOK}})
				}
				if r+step > check && r <= check {
					// Exactly at 29.7 real days after the lock: still locked.
					c.flush()
					if now := f.Now(); !now.Before(until) {
						t.Fatalf("cluster time %v passed the lock's end %v after %.3f real days (cluster time advanced %.3f days)",
							now, until, (r-lockedAt).Hours()/24, now.Sub(start).Hours()/24)
					}
					res := c.one(r, command.DeleteSnapshots{Vault: "v", IDs: []meta.SnapshotID{id}, By: admin, Bypass: meta.Bypass{Governance: true, Reason: "clock"}, Action: "delete"})
					if !errors.Is(res.Err, meta.ErrLocked) {
						t.Fatalf("delete after %.3f real days: %v, want ErrLocked", (r-lockedAt).Hours()/24, res.Err)
					}
				}
				if len(c.batch) >= int(time.Hour/step) {
					c.flush()
					now := f.Now()
					// Over every hour: at most 1% faster than real time, plus the one tick
					// interval a tick's measurement may hand on to the next.
					if adv, most := now.Sub(prevClock), (r-prevReal)*101/100+step*101/100; adv > most && worst == "" {
						worst = fmt.Sprintf("cluster time advanced %v in the %v of real time after day %.2f (at most %v)", adv, r-prevReal, (prevReal-lockedAt).Hours()/24, most)
					}
					if expiredAt == 0 && !now.Before(until) {
						expiredAt = r - lockedAt
					}
					prevClock, prevReal = now, r
				}
			}
			c.flush()
			adv := f.Now().Sub(start)
			t.Logf("%s: cluster time advanced %.3f days in %.3f real days; the 30-day lock ended after %.3f real days (hour resolution)",
				tc.name, adv.Hours()/24, (end-lockedAt).Hours()/24, expiredAt.Hours()/24)
			if worst != "" {
				t.Fatal(worst)
			}
			if tc.ahead {
				// Not frozen: with every leader ahead, cluster time keeps real pace (less
				// the election gaps) and the lock does end.
				if real := end - lockedAt; adv < real-time.Hour || expiredAt == 0 {
					t.Fatalf("cluster time advanced only %v in %v of real time (lock ended: %v)", adv, real, expiredAt)
				}
			}
		})
	}
}
