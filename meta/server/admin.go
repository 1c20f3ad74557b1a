package server

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
	"github.com/cofferhq/coffer/placement"
)

// DefaultDownOut is how long a node stays down before the leader marks it out.
const DefaultDownOut = 10 * time.Minute

var _ meta.ClusterAdmin = (*Server)(nil)

// followLiveness runs on the leader: it applies placement.Map.FollowLiveness to the
// current map with the failure detector's view and the cluster clock, proposes the new
// map and records each transition in the audit list.
func (s *Server) followLiveness() {
	if s.cfg.Liveness == nil {
		return
	}
	m, ok, err := s.fsm.ClusterMap()
	if err != nil || !ok {
		return
	}
	now := s.fsm.Now()
	if now.IsZero() {
		return
	}
	nm, ts := m.FollowLiveness(now, s.cfg.DownOut, s.cfg.Liveness)
	if nm == nil {
		return
	}
	if _, err := s.propose(0, command.SetClusterMap{Map: *nm}); err != nil {
		s.log.Debug("propose liveness map", "err", err)
		return
	}
	for _, t := range ts {
		s.log.Info("node state changed", "node", t.Node, "from", t.From, "to", t.To, "reason", t.Reason, "epoch", nm.Epoch)
		if t.From == t.To {
			continue
		}
		s.audit(meta.SystemPrincipal(), "node."+string(t.To), string(t.Node), t.Reason, nil)
	}
}

// audit records one entry in the audit log: outcome ok, or refused with the cause
// (and the operator's reason). Failures are logged (the action itself already happened
// or was refused).
func (s *Server) audit(p meta.Principal, action, target, reason string, cause error) {
	e := meta.AuditEntry{Principal: p.Name, Role: p.Role, Action: action, Target: target, Reason: reason, Outcome: meta.AuditOK}
	if cause != nil {
		e.Outcome, e.Reason = meta.AuditRefused, cause.Error()
		if reason != "" {
			e.Reason += " (given reason: " + reason + ")"
		}
	}
	_, err := s.propose(0, command.RecordAudit{Entry: e})
	if err != nil {
		s.log.Warn("record audit entry", "action", action, "target", target, "err", err)
	}
}

// NodeAction implements meta.ClusterAdmin. Every request that reaches the leader is
// audited, refusals included.
func (s *Server) NodeAction(ctx context.Context, req meta.NodeActionRequest) (placement.Map, error) {
	if err := s.leaderWrite(); err != nil {
		return placement.Map{}, err
	}
	p := meta.PrincipalFrom(ctx)
	if p.Role != meta.RoleAdmin && p.Role != meta.RoleSystem {
		err := fmt.Errorf("%w: %s may not change the cluster's nodes (admin only)", meta.ErrDenied, p)
		s.audit(p, "node."+req.Action, string(req.Node), req.Reason, err)
		return placement.Map{}, fmt.Errorf("server: node action: %w", err)
	}
	if err := s.gateNodeAction(ctx, req); err != nil {
		return placement.Map{}, err
	}
	var m placement.Map
	var err error
	action, target := "node."+req.Action, string(req.Node)
	switch req.Action {
	case meta.RebalanceApply, meta.RebalanceCancel:
		action = "rebalance." + strings.TrimPrefix(req.Action, "rebalance-")
		var ids []placement.NodeID
		m, ids, err = s.rebalance(ctx, req.Action)
		var strs []string
		for _, id := range ids {
			strs = append(strs, string(id))
		}
		target = strings.Join(strs, ",")
	case meta.NodeAdd:
		m, err = s.addNode(ctx, req)
	default:
		m, err = s.nodeAction(ctx, req)
	}
	s.audit(p, action, target, req.Reason, err)
	return m, err
}

// rebalance activates every joining node (apply), or returns the nodes of the last
// successful apply that are still active to joining (cancel), in one map change.
func (s *Server) rebalance(ctx context.Context, action string) (placement.Map, []placement.NodeID, error) {
	cur, ok, err := s.fsm.ClusterMap()
	if err != nil {
		return placement.Map{}, nil, err
	}
	if !ok {
		return placement.Map{}, nil, fmt.Errorf("server: rebalance: no cluster map: %w", meta.ErrNotFound)
	}
	now := s.fsm.Now().UnixNano()
	var nm *placement.Map
	var ids []placement.NodeID
	if action == meta.RebalanceApply {
		nm, ids = cur.ActivateJoining(now)
		if nm == nil {
			return placement.Map{}, nil, fmt.Errorf("%w: server: rebalance: no joining node to bring in (epoch %d)", meta.ErrInvalid, cur.Epoch)
		}
	} else {
		log, err := s.fsm.AuditLog(0, 0)
		if err != nil {
			return placement.Map{}, nil, err
		}
		var last []string
		for i := len(log) - 1; i >= 0; i-- {
			if log[i].Action == "rebalance.apply" && log[i].Outcome == meta.AuditOK {
				last = strings.Split(log[i].Target, ",")
				break
			}
		}
		c := cur.Clone()
		for i := range c.Nodes {
			if slices.Contains(last, string(c.Nodes[i].ID)) && c.Nodes[i].State == placement.StateActive {
				c.Nodes[i].State, c.Nodes[i].Since = placement.StateJoining, now
				ids = append(ids, c.Nodes[i].ID)
			}
		}
		if len(ids) == 0 {
			return placement.Map{}, nil, fmt.Errorf("%w: server: rebalance: nothing to cancel (no node of the last apply is still active)", meta.ErrInvalid)
		}
		c.Epoch++
		nm = c
	}
	res, err := s.propose(timeoutOf(ctx), command.SetClusterMap{Map: *nm})
	if err != nil {
		return placement.Map{}, nil, err
	}
	return res.(placement.Map), ids, nil
}

// addNode puts a running chunk node that the failure detector sees alive, and that is
// not in the map, in the map as joining.
func (s *Server) addNode(ctx context.Context, req meta.NodeActionRequest) (placement.Map, error) {
	cur, ok, err := s.fsm.ClusterMap()
	if err != nil {
		return placement.Map{}, err
	}
	if !ok {
		return placement.Map{}, fmt.Errorf("server: add node %s: no cluster map: %w", req.Node, meta.ErrNotFound)
	}
	if nd, ok := cur.Node(req.Node); ok {
		return placement.Map{}, fmt.Errorf("%w: server: node %s is already in the cluster map (epoch %d) as %s", meta.ErrExists, req.Node, cur.Epoch, nd.State)
	}
	var cand placement.Node
	if s.cfg.Candidate != nil {
		cand, ok = s.cfg.Candidate(req.Node)
	}
	if s.cfg.Candidate == nil || !ok {
		return placement.Map{}, fmt.Errorf("server: node %q: %w: no running chunk node of that name is known to the cluster (start it with a node.yaml whose join list reaches this cluster, and check \"coffer admin nodes\" lists it as pending)",
			req.Node, meta.ErrNotFound)
	}
	cand.Weight = req.Weight
	nm, err := cur.AddNode(cand, s.fsm.Now())
	if err != nil {
		return placement.Map{}, fmt.Errorf("%w: server: %v", meta.ErrInvalid, err)
	}
	res, err := s.propose(timeoutOf(ctx), command.SetClusterMap{Map: *nm})
	if err != nil {
		return placement.Map{}, err
	}
	return res.(placement.Map), nil
}

func (s *Server) nodeAction(ctx context.Context, req meta.NodeActionRequest) (placement.Map, error) {
	var to placement.State
	switch req.Action {
	case meta.NodeDrain:
		to = placement.StateDraining
	case meta.NodeUndrain, meta.NodeActivate:
		to = placement.StateActive
	case meta.NodeDecommission:
		to = placement.StateDecommissioned
	default:
		return placement.Map{}, fmt.Errorf("%w: server: unknown node action %q (want add, drain, undrain, activate or decommission)", meta.ErrInvalid, req.Action)
	}
	cur, ok, err := s.fsm.ClusterMap()
	if err != nil {
		return placement.Map{}, err
	}
	if !ok {
		return placement.Map{}, fmt.Errorf("server: node %s: no cluster map: %w", req.Node, meta.ErrNotFound)
	}
	if _, ok := cur.Node(req.Node); !ok {
		return placement.Map{}, fmt.Errorf("server: node %q is not in the cluster map: %w", req.Node, meta.ErrNotFound)
	}
	if req.Action == meta.NodeUndrain {
		if nd, _ := cur.Node(req.Node); nd.State != placement.StateDraining {
			return placement.Map{}, fmt.Errorf("%w: server: node %s is %s, not draining", meta.ErrInvalid, req.Node, nd.State)
		}
	}
	if req.Action == meta.NodeActivate {
		if nd, _ := cur.Node(req.Node); nd.State != placement.StateJoining {
			return placement.Map{}, fmt.Errorf("%w: server: node %s is %s, not joining", meta.ErrInvalid, req.Node, nd.State)
		}
	}
	if to == placement.StateDecommissioned {
		var reports []placement.PGHealth
		if s.cfg.PGHealth != nil {
			// Partial answers are fine: a PG without a report counts as not verified.
			if reports, err = s.cfg.PGHealth(ctx); err != nil && len(reports) == 0 {
				return placement.Map{}, fmt.Errorf("%w: server: decommission %s: gather PG health: %v", meta.ErrUnavailable, req.Node, err)
			}
		}
		if err := placement.CheckDecommission(&cur, req.Node, reports); err != nil {
			return placement.Map{}, fmt.Errorf("%w: server: decommission refused: %v", meta.ErrInvalid, err)
		}
	}
	nm, _, err := cur.SetState(req.Node, to, s.fsm.Now())
	if err != nil {
		return placement.Map{}, fmt.Errorf("%w: server: %v", meta.ErrInvalid, err)
	}
	res, err := s.propose(timeoutOf(ctx), command.SetClusterMap{Map: *nm})
	if err != nil {
		return placement.Map{}, err
	}
	return res.(placement.Map), nil
}

// PGHealth implements meta.ClusterAdmin: the chunk nodes' reports, keeping for each PG
// the one placed by the newest epoch (the worst on a tie).
func (s *Server) PGHealth(ctx context.Context) ([]placement.PGHealth, error) {
	if err := s.leaderRead(); err != nil {
		return nil, err
	}
	if s.cfg.PGHealth == nil {
		return nil, nil
	}
	reps, err := s.cfg.PGHealth(ctx)
	if err != nil && len(reps) == 0 {
		return nil, fmt.Errorf("%w: server: PG health: %v", meta.ErrUnavailable, err)
	}
	best := map[uint32]placement.PGHealth{}
	for _, r := range reps {
		if o, ok := best[r.PG]; !ok || r.Epoch > o.Epoch || (r.Epoch == o.Epoch && r.MinHealthy < o.MinHealthy) {
			best[r.PG] = r
		}
	}
	out := make([]placement.PGHealth, 0, len(best))
	for _, r := range best {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b placement.PGHealth) int { return int(a.PG) - int(b.PG) })
	return out, nil
}
