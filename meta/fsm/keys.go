package fsm

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
)

// applyKeys applies the vault key commands. SetVaultKeys writes its outcome, success or
// refusal, to the audit log (never key bytes: the wraps by ID, kind and holder).
func (f *FSM) applyKeys(b *pebble.Batch, index uint64, body command.Body, now time.Time) (any, error) {
	switch c := body.(type) {
	case command.SetVaultKeys:
		entry := meta.AuditEntry{Principal: c.By.Name, Role: c.By.Role, Action: "vault keys " + c.Change.Event,
			Vault: c.Vault, Reason: c.Change.Reason}
		v, target, err := f.setVaultKeys(b, c, now)
		entry.Target = target
		if aerr := f.writeAudit(b, index, now, entry, err, ""); aerr != nil && err == nil {
			return nil, aerr
		}
		if err != nil {
			return nil, err
		}
		return v, nil
	case command.TouchKeyWrap:
		return nil, f.touchKeyWrap(b, c, now)
	}
	return nil, fmt.Errorf("%w: unhandled key command %T", meta.ErrInvalid, body)
}

// readVault reads a vault through the batch.
func (f *FSM) readVault(b *pebble.Batch, id meta.VaultID) (meta.Vault, error) {
	var v meta.Vault
	raw, ok, err := getCopy(b, vaultKey(id))
	if err != nil {
		return v, err
	}
	if !ok {
		return v, fmt.Errorf("vault %s: %w", id, meta.ErrNotFound)
	}
	if err := f.codec.Unmarshal(raw, &v); err != nil {
		return v, fmt.Errorf("fsm: decode vault %s: %w", id, err)
	}
	return v, nil
}

// setVaultKeys replaces a vault's key record as meta.CheckKeysChange allows, if it is
// still at the revision the change was made from. It also returns the audit target: the
// epoch and the wraps added and removed.
func (f *FSM) setVaultKeys(b *pebble.Batch, c command.SetVaultKeys, now time.Time) (meta.Vault, string, error) {
	v, err := f.readVault(b, c.Vault)
	if err != nil {
		return meta.Vault{}, "", err
	}
	if v.Deleted != nil {
		return meta.Vault{}, "", fmt.Errorf("%w: vault %s is deleted; its keys change no more", meta.ErrInvalid, v.ID)
	}
	target, err := meta.ApplyKeysChange(c.By, &v, c.Change, now)
	if err != nil {
		return meta.Vault{}, target, err
	}
	return v, target, f.put(b, vaultKey(v.ID), v)
}

// touchKeyWrap sets a wrap's LastUsed to now unless it is within meta.KeyUseInterval.
func (f *FSM) touchKeyWrap(b *pebble.Batch, c command.TouchKeyWrap, now time.Time) error {
	if err := c.By.Authorize(meta.ActRead, c.Vault); err != nil {
		return err
	}
	v, err := f.readVault(b, c.Vault)
	if err != nil {
		return err
	}
	if v.Keys == nil {
		return fmt.Errorf("%w: vault %s has no key wrap %s", meta.ErrNotFound, v.ID, c.ID)
	}
	i := slices.IndexFunc(v.Keys.Wraps, func(w meta.KeyWrap) bool { return w.ID == c.ID })
	if i < 0 {
		return fmt.Errorf("%w: vault %s has no key wrap %s", meta.ErrNotFound, v.ID, c.ID)
	}
	if now.Sub(v.Keys.Wraps[i].LastUsed) < meta.KeyUseInterval {
		return nil
	}
	v.Keys.Wraps[i].LastUsed = now
	return f.put(b, vaultKey(v.ID), v)
}

// hostWrapRemovals computes what revoking r does to vault key records: every host wrap
// whose holder is the revoked principal (by name, or the principal enrolled with the
// revoked serial) goes, and a rotation becomes due. It reads only; the caller writes the
// returned vaults once the revocation is recorded.
func (f *FSM) hostWrapRemovals(b *pebble.Batch, r meta.Revocation) ([]meta.Vault, error) {
	principal := r.Principal
	if r.Serial != "" {
		tokens, err := decodeAll[meta.EnrollToken](f, b, prefixEnrollToken)
		if err != nil {
			return nil, err
		}
		for _, t := range tokens {
			if t.Used && t.Serial == r.Serial {
				principal = t.Principal
			}
		}
	}
	if principal == "" {
		return nil, nil
	}
	vaults, err := decodeAll[meta.Vault](f, b, prefixVault)
	if err != nil {
		return nil, err
	}
	var out []meta.Vault
	for _, v := range vaults {
		if v.Keys == nil {
			continue
		}
		if k, ok := meta.RemoveHostWraps(*v.Keys, principal); ok {
			k.Revision++
			v.Keys = &k
			out = append(out, v)
		}
	}
	return out, nil
}

// removeHostWraps writes the vaults hostWrapRemovals computed and returns a note for the
// revocation's audit record.
func (f *FSM) removeHostWraps(b *pebble.Batch, vaults []meta.Vault) (string, error) {
	var names []string
	for _, v := range vaults {
		if err := f.put(b, vaultKey(v.ID), v); err != nil {
			return "", err
		}
		names = append(names, fmt.Sprintf("%s (rotation to epoch %d due)", v.ID, v.Keys.RotateBy))
	}
	if len(names) == 0 {
		return "", nil
	}
	return "host key wraps removed from vault " + strings.Join(names, ", "), nil
}
