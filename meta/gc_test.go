package meta

import (
	"testing"

	"github.com/cofferhq/coffer/chunkstore/gcorder"
)

// TestGCStatusOrder checks that a status reports the leader that answered and the
// epoch's own leader apart, so gcorder.Check can tell a new leader from the one that
// began the epoch.
func TestGCStatusOrder(t *testing.T) {
	st := GCStatus{Leader: "m2", State: GCState{Epoch: 4, Phase: GCSweep, Leader: "m1"}}
	want := gcorder.Status{Leader: "m2", Epoch: 4, Phase: gcorder.PhaseSweep, EpochLeader: "m1"}
	if got := st.Order(); got != want {
		t.Fatalf("Order() = %+v, want %+v", got, want)
	}
	if err := gcorder.Check(st.Order(), "m2", gcorder.OpSweep, 4); err == nil {
		t.Fatal("a sweep from a leader that did not begin the epoch was allowed")
	}
}
