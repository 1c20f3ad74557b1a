package fsm

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
)

// applyRetention applies the retention commands: every outcome, success or refusal, is
// written to the audit log under the entry's index, so that refusals are in Raft too.
func (f *FSM) applyRetention(b *pebble.Batch, index uint64, body command.Body, now time.Time) (any, error) {
	var (
		entry meta.AuditEntry
		v     any
		err   error
	)
	switch c := body.(type) {
	case command.RecordAudit:
		entry = c.Entry
		entry.Seq, entry.Time = index, now
		return entry, f.put(b, auditKey(index), entry)
	case command.DeleteSnapshots:
		entry = meta.AuditEntry{Principal: c.By.Name, Role: c.By.Role, Action: "snapshot " + c.Action, Vault: c.Vault,
			Target: idList(c.IDs), Reason: c.Bypass.Reason}
		if c.Bypass.Governance {
			entry.Action += " (governance bypass)"
		}
		v, err = f.deleteSnapshots(b, c, now)
	case command.SetLock:
		entry = meta.AuditEntry{Principal: c.By.Name, Role: c.By.Role, Action: fmt.Sprintf("lock %s until %s", c.Lock.Mode, c.Lock.Until.UTC().Format(time.RFC3339)),
			Vault: c.Vault, Target: c.ID.String(), Reason: c.Bypass.Reason}
		v, err = f.mutateSnapshot(b, c.Vault, c.ID, func(s *meta.Snapshot) error {
			if err := meta.CheckSetLock(c.By, *s, c.Lock, now, c.Bypass); err != nil {
				return err
			}
			pol, err := f.vaultPolicy(b, c.Vault)
			if err != nil {
				return err
			}
			if err := meta.CheckAgentLockLimit(c.By, c.Vault, c.Lock, now, pol); err != nil {
				return err
			}
			l := c.Lock
			l.Until = l.Until.UTC()
			s.Lock = &l
			return nil
		})
	case command.SetHold:
		entry = meta.AuditEntry{Principal: c.By.Name, Role: c.By.Role, Action: "hold clear", Vault: c.Vault, Target: c.ID.String(), Reason: c.Reason}
		if c.Hold {
			entry.Action = "hold set"
		}
		v, err = f.mutateSnapshot(b, c.Vault, c.ID, func(s *meta.Snapshot) error {
			if err := meta.CheckSetHold(c.By, *s); err != nil {
				return err
			}
			s.LegalHold = c.Hold
			return nil
		})
	case command.DeleteVault:
		entry = meta.AuditEntry{Principal: c.By.Name, Role: c.By.Role, Action: "vault delete", Vault: c.Vault, Reason: c.Reason}
		v, err = f.deleteVault(b, c, now)
	case command.UndeleteVault:
		entry = meta.AuditEntry{Principal: c.By.Name, Role: c.By.Role, Action: "vault undelete", Vault: c.Vault}
		v, err = f.undeleteVault(b, c, now)
	case command.SetVaultPolicy:
		entry = meta.AuditEntry{Principal: c.By.Name, Role: c.By.Role, Action: "vault policy", Vault: c.Vault, Reason: fmt.Sprintf("keep %+v", c.Policy.Keep)}
		if l := c.Policy.Lock; l != nil {
			entry.Reason += fmt.Sprintf(", lock new snapshots %s for %v", l.Mode, l.For)
		}
		entry.Reason += ", agents may lock at most " + meta.FormatSpan(c.Policy.AgentLockLimit()) + " ahead"
		v, err = f.setVaultPolicy(b, c)
	case command.PurgeVault:
		sys := meta.SystemPrincipal()
		entry = meta.AuditEntry{Principal: sys.Name, Role: sys.Role, Action: "vault purge", Vault: c.Vault}
		v, err = f.purgeVault(b, c, now)
	default:
		return nil, fmt.Errorf("%w: unhandled retention command %T", meta.ErrInvalid, body)
	}
	if aerr := f.writeAudit(b, index, now, entry, err, "given reason: "); aerr != nil && err == nil {
		return nil, aerr
	}
	return v, err
}

// deleteSnapshots removes c.IDs if every one may go, else nothing.
func (f *FSM) deleteSnapshots(b *pebble.Batch, c command.DeleteSnapshots, now time.Time) ([]meta.Snapshot, error) {
	if len(c.IDs) == 0 {
		return nil, fmt.Errorf("%w: no snapshots to delete", meta.ErrInvalid)
	}
	if err := c.By.Authorize(meta.ActDelete, c.Vault); err != nil {
		return nil, err
	}
	var out []meta.Snapshot
	var errs []error
	for _, id := range c.IDs {
		var s meta.Snapshot
		raw, ok, err := getCopy(b, snapshotKey(c.Vault, id))
		if err != nil {
			return nil, err
		}
		if !ok {
			errs = append(errs, fmt.Errorf("snapshot %s in vault %s: %w", id.Str(), c.Vault, meta.ErrNotFound))
			continue
		}
		if err := f.codec.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("fsm: decode snapshot %s: %w", id.Str(), err)
		}
		if err := meta.CheckDelete(c.By, s, now, c.Bypass); err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, s)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for _, s := range out {
		must(b.Delete([]byte(snapshotKey(c.Vault, s.ID)), nil))
	}
	return out, nil
}

// mutateSnapshot reads one snapshot, lets fn change it (or refuse) and writes it back.
func (f *FSM) mutateSnapshot(b *pebble.Batch, vault meta.VaultID, id meta.SnapshotID, fn func(*meta.Snapshot) error) (meta.Snapshot, error) {
	var s meta.Snapshot
	key := snapshotKey(vault, id)
	raw, ok, err := getCopy(b, key)
	if err != nil {
		return s, err
	}
	if !ok {
		return s, fmt.Errorf("snapshot %s in vault %s: %w", id.Str(), vault, meta.ErrNotFound)
	}
	if err := f.codec.Unmarshal(raw, &s); err != nil {
		return s, fmt.Errorf("fsm: decode snapshot %s: %w", id.Str(), err)
	}
	if err := fn(&s); err != nil {
		return meta.Snapshot{}, err
	}
	return s, f.put(b, key, s)
}

func idList(ids []meta.SnapshotID) string {
	strs := make([]string, len(ids))
	for i, id := range ids {
		strs[i] = id.String()
	}
	return strings.Join(strs, ",")
}

func auditKey(index uint64) string { return fmt.Sprintf("%s%016x", prefixAudit, index) }

// AuditLog returns up to limit audit entries with Seq > after, oldest first (limit <= 0:
// all of them).
func (f *FSM) AuditLog(after uint64, limit int) ([]meta.AuditEntry, error) {
	h, err := f.acquire()
	if err != nil {
		return nil, err
	}
	defer func() { _ = h.unref() }()
	it, err := h.db.NewIter(&pebble.IterOptions{LowerBound: []byte(auditKey(after + 1)), UpperBound: prefixEnd(prefixAudit)})
	if err != nil {
		return nil, fmt.Errorf("fsm: audit log: %w", err)
	}
	var out []meta.AuditEntry
	for it.First(); it.Valid() && (limit <= 0 || len(out) < limit); it.Next() {
		val, err := it.ValueAndErr()
		var e meta.AuditEntry
		if err == nil {
			err = f.codec.Unmarshal(val, &e)
		}
		if err != nil {
			_ = it.Close()
			return nil, fmt.Errorf("fsm: audit log at %q: %w", it.Key(), err)
		}
		out = append(out, e)
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("fsm: audit log: %w", err)
	}
	return out, nil
}

// writeAudit stamps entry with the log index and cluster time and writes it in b: outcome
// ok, or refused with err's text, the entry's own reason kept after it in parentheses,
// introduced by label. A refusal is written too: that is the audit log's purpose.
func (f *FSM) writeAudit(b *pebble.Batch, index uint64, now time.Time, entry meta.AuditEntry, err error, label string) error {
	entry.Seq, entry.Time, entry.Outcome = index, now, meta.AuditOK
	if err != nil {
		entry.Outcome = meta.AuditRefused
		if entry.Reason != "" {
			entry.Reason = err.Error() + " (" + label + entry.Reason + ")"
		} else {
			entry.Reason = err.Error()
		}
	}
	return f.put(b, auditKey(index), entry)
}
