// Package gcnode is a chunk node's side of garbage collection: it records when each
// collection epoch began on this node's clock, lists the chunks untouched since the
// epoch's cutoff, and carries out sweep orders, each checked against the meta leader's
// GC state first (gcorder.Check). Nothing here deletes a shard without such an order.
//
// Times are the node's own clock throughout (the store's touch times and the epoch's
// start), so clock skew between nodes and the meta leader does not matter; the grace
// period is what protects a backup between its existence query and its commit.
package gcnode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/gcorder"
)

// MaxCandidates bounds one Candidates answer.
const MaxCandidates = 1 << 16

// Config configures a Node.
type Config struct {
	// Store is this node's shard store. Required.
	Store chunkstore.GCStore
	// Now is the node's clock, the same one the store stamps touches with. Required.
	Now func() time.Time
	// Authorize checks that from (the caller's principal) may issue op for epoch: the
	// node asks the meta leader for its GC status and applies gcorder.Check. It
	// returns an error wrapping gcorder.ErrDenied to refuse, gcorder.ErrUnavailable when
	// it cannot learn the GC status. Required.
	Authorize func(ctx context.Context, from, op string, epoch uint64) error
	// Refused, when set, is told of every refused order (for the audit log).
	Refused func(ctx context.Context, from, op string, epoch uint64, err error)
	Logger  *slog.Logger
}

// Node serves GC calls for one shard store. Safe for concurrent use.
type Node struct {
	cfg Config

	mu     sync.Mutex
	epoch  uint64    // the latest prepared epoch (0: none)
	cutoff time.Time // its cutoff

	// swept sums the results of every sweep this node carried out (Totals).
	swept struct {
		chunks, shards, bytes, spared atomic.Int64
	}
}

// Totals sums what every sweep order carried out by this node since New deleted and
// spared: for metrics.
func (n *Node) Totals() gcorder.SweepResult {
	return gcorder.SweepResult{Chunks: n.swept.chunks.Load(), Shards: n.swept.shards.Load(),
		Bytes: n.swept.bytes.Load(), Spared: n.swept.spared.Load()}
}

// New returns a Node.
func New(cfg Config) (*Node, error) {
	switch {
	case cfg.Store == nil:
		return nil, fmt.Errorf("gcnode: config: nil Store")
	case cfg.Now == nil:
		return nil, fmt.Errorf("gcnode: config: nil Now")
	case cfg.Authorize == nil:
		return nil, fmt.Errorf("gcnode: config: nil Authorize")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Node{cfg: cfg}, nil
}

func (n *Node) authorize(ctx context.Context, from, op string, epoch uint64) error {
	if err := n.cfg.Authorize(ctx, from, op, epoch); err != nil {
		if n.cfg.Refused != nil {
			n.cfg.Refused(ctx, from, op, epoch, err)
		}
		n.cfg.Logger.Warn("gc order refused", "from", from, "op", op, "epoch", epoch, "err", err)
		return fmt.Errorf("gcnode: %w", err)
	}
	return nil
}

// Prepare records the start of epoch on this node's clock: the epoch's cutoff is now
// minus grace. Preparing the same epoch again keeps the earlier (smaller) cutoff.
func (n *Node) Prepare(ctx context.Context, from string, epoch uint64, grace time.Duration) error {
	if grace < 0 {
		return fmt.Errorf("gcnode: prepare epoch %d: %w: negative grace %v", epoch, gcorder.ErrInvalid, grace)
	}
	if err := n.authorize(ctx, from, gcorder.OpPrepare, epoch); err != nil {
		return err
	}
	cutoff := n.cfg.Now().Add(-grace)
	n.mu.Lock()
	defer n.mu.Unlock()
	if epoch == n.epoch && n.cutoff.Before(cutoff) {
		return nil
	}
	if epoch < n.epoch {
		return fmt.Errorf("gcnode: prepare epoch %d: %w: epoch %d is already prepared", epoch, gcorder.ErrInvalid, n.epoch)
	}
	n.epoch, n.cutoff = epoch, cutoff
	return nil
}

// cutoffOf returns epoch's cutoff, or an error when epoch is not the prepared one (this
// node restarted since, or missed the prepare: it sits the epoch out).
func (n *Node) cutoffOf(epoch uint64) (time.Time, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if epoch == 0 || epoch != n.epoch {
		return time.Time{}, fmt.Errorf("gcnode: epoch %d: %w: not prepared on this node (prepared: %d)", epoch, gcorder.ErrInvalid, n.epoch)
	}
	return n.cutoff, nil
}

// Candidates lists at most limit chunks after after (nil: from the start), in ID order,
// whose shards here were not written or touched since epoch's cutoff. next is nil when
// the listing is complete.
func (n *Node) Candidates(ctx context.Context, from string, epoch uint64, after *chunk.ID, limit int) ([]gcorder.Candidate, *chunk.ID, error) {
	if limit <= 0 || limit > MaxCandidates {
		return nil, nil, fmt.Errorf("gcnode: candidates: %w: limit %d not in 1..%d", gcorder.ErrInvalid, limit, MaxCandidates)
	}
	if err := n.authorize(ctx, from, gcorder.OpCandidates, epoch); err != nil {
		return nil, nil, err
	}
	cutoff, err := n.cutoffOf(epoch)
	if err != nil {
		return nil, nil, err
	}
	var out []gcorder.Candidate
	var next *chunk.ID
	errFull := errors.New("gcnode: page full")
	err = n.cfg.Store.GCCandidates(ctx, after, cutoff, func(id chunk.ID, bytes int64) error {
		if len(out) == limit {
			last := out[len(out)-1].ID
			next = &last
			return errFull
		}
		out = append(out, gcorder.Candidate{ID: id, Bytes: bytes})
		return nil
	})
	if err != nil && err != errFull {
		return nil, nil, fmt.Errorf("gcnode: candidates: %w", err)
	}
	return out, next, nil
}

// Sweep carries out a sweep order: after checking it with the meta leader, it deletes
// the shards here of every listed chunk not written or touched since epoch's cutoff.
func (n *Node) Sweep(ctx context.Context, from string, epoch uint64, ids []chunk.ID) (gcorder.SweepResult, error) {
	if len(ids) > MaxCandidates {
		return gcorder.SweepResult{}, fmt.Errorf("gcnode: sweep: %w: %d chunks exceed the limit of %d per order", gcorder.ErrInvalid, len(ids), MaxCandidates)
	}
	if err := n.authorize(ctx, from, gcorder.OpSweep, epoch); err != nil {
		return gcorder.SweepResult{}, err
	}
	cutoff, err := n.cutoffOf(epoch)
	if err != nil {
		return gcorder.SweepResult{}, err
	}
	r, err := n.cfg.Store.SweepChunks(ctx, ids, cutoff)
	n.swept.chunks.Add(r.Chunks) // a failed sweep may have deleted some
	n.swept.shards.Add(r.Shards)
	n.swept.bytes.Add(r.Bytes)
	n.swept.spared.Add(r.Spared)
	if err != nil {
		return r, fmt.Errorf("gcnode: sweep: %w", err)
	}
	n.cfg.Logger.Info("gc sweep", "epoch", epoch, "chunks", r.Chunks, "shards", r.Shards, "bytes", r.Bytes, "spared", r.Spared)
	return r, nil
}

// Peer adapts a Node to the meta leader's GC peer interface (meta.GCPeer) for a caller
// in the same process (tests, a single-process cluster), calling as principal from.
func (n *Node) Peer(from string) *LocalPeer { return &LocalPeer{n: n, from: from} }

// LocalPeer is a Node called in-process as one principal.
type LocalPeer struct {
	n    *Node
	from string
}

// Prepare calls Node.Prepare as the peer's principal.
func (p *LocalPeer) Prepare(ctx context.Context, epoch uint64, grace time.Duration) error {
	return p.n.Prepare(ctx, p.from, epoch, grace)
}

// Candidates calls Node.Candidates as the peer's principal.
func (p *LocalPeer) Candidates(ctx context.Context, epoch uint64, after *chunk.ID, limit int) ([]gcorder.Candidate, *chunk.ID, error) {
	return p.n.Candidates(ctx, p.from, epoch, after, limit)
}

// Sweep calls Node.Sweep as the peer's principal.
func (p *LocalPeer) Sweep(ctx context.Context, epoch uint64, ids []chunk.ID) (gcorder.SweepResult, error) {
	return p.n.Sweep(ctx, p.from, epoch, ids)
}
