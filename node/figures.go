package node

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/gcorder"
	"github.com/cofferhq/coffer/chunkstore/nodestat"
	"github.com/cofferhq/coffer/chunkstore/segstore"
	metaserver "github.com/cofferhq/coffer/meta/server"
	"github.com/cofferhq/coffer/placement"
)

// Figures is a node's observable state at one moment, read from the state its parts
// already keep (Raft, the shard store, the repair worker, gossip, the revocation list)
// and from the node's few counters. The metrics collector turns it into Prometheus
// series at every scrape (metrics.go); other readers (a status page) may call it too.
// Counters count since the node started.
type Figures struct {
	Node   string
	Roles  []string
	Domain string

	// Client traffic through this node's coordinator (chunk.* RPCs from agents, restore
	// operators and admins): chunks written by backups, chunks read by restores (and by
	// ls, dump and verify, which read the same way).
	BackupBytes, BackupChunks   int64
	RestoreBytes, RestoreChunks int64

	// AuditRefusals counts the refusals this node reported to the audit log (revoked
	// certificates, roles the authorization table or a service refused); AuditDropped
	// those only logged here because too many reports were in flight.
	AuditRefusals, AuditDropped int64
	// RevokedRequests counts requests refused because their certificate is revoked.
	RevokedRequests int64
	// Revocations is the number of entries of the revocation list this node enforces,
	// RevocationVersion its version, RevocationCurrent whether it is the leader's newest.
	Revocations       int
	RevocationVersion uint64
	RevocationCurrent bool

	// MapEpoch is the epoch of the node's cluster map (0 before the first one arrived);
	// MapNodes counts the map's chunk nodes by state (every placement state present).
	MapEpoch uint64
	MapNodes map[placement.State]int
	// Members counts gossip members by state as this node sees them (alive, suspect,
	// dead, left, revoked).
	Members map[string]int

	// Chunk role only (nil otherwise).
	Shards  *ShardFigures
	Repair  *nodestat.Repair
	PGs     map[string]int       // the PGs this node leads, by placement.PGHealth.State
	GCSwept *gcorder.SweepResult // what GC sweep orders deleted here since start

	// Meta role only (nil otherwise).
	Meta *metaserver.Figures
}

// PGStates are the states of placement.PGHealth.State, every one a key of Figures.PGs.
func PGStates() []string {
	return []string{"healthy", "backfilling", "degraded", "inconsistent", "unreadable"}
}

// mapStates are the placement states counted in Figures.MapNodes.
func mapStates() []placement.State {
	return []placement.State{placement.StateJoining, placement.StateActive, placement.StateDraining,
		placement.StateDecommissioned, placement.StateDown, placement.StateOut}
}

// ShardFigures is the shard store's state: its Stats, the segment files' size and what
// compaction did since the store was opened.
type ShardFigures struct {
	nodestat.Shards
	// FileBytes is the size of all segment files (live records, dead ones and headers).
	FileBytes int64
	Compact   segstore.CompactTotals
}

// counters are the node's own counters behind Figures; everything else is read from the
// node's parts.
type counters struct {
	backupBytes, backupChunks   atomic.Int64
	restoreBytes, restoreChunks atomic.Int64
	auditRefusals, auditDropped atomic.Int64
	revokedRequests             atomic.Int64
}

// Figures returns the node's figures now. Reading them costs no network round trip.
// On an error (the shard store or the meta server cannot be read, e.g. while the node
// closes) the figures read so far are returned with it.
func (n *Node) Figures(ctx context.Context) (Figures, error) {
	c := &n.counters
	rl := n.sec.rev.Load()
	f := Figures{
		Node: n.cfg.ID, Domain: n.cfg.Domain,
		BackupBytes: c.backupBytes.Load(), BackupChunks: c.backupChunks.Load(),
		RestoreBytes: c.restoreBytes.Load(), RestoreChunks: c.restoreChunks.Load(),
		AuditRefusals: c.auditRefusals.Load(), AuditDropped: c.auditDropped.Load(),
		RevokedRequests: c.revokedRequests.Load(),
		Revocations:     len(rl.Revocations), RevocationVersion: rl.Version, RevocationCurrent: rl.current,
		MapNodes: map[placement.State]int{}, Members: map[string]int{},
	}
	for _, r := range n.cfg.Roles {
		f.Roles = append(f.Roles, string(r))
	}
	for _, s := range mapStates() {
		f.MapNodes[s] = 0
	}
	if m := n.cmap.Load(); m != nil {
		f.MapEpoch = m.Epoch
		for _, nd := range m.Nodes {
			f.MapNodes[nd.State]++
		}
	}
	for _, s := range []string{"alive", "suspect", "dead", "left", "revoked"} {
		f.Members[s] = 0
	}
	for _, m := range n.gossip.members() {
		f.Members[m.State]++
	}
	if n.repair != nil {
		rs := n.repair.Status()
		f.Repair = &rs
		f.PGs = map[string]int{}
		for _, s := range PGStates() {
			f.PGs[s] = 0
		}
		for _, h := range n.repair.Health() {
			f.PGs[h.State()]++
		}
	}
	if n.gcn != nil {
		t := n.gcn.Totals()
		f.GCSwept = &t
	}
	if n.shards != nil {
		st, err := n.shards.Stats(ctx)
		if err != nil {
			return f, fmt.Errorf("node: figures: %w", err)
		}
		segs, err := n.shards.Segments()
		if err != nil {
			return f, fmt.Errorf("node: figures: %w", err)
		}
		sf := &ShardFigures{Shards: st, Compact: n.shards.CompactTotals()}
		for _, s := range segs {
			sf.FileBytes += s.Size
		}
		f.Shards = sf
	}
	if n.meta != nil {
		mf, err := n.meta.Figures()
		if err != nil {
			return f, fmt.Errorf("node: figures: %w", err)
		}
		f.Meta = &mf
	}
	return f, nil
}

// countingStore is the node's coordinator as the chunk.* RPCs see it: it counts the
// chunks and bytes clients write and read (Figures' backup and restore traffic). The
// meta server's commit checks and GC read the coordinator directly and are not counted.
type countingStore struct {
	s chunkstore.Store
	c *counters
}

var (
	_ chunkstore.Store       = countingStore{}
	_ chunkstore.BatchGetter = countingStore{}
)

func (cs countingStore) Put(ctx context.Context, chunks []chunkstore.Chunk) error {
	if err := cs.s.Put(ctx, chunks); err != nil {
		return err
	}
	var b int64
	for _, c := range chunks {
		b += int64(len(c.Data))
	}
	cs.c.backupChunks.Add(int64(len(chunks)))
	cs.c.backupBytes.Add(b)
	return nil
}

func (cs countingStore) Get(ctx context.Context, id chunk.ID) ([]byte, error) {
	data, err := cs.s.Get(ctx, id)
	if err == nil {
		cs.c.restoreChunks.Add(1)
		cs.c.restoreBytes.Add(int64(len(data)))
	}
	return data, err
}

func (cs countingStore) Has(ctx context.Context, ids []chunk.ID) ([]bool, error) {
	return cs.s.Has(ctx, ids)
}

// GetMany reads through the coordinator's batch read (chunkstore.GetMany).
func (cs countingStore) GetMany(ctx context.Context, ids []chunk.ID) []chunkstore.GetResult {
	out := chunkstore.GetMany(ctx, cs.s, ids)
	var n, b int64
	for _, r := range out {
		if r.Err == nil {
			n++
			b += int64(len(r.Data))
		}
	}
	cs.c.restoreChunks.Add(n)
	cs.c.restoreBytes.Add(b)
	return out
}
