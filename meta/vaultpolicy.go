package meta

import (
	"fmt"
	"time"
)

// DefaultMaxAgentLock is the longest retention lock a backup agent may set when its
// vault's policy names no limit (VaultPolicy.MaxAgentLock).
const DefaultMaxAgentLock = 365 * 24 * time.Hour

// VaultPolicy is a vault's stored retention policy: Keep is what "forget" applies when
// given no rules of its own; Lock, when set, locks every new snapshot at commit.
// MaxAgentLock is the longest lock a backup agent may set (zero: DefaultMaxAgentLock).
type VaultPolicy struct {
	Keep         Policy        `cbor:"keep" json:"keep"`
	Lock         *DefaultLock  `cbor:"lock,omitempty" json:"lock,omitempty"`
	MaxAgentLock time.Duration `cbor:"max_agent_lock,omitempty" json:"max_agent_lock_ns,omitempty"`
	// ApproveLockedRestore makes a restore grant on a snapshot under a compliance lock or
	// legal hold need a second admin's approval (two-person rule, meta.OpLockedRestore).
	ApproveLockedRestore bool `cbor:"approve_locked_restore,omitempty" json:"approve_locked_restore,omitempty"`
}

// Empty reports whether p stores nothing (no rules, no default lock, the default limit).
func (p VaultPolicy) Empty() bool {
	return p.Keep.Empty() && p.Lock == nil && p.MaxAgentLock == 0 && !p.ApproveLockedRestore
}

// AgentLockLimit returns the longest lock a backup agent may set in a vault with policy
// p (nil: no policy stored).
func (p *VaultPolicy) AgentLockLimit() time.Duration {
	if p == nil || p.MaxAgentLock <= 0 {
		return DefaultMaxAgentLock
	}
	return p.MaxAgentLock
}

// CheckAgentLockLimit decides whether principal p may ask for lock l at cluster time
// now in vault (policy pol, nil when none is stored): an error wrapping ErrDenied that
// names the limit when l ends more than the vault's AgentLockLimit after now. Admins
// (and the meta servers themselves) are not bound: the limit stops a compromised
// append-only agent from locking history, and every delete with it, for ever. The
// vault's default lock (VaultPolicy.Lock) is an admin's decision and not checked here.
func CheckAgentLockLimit(p Principal, vault VaultID, l Lock, now time.Time, pol *VaultPolicy) error {
	if p.Role == RoleAdmin || p.Role == RoleSystem {
		return nil
	}
	limit := pol.AgentLockLimit()
	if !l.Until.After(now.Add(limit)) {
		return nil
	}
	return fmt.Errorf("%w: %s may lock snapshots of vault %s at most %s ahead (the vault's max agent lock; an admin sets it with coffer vault policy --max-agent-lock), not until %s",
		ErrDenied, p, vault, FormatSpan(limit), l.Until.UTC().Format(time.RFC3339))
}

// FormatSpan formats a lock span in whole days ("365d") when it is one, else as
// time.Duration does.
func FormatSpan(d time.Duration) string {
	const day = 24 * time.Hour
	if d > 0 && d%day == 0 {
		return fmt.Sprintf("%dd", d/day)
	}
	return d.String()
}

// DefaultLock locks each new snapshot in Mode for For from its commit (cluster time).
type DefaultLock struct {
	Mode LockMode      `cbor:"mode" json:"mode"`
	For  time.Duration `cbor:"for" json:"for_ns"`
}

// ValidateVaultPolicy checks a policy: non-negative rules (an empty Keep is allowed: no
// stored pruning), a default lock with a known mode and a positive duration, and a
// non-negative max agent lock.
func ValidateVaultPolicy(p VaultPolicy) error {
	if !p.Keep.Empty() {
		if err := ValidatePolicy(p.Keep); err != nil {
			return err
		}
	}
	if p.MaxAgentLock < 0 {
		return fmt.Errorf("%w: max agent lock %v must not be negative (zero: the default, %s)", ErrInvalid, p.MaxAgentLock, FormatSpan(DefaultMaxAgentLock))
	}
	if l := p.Lock; l != nil {
		if l.Mode != Governance && l.Mode != Compliance {
			return fmt.Errorf("%w: default lock mode %q (want governance or compliance)", ErrInvalid, l.Mode)
		}
		if l.For <= 0 {
			return fmt.Errorf("%w: default lock duration %v must be positive", ErrInvalid, l.For)
		}
	}
	return nil
}

// ApplyDefaultLock returns s with the vault's default lock applied at commit time now:
// a snapshot committed without a lock, or with a weaker or shorter one, gets the default.
func ApplyDefaultLock(s Snapshot, p *VaultPolicy, now time.Time) Snapshot {
	if p == nil || p.Lock == nil {
		return s
	}
	def := Lock{Mode: p.Lock.Mode, Until: now.Add(p.Lock.For).UTC()}
	if s.Lock == nil {
		s.Lock = &def
		return s
	}
	l := *s.Lock
	if def.Mode == Compliance {
		l.Mode = Compliance
	}
	if def.Until.After(l.Until) {
		l.Until = def.Until
	}
	s.Lock = &l
	return s
}
