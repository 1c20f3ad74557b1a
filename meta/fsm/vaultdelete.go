package fsm

import (
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
)

// checkNotDeleted refuses new snapshots in a soft-deleted vault (raw is its record).
func (f *FSM) checkNotDeleted(raw []byte) error {
	var v meta.Vault
	if err := f.codec.Unmarshal(raw, &v); err != nil {
		return fmt.Errorf("fsm: decode vault: %w", err)
	}
	if v.Deleted != nil {
		return fmt.Errorf("%w: vault %s is deleted (recoverable with \"coffer vault undelete\" until %s)", meta.ErrInvalid, v.ID, v.Deleted.RecoverUntil.Format(time.RFC3339))
	}
	return nil
}

// vaultAndSnapshots reads a vault and its snapshots through the batch.
func (f *FSM) vaultAndSnapshots(b *pebble.Batch, id meta.VaultID) (meta.Vault, []meta.Snapshot, error) {
	var v meta.Vault
	raw, ok, err := getCopy(b, vaultKey(id))
	if err != nil {
		return v, nil, err
	}
	if !ok {
		return v, nil, fmt.Errorf("vault %s: %w", id, meta.ErrNotFound)
	}
	if err := f.codec.Unmarshal(raw, &v); err != nil {
		return v, nil, fmt.Errorf("fsm: decode vault %s: %w", id, err)
	}
	snaps, err := decodeAll[meta.Snapshot](f, b, snapshotPrefix(id))
	if err != nil {
		return v, nil, err
	}
	return v, snaps, nil
}

func (f *FSM) deleteVault(b *pebble.Batch, c command.DeleteVault, now time.Time) (meta.Vault, error) {
	if c.Window <= 0 {
		return meta.Vault{}, fmt.Errorf("%w: recovery window %v must be positive", meta.ErrInvalid, time.Duration(c.Window))
	}
	if err := c.By.Authorize(meta.ActDelete, c.Vault); err != nil {
		return meta.Vault{}, err
	}
	v, snaps, err := f.vaultAndSnapshots(b, c.Vault)
	if err != nil {
		return meta.Vault{}, err
	}
	if err := meta.CheckDeleteVault(c.By, v, snaps, now); err != nil {
		return meta.Vault{}, err
	}
	v.Deleted = &meta.VaultDeletion{At: now, RecoverUntil: now.Add(time.Duration(c.Window)), By: c.By.Name, Reason: c.Reason}
	return v, f.put(b, vaultKey(v.ID), v)
}

func (f *FSM) undeleteVault(b *pebble.Batch, c command.UndeleteVault, now time.Time) (meta.Vault, error) {
	if err := c.By.Authorize(meta.ActDelete, c.Vault); err != nil {
		return meta.Vault{}, err
	}
	v, _, err := f.vaultAndSnapshots(b, c.Vault)
	if err != nil {
		return meta.Vault{}, err
	}
	if v.Deleted == nil {
		return meta.Vault{}, fmt.Errorf("%w: vault %s is not deleted", meta.ErrInvalid, v.ID)
	}
	if !now.Before(v.Deleted.RecoverUntil) {
		return meta.Vault{}, fmt.Errorf("%w: vault %s: the recovery window ended at %s", meta.ErrInvalid, v.ID, v.Deleted.RecoverUntil.Format(time.RFC3339))
	}
	v.Deleted = nil
	return v, f.put(b, vaultKey(v.ID), v)
}

// purgeVault destroys the vault record with its key wrappings (crypto-erase: without
// them no agent can derive the keys) and its snapshot records. Chunks are left to GC.
func (f *FSM) purgeVault(b *pebble.Batch, c command.PurgeVault, now time.Time) (meta.Vault, error) {
	v, snaps, err := f.vaultAndSnapshots(b, c.Vault)
	if err != nil {
		return meta.Vault{}, err
	}
	if err := meta.CheckPurgeVault(v, snaps, now); err != nil {
		return meta.Vault{}, err
	}
	for _, s := range snaps {
		must(b.Delete([]byte(snapshotKey(v.ID, s.ID)), nil))
	}
	must(b.Delete([]byte(vaultKey(v.ID)), nil))
	v.KeyWraps = nil
	v.Keys = nil
	return v, nil
}

// PurgeDue returns the soft-deleted vaults whose recovery window has ended by the
// cluster clock and that hold no locked or held snapshot: the leader proposes their purge.
func (f *FSM) PurgeDue() ([]meta.VaultID, error) {
	vs, err := f.Vaults()
	if err != nil {
		return nil, err
	}
	now := f.Now()
	var out []meta.VaultID
	for _, v := range vs {
		if v.Deleted == nil || now.Before(v.Deleted.RecoverUntil) {
			continue
		}
		snaps, err := f.Snapshots(v.ID)
		if err != nil {
			return nil, err
		}
		if meta.CheckPurgeVault(v, snaps, now) == nil {
			out = append(out, v.ID)
		}
	}
	return out, nil
}

// withDefaultLock checks the lock a new snapshot comes with against the agent lock limit
// of the vault (raw record) when by (nil: the meta servers) asked for it, then applies
// the vault's default lock.
func (f *FSM) withDefaultLock(raw []byte, s meta.Snapshot, by *meta.Principal, now time.Time) (meta.Snapshot, error) {
	var v meta.Vault
	if err := f.codec.Unmarshal(raw, &v); err != nil {
		return s, fmt.Errorf("fsm: decode vault: %w", err)
	}
	if s.Lock != nil && by != nil {
		if err := meta.CheckAgentLockLimit(*by, v.ID, *s.Lock, now, v.Retention); err != nil {
			return s, err
		}
	}
	return meta.ApplyDefaultLock(s, v.Retention, now), nil
}

// vaultPolicy returns the stored policy of vault (nil when none is), or ErrNotFound.
func (f *FSM) vaultPolicy(b *pebble.Batch, id meta.VaultID) (*meta.VaultPolicy, error) {
	raw, ok, err := getCopy(b, vaultKey(id))
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("vault %s: %w", id, meta.ErrNotFound)
	}
	var v meta.Vault
	if err := f.codec.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("fsm: decode vault %s: %w", id, err)
	}
	return v.Retention, nil
}

func (f *FSM) setVaultPolicy(b *pebble.Batch, c command.SetVaultPolicy) (meta.Vault, error) {
	if err := c.By.Authorize(meta.ActPolicy, c.Vault); err != nil {
		return meta.Vault{}, err
	}
	if err := meta.ValidateVaultPolicy(c.Policy); err != nil {
		return meta.Vault{}, err
	}
	v, _, err := f.vaultAndSnapshots(b, c.Vault)
	if err != nil {
		return meta.Vault{}, err
	}
	p := c.Policy
	v.Retention = &p
	if p.Empty() {
		v.Retention = nil
	}
	return v, f.put(b, vaultKey(v.ID), v)
}
