package fsm

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
)

// prefixReplication + name: meta.Replication (issue 19, part 2).
const prefixReplication = "rp/"

func replicationKey(name string) string { return prefixReplication + name }

// errUnchanged: an import that would write the record as it is (not an error to callers).
var errUnchanged = errors.New("fsm: unchanged")

// Replications returns the replication jobs sorted by name (with their credentials:
// the leader's runner reads them here; clients get meta.ReplicationFor).
func (f *FSM) Replications() ([]meta.Replication, error) {
	return scanAll[meta.Replication](f, prefixReplication)
}

// Replication returns one replication job or an error wrapping meta.ErrNotFound.
func (f *FSM) Replication(name string) (meta.Replication, error) {
	var r meta.Replication
	ok, err := f.getValue(replicationKey(name), &r)
	if err == nil && !ok {
		err = fmt.Errorf("fsm: replication %s: %w", name, meta.ErrNotFound)
	}
	return r, err
}

// applyReplication executes the replication commands. Admin commands are audited,
// success or refusal; imports are audited as the system when they change something.
func (f *FSM) applyReplication(b *pebble.Batch, index uint64, body command.Body, now time.Time) (any, error) {
	sys := meta.SystemPrincipal()
	var entry meta.AuditEntry
	var v any
	var err error
	audited := true
	switch c := body.(type) {
	case command.AddReplication:
		entry = meta.AuditEntry{Principal: c.By.Name, Role: c.By.Role, Action: "replication add", Target: c.Replication.Name, Vault: c.Replication.Vault}
		v, err = f.addReplication(b, c, now)
	case command.RemoveReplication:
		entry = meta.AuditEntry{Principal: c.By.Name, Role: c.By.Role, Action: "replication remove", Target: c.Name}
		err = f.removeReplication(b, c)
	case command.RequestReplicationRun:
		entry = meta.AuditEntry{Principal: c.By.Name, Role: c.By.Role, Action: "replication run", Target: c.Name}
		v, err = f.updateReplication(b, c.By, c.Name, func(r *meta.Replication) error {
			r.RunRequested = now
			return nil
		})
	case command.ReplicationRun:
		audited = false
		v, err = f.updateReplication(b, sys, c.Run.Name, func(r *meta.Replication) error {
			return recordRun(r, c.Run, now)
		})
	case command.ImportReplicaVault:
		entry = meta.AuditEntry{Principal: sys.Name, Role: sys.Role, Action: "replication import vault", Target: c.Name, Vault: c.Vault.ID}
		v, err = f.importReplicaVault(b, c, now)
		if errors.Is(err, errUnchanged) {
			// The replica's record is already the source's: nothing written, nothing audited.
			return v, nil
		}
	case command.ImportReplicaSnapshot:
		var imp meta.ReplicaImport
		imp, err = f.importReplicaSnapshot(b, c)
		audited = err != nil || imp.Imported || imp.Strengthened
		what := "imported"
		if imp.Strengthened {
			what = "lock or hold strengthened"
		}
		entry = meta.AuditEntry{Principal: sys.Name, Role: sys.Role, Action: "replication import snapshot", Target: c.Snapshot.ID.String(), Vault: c.Snapshot.Vault,
			Reason: fmt.Sprintf("job %s: %s", c.Name, what)}
		v = imp
	default:
		return nil, fmt.Errorf("%w: unhandled replication command %T", meta.ErrInvalid, body)
	}
	if audited {
		if aerr := f.writeAudit(b, index, now, entry, err, ""); aerr != nil && err == nil {
			return nil, aerr
		}
	}
	return v, err
}

// checkNotReplica refuses commits into a replica vault (raw is its record): its
// snapshots come from its replication job only.
func (f *FSM) checkNotReplica(raw []byte) error {
	var v meta.Vault
	if err := f.codec.Unmarshal(raw, &v); err != nil {
		return fmt.Errorf("fsm: decode vault: %w", err)
	}
	if v.Replica != nil {
		return fmt.Errorf("%w: vault %s is a replica (replication job %s): its snapshots come from the source only", meta.ErrInvalid, v.ID, v.Replica.Job)
	}
	return nil
}

// readReplication reads a job through the batch.
func (f *FSM) readReplication(b *pebble.Batch, name string) (meta.Replication, error) {
	var r meta.Replication
	raw, ok, err := getCopy(b, replicationKey(name))
	if err != nil {
		return r, err
	}
	if !ok {
		return r, fmt.Errorf("replication %s: %w", name, meta.ErrNotFound)
	}
	if err := f.codec.Unmarshal(raw, &r); err != nil {
		return r, fmt.Errorf("fsm: decode replication %s: %w", name, err)
	}
	return r, nil
}

func (f *FSM) addReplication(b *pebble.Batch, c command.AddReplication, now time.Time) (meta.Replication, error) {
	if err := c.By.Authorize(meta.ActReplicate, ""); err != nil {
		return meta.Replication{}, err
	}
	r := c.Replication
	if err := meta.ValidateReplication(r); err != nil {
		return meta.Replication{}, err
	}
	if _, ok, err := getCopy(b, replicationKey(r.Name)); err != nil {
		return meta.Replication{}, err
	} else if ok {
		return meta.Replication{}, fmt.Errorf("replication %s: %w", r.Name, meta.ErrExists)
	}
	others, err := decodeAll[meta.Replication](f, b, prefixReplication)
	if err != nil {
		return meta.Replication{}, err
	}
	for _, o := range others {
		if o.Vault == r.Vault {
			return meta.Replication{}, fmt.Errorf("%w: vault %s is already replicated by job %s (one job per replica vault)", meta.ErrExists, r.Vault, o.Name)
		}
	}
	if v, err := f.readVault(b, r.Vault); err == nil && (v.Replica == nil || v.Replica.Job != r.Name) {
		return meta.Replication{}, fmt.Errorf("%w: vault %s exists on this cluster and is not a replica of job %s: a replica is a vault of its own", meta.ErrExists, r.Vault, r.Name)
	}
	r.Created, r.By, r.RunRequested, r.State = now, c.By.Name, time.Time{}, meta.ReplicationState{}
	return r, f.put(b, replicationKey(r.Name), r)
}

func (f *FSM) removeReplication(b *pebble.Batch, c command.RemoveReplication) error {
	if err := c.By.Authorize(meta.ActReplicate, ""); err != nil {
		return err
	}
	if _, err := f.readReplication(b, c.Name); err != nil {
		return err
	}
	must(b.Delete([]byte(replicationKey(c.Name)), nil))
	return nil
}

// updateReplication applies change to a job as principal by.
func (f *FSM) updateReplication(b *pebble.Batch, by meta.Principal, name string, change func(*meta.Replication) error) (meta.Replication, error) {
	if err := by.Authorize(meta.ActReplicate, ""); err != nil {
		return meta.Replication{}, err
	}
	r, err := f.readReplication(b, name)
	if err != nil {
		return r, err
	}
	if err := change(&r); err != nil {
		return meta.Replication{}, err
	}
	return r, f.put(b, replicationKey(name), r)
}

// recordRun records a run's start or end in r's state.
func recordRun(r *meta.Replication, run meta.ReplicationRun, now time.Time) error {
	if err := meta.ValidateJobID(run.Job); err != nil {
		return err
	}
	st := &r.State
	if !run.Final {
		st.LastRun, st.LastJob = now, run.Job
		return nil
	}
	switch run.Status {
	case meta.JobCompleted, meta.JobPartial, meta.JobFailed:
	default:
		return fmt.Errorf("%w: replication %s: run status %q", meta.ErrInvalid, r.Name, run.Status)
	}
	if run.Bytes < 0 || run.Chunks < 0 {
		return fmt.Errorf("%w: replication %s: negative counts", meta.ErrInvalid, r.Name)
	}
	st.LastJob, st.LastStatus, st.LastError = run.Job, run.Status, truncateJobError(run.Error)
	st.Bytes += run.Bytes
	st.Chunks += run.Chunks
	if run.Status == meta.JobCompleted {
		st.LastSuccess = now
	}
	return nil
}

// replicaVault reads the replica vault of job r through the batch: it must exist, be
// r's replica and not be deleted.
func (f *FSM) replicaVault(b *pebble.Batch, r meta.Replication) (meta.Vault, error) {
	v, err := f.readVault(b, r.Vault)
	if err != nil {
		return v, err
	}
	if v.Replica == nil || v.Replica.Job != r.Name {
		return v, fmt.Errorf("%w: vault %s is not a replica of job %s", meta.ErrDenied, v.ID, r.Name)
	}
	if v.Deleted != nil {
		return v, fmt.Errorf("%w: replica vault %s is deleted: replication stops until it is undeleted", meta.ErrInvalid, v.ID)
	}
	return v, nil
}

func (f *FSM) importReplicaVault(b *pebble.Batch, c command.ImportReplicaVault, now time.Time) (meta.Vault, error) {
	r, err := f.readReplication(b, c.Name)
	if err != nil {
		return meta.Vault{}, err
	}
	src := c.Vault
	if src.ID != r.Vault {
		return meta.Vault{}, fmt.Errorf("%w: replication %s replicates vault %s, not %s", meta.ErrDenied, r.Name, r.Vault, src.ID)
	}
	v, err := f.readVault(b, r.Vault)
	switch {
	case err == nil:
		if v.Replica == nil || v.Replica.Job != r.Name {
			return meta.Vault{}, fmt.Errorf("%w: vault %s is not a replica of job %s", meta.ErrDenied, v.ID, r.Name)
		}
		if v.Deleted != nil {
			return meta.Vault{}, fmt.Errorf("%w: replica vault %s is deleted: replication stops until it is undeleted", meta.ErrInvalid, v.ID)
		}
		before, err := f.codec.Marshal(v)
		if err != nil {
			return meta.Vault{}, fmt.Errorf("fsm: encode vault %s: %w", v.ID, err)
		}
		if src.Keys != nil {
			rev := uint64(0)
			if v.Keys != nil {
				rev = v.Keys.Revision
			}
			v.Keys = meta.MergeReplicaKeys(v.Keys, src.Keys)
			v.Keys.Revision = rev
			v.KeyWraps = nil
		} else {
			for _, w := range src.KeyWraps {
				if !slices.ContainsFunc(v.KeyWraps, func(h []byte) bool { return string(h) == string(w) }) {
					v.KeyWraps = append(v.KeyWraps, slices.Clone(w))
				}
			}
		}
		after, err := f.codec.Marshal(v)
		if err != nil {
			return meta.Vault{}, fmt.Errorf("fsm: encode vault %s: %w", v.ID, err)
		}
		if string(before) == string(after) {
			return v, errUnchanged
		}
		if v.Keys != nil {
			v.Keys.Revision++
		}
	case errors.Is(err, meta.ErrNotFound):
		m, ok, merr := f.readMap(b)
		if merr != nil {
			return meta.Vault{}, merr
		}
		if !ok {
			return meta.Vault{}, fmt.Errorf("%w: no cluster map yet", meta.ErrUnavailable)
		}
		v = meta.Vault{ID: src.ID, Created: now, Profile: m.Profile, KeyWraps: src.KeyWraps, Keys: src.Keys.Clone(), Chunker: src.Chunker,
			Replica: &meta.VaultReplica{Job: r.Name, Source: slices.Clone(r.Source)}}
		if v.Keys != nil {
			v.Keys.Revision = 0
		}
	default:
		return meta.Vault{}, err
	}
	if err := meta.ValidateVault(v); err != nil {
		return meta.Vault{}, err
	}
	return v, f.put(b, vaultKey(v.ID), v)
}

func (f *FSM) importReplicaSnapshot(b *pebble.Batch, c command.ImportReplicaSnapshot) (meta.ReplicaImport, error) {
	var imp meta.ReplicaImport
	r, err := f.readReplication(b, c.Name)
	if err != nil {
		return imp, err
	}
	s := c.Snapshot
	if s.Vault != r.Vault {
		return imp, fmt.Errorf("%w: replication %s replicates vault %s, not %s", meta.ErrDenied, r.Name, r.Vault, s.Vault)
	}
	if err := meta.ValidateSnapshot(s); err != nil {
		return imp, err
	}
	if s.Time.IsZero() {
		return imp, fmt.Errorf("%w: snapshot %s: a replicated snapshot keeps its source commit time", meta.ErrInvalid, s.ID.Str())
	}
	if s.Lock != nil && s.Lock.Mode != meta.Governance && s.Lock.Mode != meta.Compliance {
		return imp, fmt.Errorf("%w: snapshot %s: lock mode %q", meta.ErrInvalid, s.ID.Str(), s.Lock.Mode)
	}
	if _, err := f.replicaVault(b, r); err != nil {
		return imp, err
	}
	key := snapshotKey(s.Vault, s.ID)
	raw, ok, err := getCopy(b, key)
	if err != nil {
		return imp, err
	}
	if ok {
		var have meta.Snapshot
		if err := f.codec.Unmarshal(raw, &have); err != nil {
			return imp, fmt.Errorf("fsm: decode snapshot %s: %w", s.ID.Str(), err)
		}
		lock, hold := meta.StrongerLock(have.Lock, s.Lock), have.LegalHold || s.LegalHold
		if hold != have.LegalHold || (lock != nil && (have.Lock == nil || *lock != *have.Lock)) {
			have.Lock, have.LegalHold = lock, hold
			imp.Strengthened = true
			if err := f.put(b, key, have); err != nil {
				return imp, err
			}
		}
		imp.Snapshot = have
	} else {
		if !r.State.After(s) {
			return imp, fmt.Errorf("%w: snapshot %s is at or before the replication cursor and this cluster no longer has it: it was removed here and is not brought back", meta.ErrInvalid, s.ID.Str())
		}
		if err := f.checkGCEpoch(b, c.GCEpoch); err != nil {
			return imp, err
		}
		if err := f.put(b, key, s); err != nil {
			return imp, err
		}
		imp.Snapshot, imp.Imported = s, true
		r.State.Snapshots++
	}
	if r.State.After(s) {
		r.State.CursorTime, r.State.CursorID = s.Time, s.ID
	}
	return imp, f.put(b, replicationKey(r.Name), r)
}
