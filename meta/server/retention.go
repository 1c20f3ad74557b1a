package server

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
)

var _ meta.RetentionService = (*Server)(nil)

// DeleteSnapshots implements meta.RetentionService: the FSM decides (and audits) at the
// cluster time of the log entry, so a lock set concurrently is never missed.
func (s *Server) DeleteSnapshots(ctx context.Context, vault meta.VaultID, ids []meta.SnapshotID, b meta.Bypass) ([]meta.Snapshot, error) {
	if err := s.leaderWrite(); err != nil {
		return nil, err
	}
	if b.Governance && s.bypassNeeded(ctx, vault, ids, func(p meta.Principal, snap meta.Snapshot, now time.Time, b meta.Bypass) error {
		return meta.CheckDelete(p, snap, now, b)
	}, b) {
		args := apDeleteSnapshotsArgs{Vault: vault, IDs: ids, Bypass: b}
		if err := s.gate(ctx, meta.OpGovernanceBypass, apDeleteSnapshots, args, vault, fmt.Sprintf("delete %d snapshot(s) bypassing governance: %s", len(ids), b.Reason)); err != nil {
			return nil, err
		}
	}
	res, err := s.propose(timeoutOf(ctx), command.DeleteSnapshots{Vault: vault, IDs: ids, By: meta.PrincipalFrom(ctx), Bypass: b, Action: "delete"})
	if err != nil {
		return nil, err
	}
	return res.([]meta.Snapshot), nil
}

// Forget implements meta.RetentionService.
// An empty policy means the vault's stored one (meta.Vault.Retention).
func (s *Server) Forget(ctx context.Context, vault meta.VaultID, policy meta.Policy, dryRun bool) (meta.ForgetResult, error) {
	if err := s.leaderRead(); err != nil {
		return meta.ForgetResult{}, err
	}
	if policy.Empty() {
		if v, err := s.fsm.Vault(vault); err == nil && v.Retention != nil {
			policy = v.Retention.Keep
		}
	}
	if err := meta.ValidatePolicy(policy); err != nil {
		return meta.ForgetResult{}, fmt.Errorf("server: forget (no rules given and none stored for vault %s): %w", vault, err)
	}
	p := meta.PrincipalFrom(ctx)
	act := meta.ActDelete
	if dryRun {
		act = meta.ActRead
	}
	if err := p.Authorize(act, vault); err != nil {
		if !dryRun {
			s.auditRefusal(ctx, p, "snapshot forget", vault, "", err)
		}
		return meta.ForgetResult{}, fmt.Errorf("server: forget: %w", err)
	}
	if _, err := s.fsm.Vault(vault); err != nil {
		return meta.ForgetResult{}, err
	}
	snaps, err := s.fsm.Snapshots(vault)
	if err != nil {
		return meta.ForgetResult{}, err
	}
	res := meta.ForgetResult{Decisions: meta.ApplyPolicy(snaps, policy, s.fsm.Now()), Removed: []meta.SnapshotID{}, DryRun: dryRun}
	var drop []meta.SnapshotID
	for _, d := range res.Decisions {
		if !d.Keep {
			drop = append(drop, d.ID)
		}
	}
	if dryRun || len(drop) == 0 {
		return res, nil
	}
	if _, err := s.propose(timeoutOf(ctx), command.DeleteSnapshots{Vault: vault, IDs: drop, By: p, Action: "forget"}); err != nil {
		return meta.ForgetResult{}, err
	}
	res.Removed = drop
	return res, nil
}

// SetLock implements meta.RetentionService.
func (s *Server) SetLock(ctx context.Context, vault meta.VaultID, id meta.SnapshotID, l meta.Lock, b meta.Bypass) (meta.Snapshot, error) {
	if err := s.leaderWrite(); err != nil {
		return meta.Snapshot{}, err
	}
	if b.Governance && s.bypassNeeded(ctx, vault, []meta.SnapshotID{id}, func(p meta.Principal, snap meta.Snapshot, now time.Time, b meta.Bypass) error {
		return meta.CheckSetLock(p, snap, l, now, b)
	}, b) {
		args := apSetLockArgs{Vault: vault, ID: id, Lock: l, Bypass: b}
		if err := s.gate(ctx, meta.OpGovernanceBypass, apSetLock, args, vault, fmt.Sprintf("lock %s until %s bypassing governance: %s", l.Mode, l.Until.UTC().Format(time.RFC3339), b.Reason)); err != nil {
			return meta.Snapshot{}, err
		}
	}
	res, err := s.propose(timeoutOf(ctx), command.SetLock{Vault: vault, ID: id, Lock: l, By: meta.PrincipalFrom(ctx), Bypass: b})
	if err != nil {
		return meta.Snapshot{}, err
	}
	return res.(meta.Snapshot), nil
}

// SetHold implements meta.RetentionService.
func (s *Server) SetHold(ctx context.Context, vault meta.VaultID, id meta.SnapshotID, hold bool, reason string) (meta.Snapshot, error) {
	if err := s.leaderWrite(); err != nil {
		return meta.Snapshot{}, err
	}
	res, err := s.propose(timeoutOf(ctx), command.SetHold{Vault: vault, ID: id, Hold: hold, By: meta.PrincipalFrom(ctx), Reason: reason})
	if err != nil {
		return meta.Snapshot{}, err
	}
	return res.(meta.Snapshot), nil
}

// AuditLog implements meta.RetentionService (a current read on the leader).
func (s *Server) AuditLog(ctx context.Context, after uint64, limit int) ([]meta.AuditEntry, error) {
	if err := s.leaderRead(); err != nil {
		return nil, err
	}
	if err := meta.PrincipalFrom(ctx).Authorize(meta.ActAudit, ""); err != nil {
		return nil, fmt.Errorf("server: audit log: %w", err)
	}
	return s.fsm.AuditLog(after, limit)
}

// auditRefusal records a refusal decided on the leader before the log. A failure to
// record is logged: the caller is refused either way.
func (s *Server) auditRefusal(ctx context.Context, p meta.Principal, action string, vault meta.VaultID, target string, cause error) {
	e := meta.AuditEntry{Principal: p.Name, Role: p.Role, Action: action, Vault: vault, Target: target, Outcome: meta.AuditRefused, Reason: cause.Error()}
	if _, err := s.propose(timeoutOf(ctx), command.RecordAudit{Entry: e}); err != nil {
		s.log.Warn("cannot record refusal in the audit log", "principal", p.Name, "action", action, "err", err)
	}
}

// authorizeCommit checks that p may commit snap: the commit permission on its vault, and
// for a snapshot committed with a lock, the lock permission and a valid lock; a legal
// hold at commit needs the hold permission.
func (s *Server) authorizeCommit(p meta.Principal, snap meta.Snapshot) error {
	if err := p.Authorize(meta.ActCommit, snap.Vault); err != nil {
		return err
	}
	if snap.Lock != nil {
		if err := p.Authorize(meta.ActLock, snap.Vault); err != nil {
			return err
		}
		if err := meta.ValidateLock(*snap.Lock, s.fsm.Now()); err != nil {
			return err
		}
	}
	if snap.LegalHold {
		return p.Authorize(meta.ActHold, snap.Vault)
	}
	return nil
}

// auditOK records an action decided on the leader (a failure to record is logged).
func (s *Server) auditOK(ctx context.Context, p meta.Principal, action string, vault meta.VaultID, target, reason string) {
	e := meta.AuditEntry{Principal: p.Name, Role: p.Role, Action: action, Vault: vault, Target: target, Outcome: meta.AuditOK, Reason: reason}
	if _, err := s.propose(timeoutOf(ctx), command.RecordAudit{Entry: e}); err != nil {
		s.log.Warn("cannot record action in the audit log", "principal", p.Name, "action", action, "err", err)
	}
}

// RecordRefusal appends a refusal decided elsewhere in the cluster (a chunk node refusing
// a shard delete or a write) to the audit log. Only nodes (and in-process callers) may.
func (s *Server) RecordRefusal(ctx context.Context, e meta.AuditEntry) error {
	return s.recordNodeAudit(ctx, e, meta.AuditRefused)
}

// RecordNodeAction appends an action a node performed at a principal's request (a
// chunk node starting a deep scrub) to the audit log, outcome ok. Only nodes (and
// in-process callers) may.
func (s *Server) RecordNodeAction(ctx context.Context, e meta.AuditEntry) error {
	return s.recordNodeAudit(ctx, e, meta.AuditOK)
}

func (s *Server) recordNodeAudit(ctx context.Context, e meta.AuditEntry, outcome string) error {
	if err := s.leaderWrite(); err != nil {
		return err
	}
	p := meta.PrincipalFrom(ctx)
	if p.Role != meta.RoleNode && p.Role != meta.RoleSystem {
		return fmt.Errorf("%w: %s may not record audit entries", meta.ErrDenied, p)
	}
	e.Outcome = outcome
	e.Reason = strings.TrimPrefix(fmt.Sprintf("%s (reported by %s)", e.Reason, p.Name), " ")
	_, err := s.propose(timeoutOf(ctx), command.RecordAudit{Entry: e})
	return err
}
