package memmeta

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cofferhq/coffer/meta"
)

var _ meta.RetentionService = (*Service)(nil)

// DeleteSnapshots removes the named snapshots, all or none (see meta.RetentionService);
// the attempt is audited with its outcome.
func (s *Service) DeleteSnapshots(ctx context.Context, vault meta.VaultID, ids []meta.SnapshotID, b meta.Bypass) ([]meta.Snapshot, error) {
	p := meta.PrincipalFrom(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	out, err := s.deleteLocked(p, vault, ids, b, "delete")
	if err != nil {
		return nil, fmt.Errorf("memmeta: delete snapshots: %w", err)
	}
	return out, nil
}

// deleteLocked is the FSM's delete: every snapshot is checked (meta.CheckDelete) before
// any is removed, and the attempt is audited as "snapshot <action>".
func (s *Service) deleteLocked(p meta.Principal, vault meta.VaultID, ids []meta.SnapshotID, b meta.Bypass, action string) ([]meta.Snapshot, error) {
	now := s.nowLocked()
	entry := meta.AuditEntry{Principal: p.Name, Role: p.Role, Action: "snapshot " + action, Vault: vault, Target: idList(ids), Reason: b.Reason}
	if b.Governance {
		entry.Action += " (governance bypass)"
	}
	out, err := func() ([]meta.Snapshot, error) {
		if len(ids) == 0 {
			return nil, fmt.Errorf("%w: no snapshots to delete", meta.ErrInvalid)
		}
		if err := p.Authorize(meta.ActDelete, vault); err != nil {
			return nil, err
		}
		var out []meta.Snapshot
		var errs []error
		for _, id := range ids {
			i := s.indexLocked(vault, id)
			if i < 0 {
				errs = append(errs, fmt.Errorf("snapshot %s in vault %s: %w", id.Str(), vault, meta.ErrNotFound))
				continue
			}
			snap := s.mu.snaps[vault][i]
			if err := meta.CheckDelete(p, snap, now, b); err != nil {
				errs = append(errs, err)
				continue
			}
			out = append(out, snap)
		}
		if len(errs) > 0 {
			return nil, errors.Join(errs...)
		}
		s.mu.snaps[vault] = slices.DeleteFunc(s.mu.snaps[vault], func(o meta.Snapshot) bool {
			return slices.ContainsFunc(out, func(d meta.Snapshot) bool { return d.ID == o.ID })
		})
		return out, nil
	}()
	s.auditLocked(now, entry, err, "given reason: ")
	return out, err
}

// Forget applies policy (empty: the vault's stored one) to the vault's snapshots, keeping
// locked and held ones, and unless dryRun removes the others (see
// meta.RetentionService).
func (s *Service) Forget(ctx context.Context, vault meta.VaultID, policy meta.Policy, dryRun bool) (meta.ForgetResult, error) {
	p := meta.PrincipalFrom(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.mu.vaults[vault]; ok && policy.Empty() && v.Retention != nil {
		policy = v.Retention.Keep
	}
	if err := meta.ValidatePolicy(policy); err != nil {
		return meta.ForgetResult{}, fmt.Errorf("memmeta: forget (no rules given and none stored for vault %s): %w", vault, err)
	}
	act := meta.ActDelete
	if dryRun {
		act = meta.ActRead
	}
	if err := p.Authorize(act, vault); err != nil {
		if !dryRun {
			s.auditLocked(s.nowLocked(), meta.AuditEntry{Principal: p.Name, Role: p.Role, Action: "snapshot forget", Vault: vault}, err, "")
		}
		return meta.ForgetResult{}, fmt.Errorf("memmeta: forget: %w", err)
	}
	if _, ok := s.mu.vaults[vault]; !ok {
		return meta.ForgetResult{}, fmt.Errorf("memmeta: vault %s: %w", vault, meta.ErrNotFound)
	}
	res := meta.ForgetResult{Decisions: meta.ApplyPolicy(slices.Clone(s.mu.snaps[vault]), policy, s.nowLocked()), Removed: []meta.SnapshotID{}, DryRun: dryRun}
	var drop []meta.SnapshotID
	for _, d := range res.Decisions {
		if !d.Keep {
			drop = append(drop, d.ID)
		}
	}
	if dryRun || len(drop) == 0 {
		return res, nil
	}
	if _, err := s.deleteLocked(p, vault, drop, meta.Bypass{}, "forget"); err != nil {
		return meta.ForgetResult{}, fmt.Errorf("memmeta: forget: %w", err)
	}
	res.Removed = drop
	return res, nil
}

// SetLock sets or extends a snapshot's lock as meta.CheckSetLock and the vault's agent
// lock limit allow; audited with its outcome.
func (s *Service) SetLock(ctx context.Context, vault meta.VaultID, id meta.SnapshotID, l meta.Lock, b meta.Bypass) (meta.Snapshot, error) {
	p := meta.PrincipalFrom(ctx)
	entry := meta.AuditEntry{Principal: p.Name, Role: p.Role, Action: fmt.Sprintf("lock %s until %s", l.Mode, l.Until.UTC().Format(time.RFC3339)),
		Vault: vault, Target: id.String(), Reason: b.Reason}
	return s.mutate(vault, id, entry, func(snap *meta.Snapshot, now time.Time) error {
		if err := meta.CheckSetLock(p, *snap, l, now, b); err != nil {
			return err
		}
		if err := meta.CheckAgentLockLimit(p, vault, l, now, s.mu.vaults[vault].Retention); err != nil {
			return err
		}
		l.Until = l.Until.UTC()
		snap.Lock = &l
		return nil
	})
}

// SetHold sets or clears a snapshot's legal hold (admins only); audited with its outcome.
func (s *Service) SetHold(ctx context.Context, vault meta.VaultID, id meta.SnapshotID, hold bool, reason string) (meta.Snapshot, error) {
	p := meta.PrincipalFrom(ctx)
	entry := meta.AuditEntry{Principal: p.Name, Role: p.Role, Action: "hold clear", Vault: vault, Target: id.String(), Reason: reason}
	if hold {
		entry.Action = "hold set"
	}
	return s.mutate(vault, id, entry, func(snap *meta.Snapshot, _ time.Time) error {
		if err := meta.CheckSetHold(p, *snap); err != nil {
			return err
		}
		snap.LegalHold = hold
		return nil
	})
}

// mutate lets fn change one snapshot (or refuse), and audits the attempt.
func (s *Service) mutate(vault meta.VaultID, id meta.SnapshotID, entry meta.AuditEntry, fn func(*meta.Snapshot, time.Time) error) (meta.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.nowLocked()
	snap, err := func() (meta.Snapshot, error) {
		i := s.indexLocked(vault, id)
		if i < 0 {
			return meta.Snapshot{}, fmt.Errorf("snapshot %s in vault %s: %w", id.Str(), vault, meta.ErrNotFound)
		}
		snap := s.mu.snaps[vault][i]
		if err := fn(&snap, now); err != nil {
			return meta.Snapshot{}, err
		}
		s.mu.snaps[vault][i] = snap
		return snap, nil
	}()
	s.auditLocked(now, entry, err, "given reason: ")
	if err != nil {
		return meta.Snapshot{}, fmt.Errorf("memmeta: %s: %w", entry.Action, err)
	}
	return snap, nil
}

// AuditLog returns up to limit entries after sequence number after, oldest first (admins
// only; limit <= 0: all). This service records vault creations, deletes, forgets, locks,
// holds and the nodes' reports.
func (s *Service) AuditLog(ctx context.Context, after uint64, limit int) ([]meta.AuditEntry, error) {
	if err := meta.PrincipalFrom(ctx).Authorize(meta.ActAudit, ""); err != nil {
		return nil, fmt.Errorf("memmeta: audit log: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []meta.AuditEntry
	for _, e := range s.mu.audit {
		if e.Seq > after && (limit <= 0 || len(out) < limit) {
			out = append(out, e)
		}
	}
	return out, nil
}

// RecordRefusal appends a refusal a node decided (node principals only).
func (s *Service) RecordRefusal(ctx context.Context, e meta.AuditEntry) error {
	return s.recordNodeAudit(ctx, e, meta.AuditRefused)
}

// RecordNodeAction appends an action a node performed (node principals only).
func (s *Service) RecordNodeAction(ctx context.Context, e meta.AuditEntry) error {
	return s.recordNodeAudit(ctx, e, meta.AuditOK)
}

func (s *Service) recordNodeAudit(ctx context.Context, e meta.AuditEntry, outcome string) error {
	p := meta.PrincipalFrom(ctx)
	if p.Role != meta.RoleNode && p.Role != meta.RoleSystem {
		return fmt.Errorf("memmeta: %w: %s may not record audit entries", meta.ErrDenied, p)
	}
	e.Reason = strings.TrimPrefix(fmt.Sprintf("%s (reported by %s)", e.Reason, p.Name), " ")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.appendAuditLocked(s.nowLocked(), e, outcome)
	return nil
}

// auditLocked records entry with the outcome err decides (the FSM's writeAudit).
func (s *Service) auditLocked(now time.Time, entry meta.AuditEntry, err error, label string) {
	outcome := meta.AuditOK
	if err != nil {
		outcome = meta.AuditRefused
		if entry.Reason != "" {
			entry.Reason = err.Error() + " (" + label + entry.Reason + ")"
		} else {
			entry.Reason = err.Error()
		}
	}
	s.appendAuditLocked(now, entry, outcome)
}

func (s *Service) appendAuditLocked(now time.Time, e meta.AuditEntry, outcome string) {
	e.Seq, e.Time, e.Outcome = uint64(len(s.mu.audit))+1, now, outcome
	s.mu.audit = append(s.mu.audit, e)
}

// indexLocked returns the position of snapshot id in vault's list, or -1.
func (s *Service) indexLocked(vault meta.VaultID, id meta.SnapshotID) int {
	return slices.IndexFunc(s.mu.snaps[vault], func(o meta.Snapshot) bool { return o.ID == id })
}

// idList names snapshots for the audit log.
func idList(ids []meta.SnapshotID) string {
	strs := make([]string, len(ids))
	for i, id := range ids {
		strs[i] = id.String()
	}
	return strings.Join(strs, ",")
}
