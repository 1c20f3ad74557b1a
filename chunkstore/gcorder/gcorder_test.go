package gcorder

import (
	"errors"
	"testing"
)

func TestCheck(t *testing.T) {
	st := func(epoch uint64, phase, began string) Status {
		return Status{Leader: "m1", Epoch: epoch, Phase: phase, EpochLeader: began}
	}
	for _, c := range []struct {
		name  string
		st    Status
		from  string
		op    string
		epoch uint64
		ok    bool
	}{
		{"prepare next epoch", st(3, PhaseIdle, "m1"), "m1", OpPrepare, 4, true},
		{"prepare from a follower", st(3, PhaseIdle, "m1"), "m2", OpPrepare, 4, false},
		{"prepare current epoch", st(3, PhaseIdle, "m1"), "m1", OpPrepare, 3, false},
		{"no principal", st(3, PhaseIdle, "m1"), "", OpPrepare, 4, false},
		{"candidates in mark", st(4, PhaseMark, "m1"), "m1", OpCandidates, 4, true},
		{"candidates when idle", st(4, PhaseIdle, "m1"), "m1", OpCandidates, 4, false},
		{"sweep in sweep phase", st(4, PhaseSweep, "m1"), "m1", OpSweep, 4, true},
		{"sweep in mark phase", st(4, PhaseMark, "m1"), "m1", OpSweep, 4, false},
		{"sweep of an old epoch", st(5, PhaseSweep, "m1"), "m1", OpSweep, 4, false},
		{"sweep from the leader of another epoch", st(4, PhaseSweep, "m2"), "m1", OpSweep, 4, false},
		{"sweep from a non-leader", st(4, PhaseSweep, "m1"), "c3", OpSweep, 4, false},
	} {
		err := Check(c.st, c.from, c.op, c.epoch)
		if c.ok != (err == nil) || (!c.ok && !errors.Is(err, ErrDenied)) {
			t.Errorf("%s: err = %v, want ok=%v", c.name, err, c.ok)
		}
	}
	if err := Check(st(1, PhaseSweep, "m1"), "m1", "delete-everything", 1); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown op: err = %v, want ErrInvalid", err)
	}
}
