package meta

import (
	"context"
	"fmt"
	"time"
)

// LockMode is a retention lock's mode, with S3 Object Lock semantics.
type LockMode string

// Lock modes.
const (
	// Governance: deleting or shortening before Until needs the bypass permission (admin)
	// and a reason; both are audited.
	Governance LockMode = "governance"
	// Compliance: no credential, admin included, can delete the snapshot, shorten the
	// lock or change its mode before Until. Extending is allowed.
	Compliance LockMode = "compliance"
)

// Lock is a retention lock on a snapshot.
type Lock struct {
	Mode  LockMode  `cbor:"mode" json:"mode"`
	Until time.Time `cbor:"until" json:"until"` // cluster time
}

// Active reports whether the lock binds at cluster time now.
func (l *Lock) Active(now time.Time) bool { return l != nil && now.Before(l.Until) }

// ValidateLock checks a requested lock: a known mode and an Until after now.
func ValidateLock(l Lock, now time.Time) error {
	if l.Mode != Governance && l.Mode != Compliance {
		return fmt.Errorf("%w: lock mode %q (want governance or compliance)", ErrInvalid, l.Mode)
	}
	if !l.Until.After(now) {
		return fmt.Errorf("%w: lock until %s is not after the cluster time %s", ErrInvalid, l.Until.Format(time.RFC3339), now.Format(time.RFC3339))
	}
	return nil
}

// Bypass asks to override a governance lock; Reason is mandatory with it and audited.
type Bypass struct {
	Governance bool   `cbor:"governance,omitempty" json:"governance,omitempty"`
	Reason     string `cbor:"reason,omitempty" json:"reason,omitempty"`
}

// CheckDelete decides whether p may delete snapshot s at cluster time now: nil, or an
// error wrapping ErrDenied (role) or ErrLocked (hold, lock) that says why.
func CheckDelete(p Principal, s Snapshot, now time.Time, b Bypass) error {
	if err := p.Authorize(ActDelete, s.Vault); err != nil {
		return err
	}
	if s.LegalHold {
		return fmt.Errorf("%w: snapshot %s is under legal hold", ErrLocked, s.ID.Str())
	}
	if !s.Lock.Active(now) {
		return nil
	}
	return checkGovernanceBypass(p, s, b, "delete")
}

func checkGovernanceBypass(p Principal, s Snapshot, b Bypass, what string) error {
	until := s.Lock.Until.Format(time.RFC3339)
	if s.Lock.Mode == Compliance {
		return fmt.Errorf("%w: snapshot %s is compliance-locked until %s: nobody can %s it before then", ErrLocked, s.ID.Str(), until, what)
	}
	switch {
	case !b.Governance:
		return fmt.Errorf("%w: snapshot %s is governance-locked until %s (%s needs the governance bypass and a reason)", ErrLocked, s.ID.Str(), until, what)
	case !p.Can(ActBypass, s.Vault):
		return fmt.Errorf("%w: snapshot %s is governance-locked until %s and %s may not bypass governance", ErrDenied, s.ID.Str(), until, p)
	case b.Reason == "":
		return fmt.Errorf("%w: bypassing the governance lock of snapshot %s needs a reason", ErrInvalid, s.ID.Str())
	}
	return nil
}

// CheckSetLock decides whether p may give snapshot s the lock l at cluster time now.
// Locking an unlocked (or expired) snapshot and extending a lock are allowed to anyone
// with ActLock; moving a governance lock to compliance is an extension. Shortening a
// governance lock needs the bypass; a compliance lock can be neither shortened nor moved
// to governance before it expires.
func CheckSetLock(p Principal, s Snapshot, l Lock, now time.Time, b Bypass) error {
	if err := p.Authorize(ActLock, s.Vault); err != nil {
		return err
	}
	if err := ValidateLock(l, now); err != nil {
		return err
	}
	cur := s.Lock
	if !cur.Active(now) {
		return nil
	}
	shorter := l.Until.Before(cur.Until)
	weaker := cur.Mode == Compliance && l.Mode == Governance
	if !shorter && !weaker {
		return nil
	}
	if cur.Mode == Compliance {
		what := "shorten the lock of"
		if weaker {
			what = "move to governance mode"
		}
		return fmt.Errorf("%w: snapshot %s is compliance-locked until %s: nobody can %s it before then", ErrLocked, s.ID.Str(), cur.Until.Format(time.RFC3339), what)
	}
	return checkGovernanceBypass(p, s, b, "shorten the lock of")
}

// CheckSetHold decides whether p may set or clear the legal hold of s.
func CheckSetHold(p Principal, s Snapshot) error { return p.Authorize(ActHold, s.Vault) }

// Audit outcomes.
const (
	AuditOK      = "ok"
	AuditRefused = "refused"
)

// AuditEntry is one record of the audit log: an admin action or a refused destructive
// attempt. Seq is the raft log index that recorded it.
type AuditEntry struct {
	Seq       uint64    `cbor:"seq" json:"seq"`
	Time      time.Time `cbor:"time" json:"time"` // cluster time
	Principal string    `cbor:"principal" json:"principal"`
	Role      Role      `cbor:"role" json:"role"`
	Action    string    `cbor:"action" json:"action"`
	Vault     VaultID   `cbor:"vault,omitempty" json:"vault,omitempty"`
	Target    string    `cbor:"target,omitempty" json:"target,omitempty"`
	Outcome   string    `cbor:"outcome" json:"outcome"` // AuditOK or AuditRefused
	// Reason is the operator's reason for an action, or why it was refused.
	Reason string `cbor:"reason,omitempty" json:"reason,omitempty"`
}

// ForgetResult is the outcome of applying a policy: one decision per snapshot and the
// IDs removed (none on a dry run).
type ForgetResult struct {
	Decisions []Decision   `cbor:"decisions" json:"decisions"`
	Removed   []SnapshotID `cbor:"removed" json:"removed"`
	DryRun    bool         `cbor:"dry_run" json:"dry_run"`
}

// RetentionService deletes snapshots, manages retention locks and legal holds, and
// reads the audit log. The meta server checks every call against the caller's
// principal (PrincipalFrom), the snapshots' locks and holds at cluster time; each
// destructive call and each refusal is recorded in the audit log. meta/server
// implements it; metarpc.Client carries it.
type RetentionService interface {
	// DeleteSnapshots removes the named snapshots of a vault, all or none: ErrDenied for
	// a principal without the delete permission, ErrLocked for a held or locked one
	// (governance locks give way to an admin with b.Governance and a reason).
	DeleteSnapshots(ctx context.Context, vault VaultID, ids []SnapshotID, b Bypass) ([]Snapshot, error)
	// Forget applies policy to the vault's snapshots on the leader (no vault key
	// needed); locked and held snapshots are kept. Unless dryRun, it removes the others.
	Forget(ctx context.Context, vault VaultID, policy Policy, dryRun bool) (ForgetResult, error)
	// SetLock sets or extends a snapshot's retention lock (see CheckSetLock).
	SetLock(ctx context.Context, vault VaultID, id SnapshotID, l Lock, b Bypass) (Snapshot, error)
	// SetHold sets or clears a snapshot's legal hold (admin only).
	SetHold(ctx context.Context, vault VaultID, id SnapshotID, hold bool, reason string) (Snapshot, error)
	// AuditLog returns up to limit entries after sequence number after, oldest first
	// (admin only; limit <= 0 means all).
	AuditLog(ctx context.Context, after uint64, limit int) ([]AuditEntry, error)
	// RecordRefusal appends a refusal decided outside the meta group (a chunk node
	// refusing a shard delete) to the audit log; node principals only.
	RecordRefusal(ctx context.Context, e AuditEntry) error
	// RecordNodeAction appends an action a node performed at a principal's request
	// (a chunk node starting a deep scrub for an admin) to the audit log with outcome
	// ok; node principals only.
	RecordNodeAction(ctx context.Context, e AuditEntry) error
}
