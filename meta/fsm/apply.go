package fsm

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
	"github.com/hashicorp/raft"
)

// Result is what Apply returns for each log entry (through raft's ApplyFuture.Response).
// Exactly one of Value and Err is meaningful: Value is the recorded meta.Vault,
// meta.Snapshot or placement.Map (nil for a Tick); Err is a refusal (wrapping
// meta.ErrExists, meta.ErrNotFound, meta.ErrInvalid or command.ErrDecode) that left the
// state unchanged. Refusals are results: they do not fail the log.
type Result struct {
	Value any
	Err   error
}

// Apply applies one log entry; see ApplyBatch.
func (f *FSM) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies log entries in order and returns one Result per entry (nil for
// entries that carry no command or were applied before a restart). All state changes and
// the new applied index and clock are committed in one synced Pebble batch; later entries
// see the effects of earlier ones.
//
// After a batch that purged a vault, the state is rewritten into a fresh Pebble directory
// and the old one removed (see rewrite), so that no file of the FSM still holds the
// purged vault's key wrappings; then Options.OnPurge is called.
//
// NB: a failure to commit the batch panics. The FSM cannot report it to Raft, and
// continuing would let this replica diverge from the others; on restart it replays from
// its last durable applied index.
func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	out, purged := f.applyBatch(logs)
	if purged != 0 {
		if err := f.rewrite(); err != nil {
			// The state is intact (rewrite changes nothing on failure); only the purged
			// bytes may linger in the old files until the next purge or restore.
			f.opts.Logger.Error("fsm: rewrite after a purge", "index", purged, "err", err)
		}
		if f.opts.OnPurge != nil {
			f.opts.OnPurge(purged)
		}
	}
	return out
}

// applyBatch is ApplyBatch before the rewrite; it also returns the index of the last
// PurgeVault applied (0 when none).
func (f *FSM) applyBatch(logs []*raft.Log) (out []any, purged uint64) {
	out = make([]any, len(logs))
	h, err := f.acquire()
	if err != nil {
		panic(fmt.Sprintf("fsm: apply: %v", err))
	}
	defer func() { _ = h.unref() }()

	b := h.db.NewIndexedBatch()
	defer b.Close()
	applied, clock, limit := f.applied.Load(), f.clock.Load(), f.limit.Load()
	newApplied := applied
	for i, l := range logs {
		if l.Index <= applied || l.Type != raft.LogCommand {
			// Replayed after a restart (already in the state), or not a command.
			if l.Index > newApplied {
				newApplied = l.Index
			}
			continue
		}
		newApplied = l.Index
		cmd, err := f.codec.Decode(l.Data)
		if err != nil {
			out[i] = Result{Err: fmt.Errorf("fsm: log %d: %w", l.Index, err)}
			continue
		}
		// The cluster clock never goes back and runs at most 1% faster than real time (see
		// advanceClock).
		prevClock, prevLimit := clock, limit
		clock, limit = advanceClock(clock, limit, cmd)
		v, err := f.apply(b, l.Index, cmd, clock)
		if err != nil {
			// A refusal leaves the clock as it was, like the rest of the state.
			clock, limit = prevClock, prevLimit
			err = fmt.Errorf("fsm: log %d: %s: %w", l.Index, cmd.Body.Type(), err)
		} else if _, ok := cmd.Body.(command.PurgeVault); ok {
			purged = l.Index
		}
		out[i] = Result{Value: v, Err: err}
	}
	if newApplied == applied {
		return out, 0
	}
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], newApplied)
	must(b.Set([]byte(keyApplied), buf[:], nil))
	binary.BigEndian.PutUint64(buf[:], uint64(clock))
	must(b.Set([]byte(keyClock), buf[:], nil))
	binary.BigEndian.PutUint64(buf[:], uint64(limit))
	must(b.Set([]byte(keyClockLimit), buf[:], nil))
	must(b.Commit(pebble.Sync))
	f.applied.Store(newApplied)
	f.clock.Store(clock)
	f.limit.Store(limit)
	return out, purged
}

func must(err error) {
	if err != nil {
		panic(fmt.Sprintf("fsm: apply: write state: %v", err))
	}
}

// apply executes one command (log entry index) against the batch. A returned error
// means nothing was written for this command except, for the audited commands
// (retention, enrollment, a CreateVault naming its principal), the audit record of the
// refusal.
func (f *FSM) apply(b *pebble.Batch, index uint64, cmd command.Command, clock int64) (any, error) {
	now := time.Unix(0, clock).UTC()
	switch c := cmd.Body.(type) {
	case command.DeleteSnapshots, command.SetLock, command.SetHold, command.RecordAudit,
		command.DeleteVault, command.UndeleteVault, command.PurgeVault, command.SetVaultPolicy:
		return f.applyRetention(b, index, cmd.Body, now)
	case command.GCBegin, command.GCSweep, command.GCEnd:
		return f.applyGC(b, cmd.Body, now)
	case command.CreateEnrollToken, command.ConsumeEnrollToken, command.RevokeCert, command.RevokeEnrollToken:
		return f.applyEnroll(b, index, cmd.Body, now)
	case command.PutPolicy, command.DeletePolicy, command.StartJob, command.ReportJob, command.Heartbeat,
		command.ExpireJobs, command.CompactJobs:
		return f.applyJobs(b, index, cmd.Body, now)
	case command.SetVaultKeys, command.TouchKeyWrap:
		return f.applyKeys(b, index, cmd.Body, now)
	case command.ApplyRetention, command.RetentionRound, command.SetAlertSink, command.RemoveAlertSink,
		command.RaiseAlert, command.ResolveAlert, command.AlertAttempt, command.FlagJob,
		command.ApplyVaultRetention, command.CompactAlerts:
		return f.applyOps(b, index, cmd.Body, now)
	case command.CreateNodeToken, command.ConsumeNodeToken, command.RecordCert:
		return f.applyPKI(b, index, cmd.Body, now)
	case command.RequestApproval, command.DecideApproval, command.FinishApproval, command.SetApprovalPolicy, command.SetMFA, command.MFAFailure:
		return f.applyApproval(b, index, cmd.Body, now)
	case command.RetireHost, command.ReinstateHost, command.RequestHostRun, command.ExpireRetiredHost:
		return f.applyHost(b, index, cmd.Body, now)
	case command.AddReplication, command.RemoveReplication, command.RequestReplicationRun, command.ReplicationRun,
		command.ImportReplicaVault, command.ImportReplicaSnapshot:
		return f.applyReplication(b, index, cmd.Body, now)
	case command.Tick, command.TickV1:
		return nil, nil
	case command.CreateVault:
		v, err := f.createVault(b, c, now)
		if c.By != nil {
			entry := meta.AuditEntry{Principal: c.By.Name, Role: c.By.Role, Action: "vault create", Vault: c.Vault.ID}
			if aerr := f.writeAudit(b, index, now, entry, err, ""); aerr != nil && err == nil {
				return nil, aerr
			}
		}
		if err != nil {
			return nil, err
		}
		return v, nil
	case command.CommitSnapshot:
		s := c.Snapshot
		if err := meta.ValidateSnapshot(s); err != nil {
			return nil, err
		}
		if err := f.checkGCEpoch(b, c.GCEpoch); err != nil {
			return nil, err
		}
		if raw, ok, err := getCopy(b, vaultKey(s.Vault)); err != nil {
			return nil, err
		} else if !ok {
			return nil, fmt.Errorf("snapshot %s: vault %s: %w", s.ID.Str(), s.Vault, meta.ErrNotFound)
		} else if err := f.checkNotDeleted(raw); err != nil {
			return nil, err
		} else if err := f.checkNotReplica(raw); err != nil {
			return nil, err
		} else if s, err = f.withDefaultLock(raw, s, c.By, now); err != nil {
			return nil, err
		}
		key := snapshotKey(s.Vault, s.ID)
		if _, ok, err := getCopy(b, key); err != nil {
			return nil, err
		} else if ok {
			return nil, fmt.Errorf("snapshot %s in vault %s: %w", s.ID.Str(), s.Vault, meta.ErrExists)
		}
		s.Time = now
		return s, f.put(b, key, s)
	case command.SetClusterMap:
		m := c.Map
		if err := meta.ValidateMap(m); err != nil {
			return nil, err
		}
		var cur uint64
		if old, ok, err := f.readMap(b); err != nil {
			return nil, err
		} else if ok {
			cur = old.Epoch
		}
		if m.Epoch != cur+1 {
			return nil, fmt.Errorf("%w: cluster map epoch %d, want exactly %d (current %d + 1)", meta.ErrInvalid, m.Epoch, cur+1, cur)
		}
		return m, f.put(b, keyMap, m)
	}
	return nil, fmt.Errorf("%w: unhandled command %T", meta.ErrInvalid, cmd.Body)
}

// createVault records c.Vault unless its principal (when named) may not create it, it
// comes with a retention policy or a deletion, it is invalid or it exists. (A policy is
// set by SetVaultPolicy only, so that an agent cannot bring a default lock or a lock
// limit of its own; entries without a principal, from before issue 11, are applied as
// they were.)
func (f *FSM) createVault(b *pebble.Batch, c command.CreateVault, now time.Time) (meta.Vault, error) {
	v := c.Vault
	if c.By != nil {
		if err := c.By.Authorize(meta.ActCreateVault, v.ID); err != nil {
			return meta.Vault{}, err
		}
		if v.Retention != nil || v.Deleted != nil || v.Replica != nil {
			return meta.Vault{}, fmt.Errorf("%w: vault %s: a new vault carries no retention policy, deletion or replica mark (an admin sets a policy with coffer vault policy; replication jobs make replicas)", meta.ErrInvalid, v.ID)
		}
	}
	if err := meta.ValidateVault(v); err != nil {
		return meta.Vault{}, err
	}
	key := vaultKey(v.ID)
	if _, ok, err := getCopy(b, key); err != nil {
		return meta.Vault{}, err
	} else if ok {
		return meta.Vault{}, fmt.Errorf("vault %s: %w", v.ID, meta.ErrExists)
	}
	v.Created = now
	by := ""
	if c.By != nil {
		by = c.By.Name
	}
	meta.InitVaultKeys(&v, by, now)
	return v, f.put(b, key, v)
}

func (f *FSM) put(b *pebble.Batch, key string, v any) error {
	data, err := f.codec.Marshal(v)
	if err != nil {
		return fmt.Errorf("%w: encode %s: %v", meta.ErrInvalid, key, err)
	}
	must(b.Set([]byte(key), data, nil))
	return nil
}

func vaultKey(id meta.VaultID) string { return prefixVault + string(id) }

func snapshotPrefix(v meta.VaultID) string { return prefixSnapshot + string(v) + "/" }

func snapshotKey(v meta.VaultID, id chunk.ID) string { return snapshotPrefix(v) + id.String() }
