package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/hashicorp/raft"
)

var _ meta.MembershipAdmin = (*Server)(nil)

// Bounds of a membership change.
const (
	// addCatchUpTimeout bounds how long an added non-voter may take to catch up before
	// the addition is given up (it stays a non-voter; `meta add` again resumes it).
	addCatchUpTimeout = 5 * time.Minute
	// memberProbeTimeout bounds each probe of a server (reachability, identity).
	memberProbeTimeout = 2 * time.Second
)

// ChangeMeta implements meta.MembershipAdmin on the leader. Every request that reaches
// the leader is audited, refusals included; a removal of the leader itself first hands
// leadership to another voter and answers NotLeader (the caller retries on the new
// leader, which removes this server).
func (s *Server) ChangeMeta(ctx context.Context, req meta.MetaChange) (meta.RaftStatus, error) {
	if err := s.leaderWrite(); err != nil {
		return meta.RaftStatus{}, err
	}
	p := meta.PrincipalFrom(ctx)
	action := "meta." + req.Action
	if err := s.gateChangeMeta(ctx, req); err != nil {
		return meta.RaftStatus{}, err
	}
	err := s.changeMeta(ctx, p, req)
	var nl *meta.NotLeaderError
	if errors.As(err, &nl) {
		return meta.RaftStatus{}, err // the new leader audits the retried request
	}
	s.audit(p, action, req.ID, req.Reason, err)
	if err != nil {
		return meta.RaftStatus{}, fmt.Errorf("server: meta %s %s: %w", req.Action, req.ID, err)
	}
	s.log.Info("meta group changed", "action", req.Action, "server", req.ID, "addr", req.Addr, "by", p.Name)
	return s.RaftStatus(ctx)
}

func (s *Server) changeMeta(ctx context.Context, p meta.Principal, req meta.MetaChange) error {
	if p.Role != meta.RoleAdmin && p.Role != meta.RoleSystem {
		return fmt.Errorf("%w: %s may not change the meta servers (admin only)", meta.ErrDenied, p)
	}
	if req.ID == "" {
		return fmt.Errorf("%w: empty server ID", meta.ErrInvalid)
	}
	if req.Action != meta.MetaAdd && req.Action != meta.MetaRemove {
		return fmt.Errorf("%w: unknown membership action %q (want %q or %q)", meta.ErrInvalid, req.Action, meta.MetaAdd, meta.MetaRemove)
	}
	if !s.memberMu.TryLock() {
		return fmt.Errorf("%w: another meta membership change is in progress; one change at a time", meta.ErrInvalid)
	}
	defer s.memberMu.Unlock()
	conf, ok := latestConfiguration(s.raft)
	if !ok {
		return fmt.Errorf("%w: cannot read the Raft configuration", meta.ErrUnavailable)
	}
	// A non-voter is an addition in progress on a former leader, or one given up: it
	// must be finished (add again) or undone (remove) before anything else changes.
	for _, sv := range conf.Servers {
		if sv.Suffrage != raft.Voter && string(sv.ID) != req.ID {
			return fmt.Errorf("%w: meta server %s is still a non-voter (an addition in progress or interrupted): finish it with \"meta add %s %s\" or undo it with \"meta remove %s\" first",
				meta.ErrInvalid, sv.ID, sv.ID, sv.Address, sv.ID)
		}
	}
	if req.Action == meta.MetaAdd {
		return s.addServer(ctx, conf, req)
	}
	return s.removeServer(ctx, conf, req)
}

// addServer checks the new server and adds it (AddVoter: non-voter, catch-up, voter).
func (s *Server) addServer(ctx context.Context, conf raft.Configuration, req meta.MetaChange) error {
	if req.Addr == "" {
		return fmt.Errorf("%w: add %s: empty address", meta.ErrInvalid, req.ID)
	}
	resume := false
	for _, sv := range conf.Servers {
		switch {
		case string(sv.ID) == req.ID && sv.Suffrage == raft.Voter:
			return fmt.Errorf("%w: %s is already a voter (at %s)", meta.ErrExists, req.ID, sv.Address)
		case string(sv.ID) == req.ID && string(sv.Address) != req.Addr:
			return fmt.Errorf("%w: %s is a non-voter at %s, not %s: remove it first to change its address", meta.ErrInvalid, req.ID, sv.Address, req.Addr)
		case string(sv.ID) == req.ID:
			resume = true
		case string(sv.Address) == req.Addr:
			return fmt.Errorf("%w: address %s belongs to meta server %s", meta.ErrInvalid, req.Addr, sv.ID)
		}
	}
	if s.cfg.PeerStatus != nil {
		pctx, cancel := context.WithTimeout(ctx, memberProbeTimeout)
		rs, err := s.cfg.PeerStatus(pctx, req.Addr)
		cancel()
		if err != nil {
			return fmt.Errorf("%w: no meta server answers at %s (start it first, with a node.yaml that does not list it in meta_servers): %v", meta.ErrInvalid, req.Addr, err)
		}
		if rs.Self != req.ID {
			return fmt.Errorf("%w: the meta server at %s is %q, not %q", meta.ErrInvalid, req.Addr, rs.Self, req.ID)
		}
		if !resume && len(rs.Servers) > 0 {
			var ids []string
			for _, sv := range rs.Servers {
				ids = append(ids, sv.ID)
			}
			return fmt.Errorf("%w: %s already belongs to a Raft configuration (%s): only a server with an empty meta data directory can be added",
				meta.ErrInvalid, req.ID, strings.Join(ids, ", "))
		}
	}
	actx, cancel := context.WithTimeout(ctx, addCatchUpTimeout)
	defer cancel()
	return s.AddVoter(actx, req.ID, req.Addr)
}

// removeServer refuses a removal that would lose the quorum, hands leadership over when
// the leader itself is removed, and removes the server.
func (s *Server) removeServer(ctx context.Context, conf raft.Configuration, req meta.MetaChange) error {
	i := slices.IndexFunc(conf.Servers, func(sv raft.Server) bool { return string(sv.ID) == req.ID })
	if i < 0 {
		var ids []string
		for _, sv := range conf.Servers {
			ids = append(ids, string(sv.ID))
		}
		return fmt.Errorf("%w: %q is not a meta server (the Raft configuration holds %s)", meta.ErrNotFound, req.ID, strings.Join(ids, ", "))
	}
	if req.Addr != "" && string(conf.Servers[i].Address) != req.Addr {
		return fmt.Errorf("%w: meta server %s is at %s, not %s", meta.ErrInvalid, req.ID, conf.Servers[i].Address, req.Addr)
	}
	if conf.Servers[i].Suffrage == raft.Voter {
		if err := s.checkQuorumWithout(ctx, conf, req.ID); err != nil {
			return err
		}
	}
	if req.ID == s.cfg.ID {
		if err := s.raft.LeadershipTransfer().Error(); err != nil {
			return fmt.Errorf("%w: hand leadership over before removing the leader %s: %v", meta.ErrUnavailable, req.ID, err)
		}
		return &meta.NotLeaderError{LeaderAddr: s.LeaderAddr()}
	}
	if err := s.raft.RemoveServer(raft.ServerID(req.ID), 0, timeoutOf(ctx)).Error(); err != nil {
		return fmt.Errorf("remove %s: %w", req.ID, s.raftErr(err))
	}
	return nil
}

// checkQuorumWithout refuses when the voters other than id that answer (this leader
// and every voter answering PeerApplied) are no majority of the voters other than id.
func (s *Server) checkQuorumWithout(ctx context.Context, conf raft.Configuration, id string) error {
	var rest []raft.Server
	for _, sv := range conf.Servers {
		if sv.Suffrage == raft.Voter && string(sv.ID) != id {
			rest = append(rest, sv)
		}
	}
	if len(rest) == 0 {
		return fmt.Errorf("%w: %s is the last voter: the meta group cannot be left without one", meta.ErrInvalid, id)
	}
	alive := make([]bool, len(rest))
	var wg sync.WaitGroup
	for k, sv := range rest {
		if string(sv.ID) == s.cfg.ID {
			alive[k] = true
			continue
		}
		if s.cfg.PeerApplied == nil {
			continue
		}
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, memberProbeTimeout)
			defer cancel()
			_, err := s.cfg.PeerApplied(pctx, string(sv.ID), string(sv.Address))
			alive[k] = err == nil
		})
	}
	wg.Wait()
	var up, down []string
	for k, sv := range rest {
		if alive[k] {
			up = append(up, string(sv.ID))
		} else {
			down = append(down, string(sv.ID))
		}
	}
	need := len(rest)/2 + 1
	if len(up) < need {
		return fmt.Errorf("%w: removing %s would lose the quorum: %d voters would remain and only %d answer (%s; not answering: %s), a majority is %d; bring a voter back first",
			meta.ErrInvalid, id, len(rest), len(up), strings.Join(up, ", "), strings.Join(down, ", "), need)
	}
	return nil
}

// MetaServers implements meta.MembershipAdmin: the leader's current configuration.
func (s *Server) MetaServers(ctx context.Context) ([]meta.Server, error) {
	if err := s.leaderRead(); err != nil {
		return nil, err
	}
	conf, ok := latestConfiguration(s.raft)
	if !ok {
		return nil, fmt.Errorf("server: meta servers: %w: cannot read the Raft configuration", meta.ErrUnavailable)
	}
	leader := s.cfg.ID
	out := make([]meta.Server, 0, len(conf.Servers))
	for _, sv := range conf.Servers {
		out = append(out, meta.Server{ID: string(sv.ID), Addr: string(sv.Address), Voter: sv.Suffrage == raft.Voter, Leader: string(sv.ID) == leader})
	}
	return out, nil
}
