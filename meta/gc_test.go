package meta

import (
	"errors"
	"testing"
)

func TestCheckGCOrder(t *testing.T) {
	st := func(epoch uint64, phase, began string) GCStatus {
		return GCStatus{Leader: "m1", State: GCState{Epoch: epoch, Phase: phase, Leader: began}}
	}
	for _, c := range []struct {
		name  string
		st    GCStatus
		from  string
		op    string
		epoch uint64
		ok    bool
	}{
		{"prepare next epoch", st(3, GCIdle, "m1"), "m1", GCOpPrepare, 4, true},
		{"prepare from a follower", st(3, GCIdle, "m1"), "m2", GCOpPrepare, 4, false},
		{"prepare current epoch", st(3, GCIdle, "m1"), "m1", GCOpPrepare, 3, false},
		{"no principal", st(3, GCIdle, "m1"), "", GCOpPrepare, 4, false},
		{"candidates in mark", st(4, GCMark, "m1"), "m1", GCOpCandidates, 4, true},
		{"candidates when idle", st(4, GCIdle, "m1"), "m1", GCOpCandidates, 4, false},
		{"sweep in sweep phase", st(4, GCSweep, "m1"), "m1", GCOpSweep, 4, true},
		{"sweep in mark phase", st(4, GCMark, "m1"), "m1", GCOpSweep, 4, false},
		{"sweep of an old epoch", st(5, GCSweep, "m1"), "m1", GCOpSweep, 4, false},
		{"sweep from the leader of another epoch", st(4, GCSweep, "m2"), "m1", GCOpSweep, 4, false},
		{"sweep from a non-leader", st(4, GCSweep, "m1"), "c3", GCOpSweep, 4, false},
	} {
		err := CheckGCOrder(c.st, c.from, c.op, c.epoch)
		if c.ok != (err == nil) || (!c.ok && !errors.Is(err, ErrDenied)) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	if err := CheckGCOrder(st(1, GCSweep, "m1"), "m1", "delete-everything", 1); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown op: %v", err)
	}
}
