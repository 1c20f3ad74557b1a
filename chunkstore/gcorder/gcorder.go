// Package gcorder is the vocabulary of garbage-collection orders shared by the meta
// leader that gives them and the chunk nodes that obey them: phases, operations,
// candidates, the sweep result, the check a node applies before obeying (Check), and its
// errors. It is a leaf: it imports nothing of Coffer's but chunkstore/chunk, so meta and
// chunkstore both use it without importing each other.
package gcorder

import (
	"errors"
	"fmt"
	"slices"

	"github.com/cofferhq/coffer/chunkstore/chunk"
)

// Collection phases (meta's GCState.Phase).
const (
	// PhaseIdle: no collection in progress.
	PhaseIdle = "idle"
	// PhaseMark: the leader is marking (reading live snapshots' reference lists) and
	// listing candidates; no chunk node deletes anything.
	PhaseMark = "mark"
	// PhaseSweep: the leader is sending sweep orders for the epoch.
	PhaseSweep = "sweep"
)

// Order operations, as chunk nodes check them (Check).
const (
	OpPrepare    = "prepare"
	OpCandidates = "candidates"
	OpSweep      = "sweep"
)

// Errors of an order. Their wire codes (chunkstore/chunkrpc): ErrDenied is
// PermissionDenied, ErrInvalid is Invalid, ErrUnavailable is Unavailable. Append only.
var (
	// ErrDenied: the order does not come from the meta leader that may give it now.
	ErrDenied = errors.New("gcorder: permission denied")
	// ErrInvalid: the order is malformed or names an epoch this node did not prepare.
	ErrInvalid = errors.New("gcorder: invalid order")
	// ErrUnavailable: the node could not learn the cluster's GC state to check the order.
	ErrUnavailable = errors.New("gcorder: unavailable")
)

// Candidate is a chunk a node holds that was not written or touched since its cutoff.
type Candidate struct {
	ID    chunk.ID `cbor:"id"`
	Bytes int64    `cbor:"bytes"`
}

// SweepResult reports what a sweep did.
type SweepResult struct {
	Chunks int64 // chunks whose shards were deleted
	Shards int64 // shards deleted
	Bytes  int64 // shard bytes deleted
	Spared int64 // chunks kept because they were written or touched at or after the cutoff
}

// Status is what a node checks an order against: the current meta leader and the
// collection state it reports.
type Status struct {
	Leader      string // the meta leader that answered (a linearizable read)
	Epoch       uint64 // the current collection epoch
	Phase       string // its phase (Phase*)
	EpochLeader string // the meta server that began Epoch
}

// Check decides whether a chunk node obeys a GC call op for epoch from the meta server
// named from (the principal of the caller's node certificate), given st, the GC status
// the current leader reports. Prepare must come from the current leader for the next
// epoch; candidate listings from the leader that began the current epoch while it is in
// progress; sweep orders from that leader, for the current epoch, in its sweep phase.
// Refusals wrap ErrDenied and say why; an unknown op wraps ErrInvalid.
func Check(st Status, from, op string, epoch uint64) error {
	if from == "" || from != st.Leader {
		return fmt.Errorf("%w: gc %s for epoch %d from %q: not the meta leader (%q is)", ErrDenied, op, epoch, from, st.Leader)
	}
	switch op {
	case OpPrepare:
		if epoch != st.Epoch+1 {
			return fmt.Errorf("%w: gc prepare for epoch %d: the next epoch is %d", ErrDenied, epoch, st.Epoch+1)
		}
		return nil
	case OpCandidates, OpSweep:
		if epoch != st.Epoch {
			return fmt.Errorf("%w: gc %s for epoch %d: the current epoch is %d", ErrDenied, op, epoch, st.Epoch)
		}
		if from != st.EpochLeader {
			return fmt.Errorf("%w: gc %s for epoch %d from %q: the epoch was begun by %q", ErrDenied, op, epoch, from, st.EpochLeader)
		}
		want := []string{PhaseMark, PhaseSweep}
		if op == OpSweep {
			want = want[1:]
		}
		if !slices.Contains(want, st.Phase) {
			return fmt.Errorf("%w: gc %s for epoch %d: the epoch is in the %s phase", ErrDenied, op, epoch, st.Phase)
		}
		return nil
	}
	return fmt.Errorf("%w: unknown gc operation %q", ErrInvalid, op)
}
