package server

import (
	"errors"
	"testing"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/hashicorp/raft"
)

// TestLeaderClockTenYearsAhead: a meta leader whose wall clock is 10 years ahead takes
// over; the cluster clock still runs at most 1% faster than real time (plus a tick or
// two of measurement), and no compliance-locked snapshot becomes deletable, by an admin
// or by policy. TestLockOutlastsLeadersAhead covers 30 simulated days.
func TestLeaderClockTenYearsAhead(t *testing.T) {
	const skewed = "m2"
	ahead := 10 * 365 * 24 * time.Hour
	c := newCluster(t, 3, func(cfg *Config) {
		cfg.TickInterval = 20 * time.Millisecond
		if cfg.ID == skewed {
			cfg.Now = func() time.Time { return time.Now().Add(ahead) }
		}
	})
	ctx := ctxT(t)
	li := c.leader()
	if addrOf(li) == skewed {
		// Start under an honest leader: hand leadership to m0.
		if err := c.srv[li].raft.LeadershipTransferToServer(raft.ServerID(addrOf(0)), raft.ServerAddress(addrOf(0))).Error(); err != nil {
			t.Fatal(err)
		}
		li = c.leader()
	}
	l := c.srv[li]
	if _, err := l.CreateVault(ctx, newVault("v")); err != nil {
		t.Fatal(err)
	}
	snap, err := l.CommitSnapshot(ctx, storedSnapshot(t, c.chunks, "v", 3, 0))
	if err != nil {
		t.Fatal(err)
	}
	until := l.fsm.Now().Add(time.Hour)
	if _, err := l.SetLock(ctx, "v", snap.ID, meta.Lock{Mode: meta.Compliance, Until: until}, meta.Bypass{}); err != nil {
		t.Fatal(err)
	}

	// The skewed server takes over.
	if err := l.raft.LeadershipTransferToServer(raft.ServerID(skewed), raft.ServerAddress(skewed)).Error(); err != nil {
		t.Fatal(err)
	}
	var sk *Server
	for i, s := range c.srv {
		if addrOf(i) == skewed {
			sk = s
		}
	}
	waitFor(t, "the skewed server to lead", sk.IsLeader)
	clock0, real0 := sk.fsm.Now(), time.Now()
	// Let it lead for a while (ticks every 20 ms), then check the clock against real time.
	waitFor(t, "ticks under the skewed leader", func() bool { return time.Since(real0) > 600*time.Millisecond })
	_, err = sk.DeleteSnapshots(ctx, "v", []meta.SnapshotID{snap.ID}, meta.Bypass{Governance: true, Reason: "clock"})
	if !errors.Is(err, meta.ErrLocked) {
		t.Fatalf("delete under a leader 10 years ahead: %v, want ErrLocked", err)
	}
	res, err := sk.Forget(ctx, "v", meta.Policy{Within: time.Nanosecond}, false)
	if err != nil || len(res.Removed) != 0 {
		t.Fatalf("forget under the skewed leader removed %v (%v)", res.Removed, err)
	}
	adv, realAdv := sk.fsm.Now().Sub(clock0), time.Since(real0)
	// NB: the slack is one tick's measurement taken before clock0 (a stalled tick on a
	// loaded machine can hand on up to a second); TestLockOutlastsLeadersAhead checks the
	// rate exactly.
	if adv > realAdv*101/100+time.Second {
		t.Fatalf("cluster clock advanced %v in %v of real time under a leader 10 years ahead", adv, realAdv)
	}
	if adv <= 0 {
		t.Fatalf("cluster clock stalled under the skewed leader (%v)", adv)
	}
	if !sk.fsm.Now().Before(until) {
		t.Fatalf("cluster clock %v passed the lock %v", sk.fsm.Now(), until)
	}
	t.Logf("cluster clock advanced %v in %v of real time", adv, realAdv)
}
