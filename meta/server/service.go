package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
	"github.com/cofferhq/coffer/placement"
	"github.com/hashicorp/raft"
)

// hasBatch is how many IDs one Has call checks during the commit check.
const hasBatch = 4096

// CreateVault creates a vault. A zero Profile takes the cluster map's profile (or
// placement.DefaultProfile when there is no map).
func (s *Server) CreateVault(ctx context.Context, v meta.Vault) (meta.Vault, error) {
	if err := s.leaderWrite(); err != nil {
		return meta.Vault{}, err
	}
	// Every attempt is audited: refusals decided here through RecordAudit, the rest by
	// the FSM with the outcome.
	p := meta.PrincipalFrom(ctx)
	if err := p.Authorize(meta.ActCreateVault, v.ID); err != nil {
		s.auditRefusal(ctx, p, "vault create", v.ID, "", err)
		return meta.Vault{}, fmt.Errorf("server: create vault: %w", err)
	}
	if v.Profile == (placement.Profile{}) {
		v.Profile = placement.DefaultProfile
		if m, ok, err := s.fsm.ClusterMap(); err == nil && ok {
			v.Profile = m.Profile
		}
	}
	if err := meta.ValidateVault(v); err != nil {
		s.auditRefusal(ctx, p, "vault create", v.ID, "", err)
		return meta.Vault{}, fmt.Errorf("server: create vault: %w", err)
	}
	if v.Keys != nil {
		if err := s.checkPlatformWraps(v.Keys.Wraps); err != nil {
			s.auditRefusal(ctx, p, "vault create", v.ID, "", err)
			return meta.Vault{}, fmt.Errorf("server: create vault: %w", err)
		}
	}
	res, err := s.propose(timeoutOf(ctx), command.CreateVault{Vault: v, By: &p})
	if err != nil {
		return meta.Vault{}, err
	}
	return res.(meta.Vault), nil
}

// GetVault returns one vault (linearizable read on the leader), without its key wraps
// for a principal that may not see them (meta.VaultFor).
func (s *Server) GetVault(ctx context.Context, id meta.VaultID) (meta.Vault, error) {
	if err := s.leaderRead(); err != nil {
		return meta.Vault{}, err
	}
	p := meta.PrincipalFrom(ctx)
	if err := p.Authorize(meta.ActRead, id); err != nil {
		return meta.Vault{}, fmt.Errorf("server: get vault: %w", err)
	}
	v, err := s.fsm.Vault(id)
	return meta.VaultFor(p, v), err
}

// ListVaults returns every vault sorted by ID (linearizable read on the leader).
func (s *Server) ListVaults(ctx context.Context) ([]meta.Vault, error) {
	if err := s.leaderRead(); err != nil {
		return nil, err
	}
	vs, err := s.fsm.Vaults()
	p := meta.PrincipalFrom(ctx)
	// Each principal sees only the vaults it may read, and key wraps only when it may.
	vs = slices.DeleteFunc(vs, func(v meta.Vault) bool { return !p.Can(meta.ActRead, v.ID) })
	for i := range vs {
		vs[i] = meta.VaultFor(p, vs[i])
	}
	return vs, err
}

// CommitSnapshot checks the snapshot's reference lists against the chunk store and, when
// every chunk is stored, records the snapshot. See meta.Service.
func (s *Server) CommitSnapshot(ctx context.Context, snap meta.Snapshot) (meta.Snapshot, error) {
	if err := s.leaderWrite(); err != nil {
		return meta.Snapshot{}, err
	}
	if err := meta.ValidateSnapshot(snap); err != nil {
		return meta.Snapshot{}, fmt.Errorf("server: commit snapshot: %w", err)
	}
	by := meta.PrincipalFrom(ctx)
	if err := s.authorizeCommit(by, snap); err != nil {
		return meta.Snapshot{}, fmt.Errorf("server: commit snapshot %s: %w", snap.ID.Str(), err)
	}
	v, err := s.fsm.Vault(snap.Vault)
	if err != nil {
		return meta.Snapshot{}, fmt.Errorf("server: commit snapshot %s: %w", snap.ID.Str(), err)
	}
	if snap.Lock != nil {
		// Refused before the chunk check; the FSM decides again at the entry's time.
		if err := meta.CheckAgentLockLimit(by, snap.Vault, *snap.Lock, s.fsm.Now(), v.Retention); err != nil {
			return meta.Snapshot{}, fmt.Errorf("server: commit snapshot %s: %w", snap.ID.Str(), err)
		}
	}
	if _, err := s.fsm.GetSnapshot(snap.Vault, snap.ID); err == nil {
		return meta.Snapshot{}, fmt.Errorf("server: commit snapshot %s in vault %s: %w", snap.ID.Str(), snap.Vault, meta.ErrExists)
	} else if !errors.Is(err, meta.ErrNotFound) {
		return meta.Snapshot{}, err
	}
	// A garbage collection that begins during the check may not see this snapshot in its
	// mark: the FSM then refuses the entry (meta.ErrGCEpoch) and the check runs again in
	// the new epoch, touching the chunks after the nodes' cutoffs.
	for attempt := 1; ; attempt++ {
		gc, err := s.fsm.GCState()
		if err != nil {
			return meta.Snapshot{}, fmt.Errorf("server: commit snapshot %s: %w", snap.ID.Str(), err)
		}
		if err := s.checkChunks(ctx, snap); err != nil {
			return meta.Snapshot{}, fmt.Errorf("server: commit snapshot %s: %w", snap.ID.Str(), err)
		}
		res, err := s.propose(timeoutOf(ctx), command.CommitSnapshot{Snapshot: snap, GCEpoch: gc.Epoch, By: &by})
		if errors.Is(err, meta.ErrGCEpoch) && attempt < 5 {
			continue
		}
		if err != nil {
			return meta.Snapshot{}, err
		}
		if s.cfg.OnCommit != nil {
			s.cfg.OnCommit(res.(meta.Snapshot))
		}
		return res.(meta.Snapshot), nil
	}
}

// checkChunks checks that the tree is listed and that every listed chunk is stored
// (meta.CommitCheck).
//
// Chunks that the snapshot's parent references are not asked about while the parent is
// committed: only a collection deletes chunks, and it sweeps only chunks no snapshot
// referenced when its epoch began, so the parent's chunks are all stored for as long as
// the parent is. The caller commits with the GC epoch read before this check, so a
// parent forgotten and collected meanwhile makes the FSM refuse the commit and the check
// run again, without the parent. Reference lists are split by content, so the snapshot
// shares most of its list's chunks with its parent's; the check reads and asks about
// only the others (an unchanged re-backup costs the leader an existence query for its
// list's chunks and a few reads to find the tree).
func (s *Server) checkChunks(ctx context.Context, snap meta.Snapshot) error {
	check := meta.CommitCheck{Chunks: s.cfg.Chunks, HasBatch: hasBatch, NotStored: s.cfg.ChunkNotFound}
	return check.Run(ctx, snap, s.parentRefs(snap))
}

// parentRefs returns the reference-list chunks of snap's parent, or nil when there is no
// parent or it is not committed in snap's vault.
func (s *Server) parentRefs(snap meta.Snapshot) []chunk.ID {
	if snap.Parent == nil {
		return nil
	}
	parent, err := s.fsm.GetSnapshot(snap.Vault, *snap.Parent)
	if err != nil {
		return nil
	}
	return parent.Refs
}

// ListSnapshots returns a vault's snapshots by commit time (linearizable read).
func (s *Server) ListSnapshots(ctx context.Context, vault meta.VaultID) ([]meta.Snapshot, error) {
	if err := s.leaderRead(); err != nil {
		return nil, err
	}
	if err := meta.PrincipalFrom(ctx).Authorize(meta.ActRead, vault); err != nil {
		return nil, fmt.Errorf("server: list snapshots: %w", err)
	}
	if _, err := s.fsm.Vault(vault); err != nil {
		return nil, err
	}
	return s.fsm.Snapshots(vault)
}

// GetSnapshot returns one snapshot (linearizable read).
func (s *Server) GetSnapshot(ctx context.Context, vault meta.VaultID, id meta.SnapshotID) (meta.Snapshot, error) {
	if err := s.leaderRead(); err != nil {
		return meta.Snapshot{}, err
	}
	if err := meta.PrincipalFrom(ctx).Authorize(meta.ActRead, vault); err != nil {
		return meta.Snapshot{}, fmt.Errorf("server: get snapshot: %w", err)
	}
	return s.fsm.GetSnapshot(vault, id)
}

// ClusterMap returns the current map, or meta.ErrNotFound before the first one is set.
// Agents and restore operators get only its entry points (meta.MapFor).
func (s *Server) ClusterMap(ctx context.Context) (placement.Map, error) {
	if err := s.leaderRead(); err != nil {
		return placement.Map{}, err
	}
	m, ok, err := s.fsm.ClusterMap()
	if err == nil && !ok {
		err = fmt.Errorf("server: cluster map: %w", meta.ErrNotFound)
	}
	// Agents and restore operators get the entry points only, not the topology.
	return meta.MapFor(meta.PrincipalFrom(ctx), m), err
}

// SetClusterMap replaces the map when m.Epoch is the current epoch + 1. Role checks are
// the caller's (metarpc's) job.
func (s *Server) SetClusterMap(ctx context.Context, m placement.Map) error {
	if err := s.leaderWrite(); err != nil {
		return err
	}
	if err := meta.ValidateMap(m); err != nil {
		return fmt.Errorf("server: set cluster map: %w", err)
	}
	if err := meta.PrincipalFrom(ctx).Authorize(meta.ActClusterMap, ""); err != nil {
		return fmt.Errorf("server: set cluster map: %w", err)
	}
	_, err := s.propose(timeoutOf(ctx), command.SetClusterMap{Map: m})
	return err
}

// RaftStatus reports this server's view of the group. On the leader, Reachable comes
// from asking every other server for its status (PeerApplied, 1 s each, in parallel); a
// follower knows only itself and the leader it hears from.
func (s *Server) RaftStatus(ctx context.Context) (meta.RaftStatus, error) {
	addr, id := s.raft.LeaderWithID()
	st := s.raft.Stats()
	num := func(k string) uint64 { n, _ := strconv.ParseUint(st[k], 10, 64); return n }
	rs := meta.RaftStatus{
		Self: s.cfg.ID, Leader: string(id), LeaderAddr: string(addr),
		Term: num("term"), CommitIndex: num("commit_index"), AppliedIndex: num("applied_index"),
	}
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return rs, fmt.Errorf("server: raft status: %w", s.raftErr(err))
	}
	probe := s.raft.State() == raft.Leader && s.cfg.PeerApplied != nil
	var wg sync.WaitGroup
	servers := f.Configuration().Servers
	rs.Servers = make([]meta.Server, 0, len(servers)) // NB: no reallocation; probes hold pointers
	for _, srv := range servers {
		isLeader := srv.ID == id
		rs.Servers = append(rs.Servers, meta.Server{
			ID: string(srv.ID), Addr: string(srv.Address), Voter: srv.Suffrage == raft.Voter,
			Leader: isLeader, Reachable: isLeader || string(srv.ID) == s.cfg.ID,
		})
		if m := &rs.Servers[len(rs.Servers)-1]; probe && !m.Reachable {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pctx, cancel := context.WithTimeout(ctx, time.Second)
				defer cancel()
				_, err := s.cfg.PeerApplied(pctx, m.ID, m.Addr)
				m.Reachable = err == nil
			}()
		}
	}
	wg.Wait()
	return rs, nil
}

// leaderWrite refuses writes on a follower.
func (s *Server) leaderWrite() error {
	if s.raft.State() != raft.Leader {
		return &meta.NotLeaderError{LeaderAddr: s.LeaderAddr()}
	}
	return nil
}
