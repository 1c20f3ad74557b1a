package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/gcorder"
	"github.com/cofferhq/coffer/chunkstore/reflist"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
	"github.com/cofferhq/coffer/placement"
)

// gcPage is how many candidates one Candidates call asks for, and how many IDs one sweep
// order carries.
const gcPage = 4096

// GCStatus implements meta.GCAdmin.
func (s *Server) GCStatus(ctx context.Context) (meta.GCStatus, error) {
	if err := s.leaderRead(); err != nil {
		return meta.GCStatus{}, err
	}
	if err := meta.PrincipalFrom(ctx).Authorize(meta.ActRead, ""); err != nil {
		return meta.GCStatus{}, fmt.Errorf("server: gc status: %w", err)
	}
	st, err := s.fsm.GCState()
	return meta.GCStatus{State: st, Leader: s.cfg.ID}, err
}

// RunGC implements meta.GCAdmin: one mark-and-sweep collection, led by this server.
//
//  1. Prepare: every chunk node in the map records its clock; its cutoff for the epoch
//     is that time minus the grace period. Nodes that do not answer sit this epoch out.
//  2. GCBegin is committed. From here on a commit checked before it is refused and
//     re-checked, so the mark below sees every snapshot committed before the epoch or
//     the chunks of a later one were touched (after the nodes' cutoffs) by its check.
//  3. Mark: the reference lists of every snapshot of every vault (soft-deleted ones too,
//     they can be recovered) give the live set.
//  4. Candidates: each node lists the chunks it holds that were not written or touched
//     since its cutoff; live ones are dropped, and so are the chunks of snapshots
//     committed while the candidates were listed (a second, short mark).
//  5. GCSweep is committed; each node gets its sweep orders and deletes what is still
//     untouched since its cutoff (a touch by a commit check or an upload wins).
//  6. GCEnd records the report.
//
// Any failure before step 5 abandons the epoch without deleting anything.
func (s *Server) RunGC(ctx context.Context, opts meta.GCOptions) (meta.GCReport, error) {
	if err := s.leaderWrite(); err != nil {
		return meta.GCReport{}, err
	}
	p := meta.PrincipalFrom(ctx)
	if err := p.Authorize(meta.ActGC, ""); err != nil {
		err = fmt.Errorf("server: gc: %w", err)
		s.auditRefusal(ctx, p, "gc", "", "", err)
		return meta.GCReport{}, err
	}
	if s.cfg.GCPeer == nil {
		return meta.GCReport{}, fmt.Errorf("%w: server: gc: this server has no way to reach chunk nodes", meta.ErrUnavailable)
	}
	if !s.gcMu.TryLock() {
		return meta.GCReport{}, fmt.Errorf("%w: server: gc: a collection is already running on this leader", meta.ErrUnavailable)
	}
	defer s.gcMu.Unlock()
	grace := s.cfg.GCGrace
	if opts.Grace > 0 {
		grace = opts.Grace
	}
	rep, err := s.runGC(ctx, opts.DryRun, grace)
	if p.Role != meta.RoleSystem {
		reason := fmt.Sprintf("epoch %d: %d candidates, %d chunks (%d bytes) swept", rep.Epoch, rep.Candidates, rep.SweptChunks, rep.SweptBytes)
		if opts.DryRun {
			reason = "dry run: " + reason
		}
		if err != nil {
			reason = err.Error()
		}
		s.auditOK(ctx, p, "gc", "", fmt.Sprintf("epoch %d", rep.Epoch), reason)
	}
	return rep, err
}

// gcNode is one chunk node taking part in a collection.
type gcNode struct {
	node  placement.Node
	peer  meta.GCPeer
	cands []gcorder.Candidate
}

func (s *Server) runGC(ctx context.Context, dryRun bool, grace time.Duration) (meta.GCReport, error) {
	st, err := s.fsm.GCState()
	if err != nil {
		return meta.GCReport{}, fmt.Errorf("server: gc: %w", err)
	}
	m, ok, err := s.fsm.ClusterMap()
	if err != nil || !ok {
		return meta.GCReport{}, fmt.Errorf("%w: server: gc: no cluster map (%v)", meta.ErrUnavailable, err)
	}
	epoch := st.Epoch + 1
	rep := meta.GCReport{Epoch: epoch, DryRun: dryRun}

	// 1. Prepare.
	var nodes []*gcNode
	for _, n := range m.Nodes {
		if n.State == placement.StateDecommissioned {
			continue
		}
		peer := s.cfg.GCPeer(n)
		if peer == nil {
			rep.Skipped = append(rep.Skipped, string(n.ID)+": unreachable")
			continue
		}
		if err := peer.Prepare(ctx, epoch, grace); err != nil {
			rep.Skipped = append(rep.Skipped, fmt.Sprintf("%s: prepare: %v", n.ID, err))
			continue
		}
		nodes = append(nodes, &gcNode{node: n, peer: peer})
	}
	rep.Nodes = len(nodes)

	// 2. Begin.
	res, err := s.propose(timeoutOf(ctx), command.GCBegin{Epoch: epoch, Leader: s.cfg.ID, Grace: int64(grace)})
	if err != nil {
		return rep, fmt.Errorf("server: gc: begin epoch %d: %w", epoch, err)
	}
	rep.Began = res.(meta.GCState).Began
	abandon := func(cause error) (meta.GCReport, error) {
		rep.Error = cause.Error()
		if _, err := s.propose(timeoutOf(ctx), command.GCEnd{Epoch: epoch, Report: rep}); err != nil {
			s.log.Warn("gc: record abandoned epoch", "epoch", epoch, "err", err)
		}
		return rep, fmt.Errorf("server: gc: epoch %d abandoned, nothing swept: %w", epoch, cause)
	}

	// 3. Mark.
	live := make(map[chunk.ID]struct{})
	marked := make(map[meta.SnapshotID]struct{})
	if err := s.mark(ctx, live, marked, &rep); err != nil {
		return abandon(err)
	}

	// 4. Candidates.
	for _, n := range nodes {
		var after *chunk.ID
		for {
			page, next, err := n.peer.Candidates(ctx, epoch, after, gcPage)
			if err != nil {
				return abandon(fmt.Errorf("candidates from node %s: %w", n.node.ID, err))
			}
			for _, c := range page {
				if _, ok := live[c.ID]; !ok {
					n.cands = append(n.cands, c)
				}
			}
			if next == nil {
				break
			}
			after = next
		}
	}
	if err := s.mark(ctx, live, marked, &rep); err != nil {
		return abandon(err)
	}
	seen := make(map[chunk.ID]struct{})
	for _, n := range nodes {
		n.cands = slices.DeleteFunc(n.cands, func(c gcorder.Candidate) bool {
			_, ok := live[c.ID]
			return ok
		})
		for _, c := range n.cands {
			rep.CandidateBytes += c.Bytes
			seen[c.ID] = struct{}{}
		}
	}
	rep.Candidates = int64(len(seen))
	rep.Live = int64(len(live))
	if dryRun {
		_, err := s.propose(timeoutOf(ctx), command.GCEnd{Epoch: epoch, Report: rep})
		return rep, err
	}

	// 5. Sweep.
	if _, err := s.propose(timeoutOf(ctx), command.GCSweep{Epoch: epoch}); err != nil {
		return abandon(fmt.Errorf("enter the sweep phase: %w", err))
	}
	var (
		mu    sync.Mutex
		wg    sync.WaitGroup
		errs  []string
		swept = make(map[chunk.ID]struct{})
	)
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for cands := n.cands; len(cands) > 0; {
				k := min(len(cands), gcPage)
				ids := make([]chunk.ID, k)
				for i, c := range cands[:k] {
					ids[i] = c.ID
				}
				cands = cands[k:]
				r, err := n.peer.Sweep(ctx, epoch, ids)
				mu.Lock()
				if err != nil {
					errs = append(errs, fmt.Sprintf("%s: %v", n.node.ID, err))
					mu.Unlock()
					return
				}
				rep.SweptShards += r.Shards
				rep.SweptBytes += r.Bytes
				rep.Spared += r.Spared
				if r.Chunks > 0 {
					for _, id := range ids {
						swept[id] = struct{}{}
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	rep.SweptChunks = int64(len(swept))
	if len(errs) > 0 {
		rep.Error = "sweep incomplete: " + strings.Join(errs, "; ")
	}
	// 6. End.
	if _, err := s.propose(timeoutOf(ctx), command.GCEnd{Epoch: epoch, Report: rep}); err != nil {
		return rep, fmt.Errorf("server: gc: end epoch %d: %w", epoch, err)
	}
	if rep.Error != "" {
		return rep, fmt.Errorf("server: gc: epoch %d: %s", epoch, rep.Error)
	}
	return rep, nil
}

// mark adds to live the reference lists of every snapshot not yet in marked. A
// reference-list chunk is read once per call however many snapshots list it (their
// content-defined split makes a snapshot share most of them with its parent): its ID is
// the SHA-256 of its content, so a second read could only add the same IDs.
//
// NB: the chunks read are tracked apart from live: a snapshot may list any ID as a
// reference, including another snapshot's reference-list chunk, and that alone must not
// stop the chunk's IDs from being marked.
func (s *Server) mark(ctx context.Context, live map[chunk.ID]struct{}, marked map[meta.SnapshotID]struct{}, rep *meta.GCReport) error {
	vaults, err := s.fsm.Vaults()
	if err != nil {
		return err
	}
	read := map[chunk.ID]struct{}{}
	for _, v := range vaults {
		snaps, err := s.fsm.Snapshots(v.ID)
		if err != nil {
			return err
		}
		for _, snap := range snaps {
			if _, ok := marked[snap.ID]; ok {
				continue
			}
			live[snap.Tree] = struct{}{}
			for i, ref := range snap.Refs {
				live[ref] = struct{}{}
				if _, ok := read[ref]; ok {
					continue
				}
				data, err := s.cfg.Chunks.Get(ctx, ref)
				if err != nil {
					return fmt.Errorf("mark: snapshot %s in vault %s: reference list %d (%s): %w", snap.ID.Str(), v.ID, i, ref.Str(), err)
				}
				ids, err := reflist.Open(ref, data)
				if err != nil {
					return fmt.Errorf("mark: snapshot %s: reference list %d: %w: %w", snap.ID.Str(), i, meta.ErrInvalid, err)
				}
				for _, id := range ids {
					live[id] = struct{}{}
				}
				read[ref] = struct{}{}
			}
			marked[snap.ID] = struct{}{}
			rep.Snapshots++
		}
	}
	return nil
}

// gcDue starts a scheduled collection when GCInterval has passed (in cluster time) since
// the last one ended. It runs in the background; a failure is logged.
func (s *Server) gcDue() {
	if s.cfg.GCInterval <= 0 || s.cfg.GCPeer == nil {
		return
	}
	st, err := s.fsm.GCState()
	if err != nil {
		return
	}
	// Due GCInterval after the later of the last collection and the first time this
	// server checked (a new cluster does not collect the moment it starts).
	now := s.fsm.Now()
	last := st.Began
	if st.Last != nil && st.Last.Ended.After(last) {
		last = st.Last.Ended
	}
	if s.gcFirstSeen.IsZero() {
		s.gcFirstSeen = now
	}
	if s.gcFirstSeen.After(last) {
		last = s.gcFirstSeen
	}
	if now.Sub(last) < s.cfg.GCInterval {
		return
	}
	if !s.gcMu.TryLock() {
		return
	}
	s.gcMu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			select {
			case <-s.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		rep, err := s.RunGC(ctx, meta.GCOptions{})
		if err != nil && !errors.Is(err, meta.ErrUnavailable) {
			s.log.Warn("scheduled gc", "epoch", rep.Epoch, "err", err)
			return
		}
		s.log.Info("scheduled gc", "epoch", rep.Epoch, "candidates", rep.Candidates, "swept_chunks", rep.SweptChunks, "swept_bytes", rep.SweptBytes)
	}()
}
