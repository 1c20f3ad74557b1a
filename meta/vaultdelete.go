package meta

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// DefaultRecoveryWindow is how long a soft-deleted vault can be undeleted.
const DefaultRecoveryWindow = 14 * 24 * time.Hour

// CheckDeleteVault decides whether p may soft-delete vault v with snaps (its snapshots)
// at cluster time now: the delete permission, the vault not already deleted, and no
// snapshot under legal hold or an unexpired lock (governance locks included: a vault
// delete never bypasses them).
func CheckDeleteVault(p Principal, v Vault, snaps []Snapshot, now time.Time) error {
	if err := p.Authorize(ActDelete, v.ID); err != nil {
		return err
	}
	if v.Deleted != nil {
		return fmt.Errorf("%w: vault %s is already deleted (recoverable until %s)", ErrInvalid, v.ID, v.Deleted.RecoverUntil.Format(time.RFC3339))
	}
	return checkNoProtected(v.ID, snaps, now, "delete")
}

// checkNoProtected refuses (ErrLocked) when any snapshot is held or locked at now.
func checkNoProtected(vault VaultID, snaps []Snapshot, now time.Time, what string) error {
	var held []string
	n := 0
	for _, s := range snaps {
		if s.LegalHold || s.Lock.Active(now) {
			n++
			if len(held) < 5 {
				held = append(held, s.ID.Str())
			}
		}
	}
	if n > 0 {
		return fmt.Errorf("%w: cannot %s vault %s: %d snapshots are locked or under legal hold (first: %s)", ErrLocked, what, vault, n, strings.Join(held, ", "))
	}
	return nil
}

// CheckPurgeVault decides whether a soft-deleted vault may be purged at now: its window
// has ended and no snapshot is held or locked (a hold or lock set during the window
// postpones the purge).
func CheckPurgeVault(v Vault, snaps []Snapshot, now time.Time) error {
	if v.Deleted == nil {
		return fmt.Errorf("%w: vault %s is not deleted", ErrInvalid, v.ID)
	}
	if now.Before(v.Deleted.RecoverUntil) {
		return fmt.Errorf("%w: vault %s is recoverable until %s", ErrLocked, v.ID, v.Deleted.RecoverUntil.Format(time.RFC3339))
	}
	return checkNoProtected(v.ID, snaps, now, "purge")
}

// VaultService soft-deletes and recovers vaults. meta/server implements it, metarpc
// carries it; every call is authorized by the caller's principal and audited.
type VaultService interface {
	// DeleteVault soft-deletes a vault (admin only): ErrLocked while any of its snapshots
	// is locked or held. window <= 0 means DefaultRecoveryWindow.
	DeleteVault(ctx context.Context, id VaultID, window time.Duration, reason string) (Vault, error)
	// UndeleteVault recovers a soft-deleted vault within its window (admin only).
	UndeleteVault(ctx context.Context, id VaultID) (Vault, error)
	// SetVaultPolicy replaces the vault's retention policy (admin only); an empty policy
	// clears it.
	SetVaultPolicy(ctx context.Context, id VaultID, p VaultPolicy) (Vault, error)
}
