package meta

import (
	"context"
	"time"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/gcorder"
)

// Garbage collection phases (GCState.Phase): the order vocabulary's (chunkstore/gcorder).
const (
	// GCIdle: no collection in progress.
	GCIdle = gcorder.PhaseIdle
	// GCMark: the leader is marking (reading live snapshots' reference lists) and
	// listing candidates; no chunk node deletes anything.
	GCMark = gcorder.PhaseMark
	// GCSweep: the leader is sending sweep orders for the epoch.
	GCSweep = gcorder.PhaseSweep
)

// DefaultGCGrace is how long before a collection's mark began a chunk must have gone
// unwritten and untouched to be swept: a backup that asked "does this chunk exist?" or
// uploaded it within the grace period keeps it, even if its commit comes later.
const DefaultGCGrace = time.Hour

// GCState is the cluster's garbage-collection state, kept in the FSM. Chunk nodes obey
// sweep orders only for the current epoch, in the sweep phase, from the leader that began
// it (see DESIGN "Immutability, retention and garbage collection").
type GCState struct {
	Epoch  uint64        `cbor:"epoch" json:"epoch"`
	Phase  string        `cbor:"phase" json:"phase"`
	Leader string        `cbor:"leader,omitempty" json:"leader,omitempty"` // meta server that began Epoch
	Began  time.Time     `cbor:"began,omitempty" json:"began,omitempty"`   // cluster time Epoch began
	Grace  time.Duration `cbor:"grace,omitempty" json:"grace,omitempty"`
	// Last is the report of the last finished (or abandoned) collection, nil before one.
	Last *GCReport `cbor:"last,omitempty" json:"last,omitempty"`
}

// GCReport is what one collection did.
type GCReport struct {
	Epoch     uint64    `cbor:"epoch" json:"epoch"`
	Began     time.Time `cbor:"began" json:"began"`           // cluster time
	Ended     time.Time `cbor:"ended,omitempty" json:"ended"` // cluster time; set by the FSM
	DryRun    bool      `cbor:"dry_run,omitempty" json:"dry_run,omitempty"`
	Snapshots int64     `cbor:"snapshots" json:"snapshots"`                 // live snapshots marked
	Live      int64     `cbor:"live" json:"live"`                           // distinct chunk IDs referenced
	Nodes     int       `cbor:"nodes" json:"nodes"`                         // chunk nodes that took part
	Skipped   []string  `cbor:"skipped,omitempty" json:"skipped,omitempty"` // nodes left out, with why
	// Candidates are chunks (and their shard bytes) that were unreferenced and older than
	// the grace period when listed.
	Candidates     int64  `cbor:"candidates" json:"candidates"`
	CandidateBytes int64  `cbor:"candidate_bytes" json:"candidate_bytes"`
	SweptChunks    int64  `cbor:"swept_chunks" json:"swept_chunks"`
	SweptShards    int64  `cbor:"swept_shards" json:"swept_shards"`
	SweptBytes     int64  `cbor:"swept_bytes" json:"swept_bytes"`
	Spared         int64  `cbor:"spared" json:"spared"`                   // touched or written after listing
	Error          string `cbor:"error,omitempty" json:"error,omitempty"` // why it was abandoned
}

// GCOptions tune one collection.
type GCOptions struct {
	// DryRun marks and lists candidates but sends no sweep orders.
	DryRun bool `cbor:"dry_run,omitempty" json:"dry_run,omitempty"`
	// Grace overrides the server's grace period when > 0.
	Grace time.Duration `cbor:"grace,omitempty" json:"grace,omitempty"`
}

// GCPeer is the meta leader's handle on one chunk node for garbage collection. The node
// checks every call against the FSM (the caller must be the leader; the epoch current;
// gcorder.Check). node supplies the implementations (chunkrpc's client, gcnode in-process).
type GCPeer interface {
	// Prepare tells the node that collection epoch is about to begin: it records its own
	// clock now, and its cutoff for the epoch becomes that time minus grace.
	Prepare(ctx context.Context, epoch uint64, grace time.Duration) error
	// Candidates lists, in chunk-ID order after after (nil: from the start), at most
	// limit chunks the node holds whose last write or touch is before its cutoff. next
	// is nil when the listing is complete.
	Candidates(ctx context.Context, epoch uint64, after *chunk.ID, limit int) (out []gcorder.Candidate, next *chunk.ID, err error)
	// Sweep deletes the listed chunks' shards that are still before the cutoff.
	Sweep(ctx context.Context, epoch uint64, ids []chunk.ID) (gcorder.SweepResult, error)
}

// GCStatus is the answer to a GC status query: the FSM state and the meta server that
// answered, which is the leader (status is a linearizable read).
type GCStatus struct {
	State  GCState `cbor:"state" json:"state"`
	Leader string  `cbor:"leader" json:"leader"`
}

// GCAdmin runs and reports garbage collection. Writes go through the leader.
type GCAdmin interface {
	// RunGC runs one collection to its end and returns its report (admin principals
	// only, ErrDenied otherwise; audited). It fails if a collection is already running
	// on this leader.
	RunGC(ctx context.Context, opts GCOptions) (GCReport, error)
	// GCStatus returns the current state (any authenticated principal with read rights).
	GCStatus(ctx context.Context) (GCStatus, error)
}

// Order returns what a chunk node checks a GC order against (gcorder.Check).
func (s GCStatus) Order() gcorder.Status {
	return gcorder.Status{Leader: s.Leader, Epoch: s.State.Epoch, Phase: s.State.Phase, EpochLeader: s.State.Leader}
}
