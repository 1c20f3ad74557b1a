package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/cofferhq/coffer/chunkstore/erasure"
	"github.com/cofferhq/coffer/chunkstore/repair"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/placement"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/wire"
)

// Node RPCs of the repair worker.
const (
	methodPGHealth = "node.PGHealth" // the PG health reports of the PGs this node leads
	methodScrub    = "node.Scrub"    // start a deep scrub pass now (admin or node peers)
)

type pgHealthResp struct {
	PGs []placement.PGHealth `cbor:"pgs"`
}

// startRepair starts the chunk node's repair worker (owned by New; stops with ctx).
func (n *Node) startRepair(ctx context.Context, pr *peers) error {
	rc := n.cfg.Repair
	if n.deps.RepairInterval > 0 {
		rc.Interval = n.deps.RepairInterval
	}
	w, err := repair.New(repair.Config{
		Self:           placement.NodeID(n.cfg.ID),
		Map:            n.cmap.Load,
		Shards:         pr.store,
		Codec:          erasure.NewCodec(),
		Logger:         n.log.With("component", "repair"),
		Now:            n.deps.Now,
		BytesPerSecond: rc.BytesPerSecond,
		ConcurrentPGs:  rc.ConcurrentPGs,
		Interval:       rc.Interval,
		DeepInterval:   rc.DeepScrubInterval,
		VerifyInterval: rc.VerifyInterval,
	})
	if err != nil {
		return fmt.Errorf("node: repair: %w", err)
	}
	n.repair = w
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		w.Run(ctx)
	}()
	return nil
}

// Repair returns the node's repair worker, or nil without the chunk role.
func (n *Node) Repair() *repair.Worker { return n.repair }

// serveRepair answers node.PGHealth and node.Scrub. Every scrub request, started or
// refused, goes to the audit log (action "scrub start", target this node).
func (n *Node) serveRepair(ctx context.Context, peer transport.Peer, method string, body []byte) ([]byte, error) {
	if !peer.Role.IsNode() && peer.Role != transport.RoleAdmin {
		err := transport.Errorf(transport.PermissionDenied, "node: %s: role %q not allowed (node or admin only)", method, peer.Role)
		if method == methodScrub {
			n.auditRefusal(n.ctx, peer, scrubAction, fmt.Sprintf("%v (on node %s)", err, n.cfg.ID))
		}
		return nil, err
	}
	if n.repair == nil {
		return wire.Marshal(pgHealthResp{})
	}
	if method == methodScrub {
		n.repair.DeepScrub()
		n.auditAction(n.ctx, peer, meta.AuditEntry{Action: scrubAction, Target: "node " + n.cfg.ID})
	}
	return wire.Marshal(pgHealthResp{PGs: n.repair.Health()})
}

// scrubAction names a deep scrub start in the audit log.
const scrubAction = "scrub start"

// gatherPGHealth asks every reachable chunk node of the current map for its PG
// reports (meta leader: decommission check, `coffer admin pgs`). Nodes that do not
// answer are skipped; the error joins their failures.
//
// A PG whose reporter did not answer keeps the last report gathered for it: a PG shows
// "unknown" only until the first report of it arrives, not whenever its reporter (the
// PG's first active owner) has just died and the next one has not finished its pass.
// Reports carry their epoch and reporter, so an old one shows for what it is.
func (n *Node) gatherPGHealth(ctx context.Context) ([]placement.PGHealth, error) {
	reps, err := n.callChunkNodes(ctx, methodPGHealth)
	var pgs uint32
	if m := n.cmap.Load(); m != nil {
		pgs = m.PGCount
	}
	return n.pgRep.merge(reps, pgs), err
}

// pgReports keeps the PG reports gathered last, by PG.
type pgReports struct {
	mu   sync.Mutex
	byPG map[uint32][]placement.PGHealth
}

// merge files fresh reports (replacing every earlier report of their PGs) and returns
// all kept reports of PGs below pgCount, by PG.
func (p *pgReports) merge(fresh []placement.PGHealth, pgCount uint32) []placement.PGHealth {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.byPG == nil {
		p.byPG = map[uint32][]placement.PGHealth{}
	}
	now := map[uint32][]placement.PGHealth{}
	for _, r := range fresh {
		now[r.PG] = append(now[r.PG], r)
	}
	for pg, rs := range now {
		p.byPG[pg] = rs
	}
	out := make([]placement.PGHealth, 0, len(p.byPG))
	for pg, rs := range p.byPG {
		if pg >= pgCount {
			delete(p.byPG, pg)
			continue
		}
		out = append(out, rs...)
	}
	slices.SortFunc(out, func(a, b placement.PGHealth) int { return cmp.Compare(a.PG, b.PG) })
	return out
}

// StartScrub asks every reachable chunk node to start a deep scrub pass (each audits it).
func (n *Node) StartScrub(ctx context.Context) error {
	_, err := n.callChunkNodes(ctx, methodScrub)
	return err
}

func (n *Node) callChunkNodes(ctx context.Context, method string) ([]placement.PGHealth, error) {
	m := n.cmap.Load()
	if m == nil {
		return nil, errors.New("node: no cluster map yet")
	}
	var mu sync.Mutex
	var out []placement.PGHealth
	var errs []error
	var wg sync.WaitGroup
	for _, nd := range m.Nodes {
		if nd.State == placement.StateDecommissioned || nd.State == placement.StateDown {
			continue
		}
		wg.Go(func() {
			var r pgHealthResp
			var err error
			if nd.ID == placement.NodeID(n.cfg.ID) && n.repair != nil {
				if method == methodScrub {
					n.repair.DeepScrub()
					self := transport.Peer{Principal: n.cfg.ID, Role: transport.RoleNode}
					n.auditAction(n.ctx, self, meta.AuditEntry{Action: scrubAction, Target: "node " + n.cfg.ID})
				}
				r.PGs = n.repair.Health()
			} else {
				err = wire.Call(ctx, n.ep, nd.Addr, method, struct{}{}, &r)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", nd.ID, err))
				return
			}
			out = append(out, r.PGs...)
		})
	}
	wg.Wait()
	return out, errors.Join(errs...)
}
