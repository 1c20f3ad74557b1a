package meta

import (
	"fmt"
	"time"
)

// VaultPolicy is a vault's stored retention policy: Keep is what "forget" applies when
// given no rules of its own; Lock, when set, locks every new snapshot at commit.
type VaultPolicy struct {
	Keep Policy       `cbor:"keep" json:"keep"`
	Lock *DefaultLock `cbor:"lock,omitempty" json:"lock,omitempty"`
}

// DefaultLock locks each new snapshot in Mode for For from its commit (cluster time).
type DefaultLock struct {
	Mode LockMode      `cbor:"mode" json:"mode"`
	For  time.Duration `cbor:"for" json:"for_ns"`
}

// ValidateVaultPolicy checks a policy: non-negative rules (an empty Keep is allowed: no
// stored pruning), and a default lock with a known mode and a positive duration.
func ValidateVaultPolicy(p VaultPolicy) error {
	if !p.Keep.Empty() {
		if err := ValidatePolicy(p.Keep); err != nil {
			return err
		}
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
