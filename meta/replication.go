package meta

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"time"
)

// Cross-cluster replication (issue 19, part 2). A replication job lives on the TARGET
// cluster: it names a vault of a SOURCE cluster, the source's meta servers and CA, and
// the job's own certificate and key on the source (role replication, scoped to the
// vault). The target's meta leader runs it on its schedule (or when asked): it copies the
// sealed chunks the target lacks, then imports the snapshot records with their locks and
// holds, and the vault's key wraps, into a replica vault of the same name. Nothing is
// ever deleted by a replication.

// ActReplicate creates, runs and removes replication jobs (admins only).
const ActReplicate = Action("replicate")

// JobReplication is the Job.Kind of a replication run; its Job.Policy is the
// replication job's name and Job.Host is ReplicationHost.
const JobReplication = "replication"

// ReplicationHost is the Job.Host of replication runs (the target's meta leader runs
// them, not an agent).
const ReplicationHost = "replication"

// Bounds of a replication job's fields.
const (
	maxReplicationSources = 16
	maxReplicationPEM     = 64 << 10
	// sealedKeyOverhead is what sealing adds to a key (XChaCha20-Poly1305's nonce and tag).
	sealedKeyOverhead = 24 + 16
)

// Replication is a replication job as the target cluster keeps it.
type Replication struct {
	Name string `cbor:"name" json:"name"`
	// Source holds the addresses (HOST:PORT) of the source cluster's meta servers.
	Source []string `cbor:"source" json:"source"`
	// SourceCA is the source cluster's root certificate (PEM): the only CA the job
	// trusts when it dials the source.
	SourceCA []byte `cbor:"source_ca" json:"-"`
	// Cert and Key are the job's replication certificate on the source (PEM, the leaf
	// first) and its private key. Key never leaves the meta servers: ReplicationFor
	// strips it (and the certificates) from what clients get. The leader seals Key
	// before it proposes the job (SealedKey), so the Raft log and state hold it only
	// sealed; Key is set in a record only by entries written before sealing (they still
	// replay) and in the job the runner gets, opened.
	Cert []byte `cbor:"cert" json:"-"`
	Key  []byte `cbor:"key" json:"-"`
	// SealedKey is Key sealed under the cluster seal key (XChaCha20-Poly1305, the job's
	// name as associated data; the nonce first), KeySeal the ID of that seal key.
	SealedKey []byte `cbor:"sealed_key,omitempty" json:"-"`
	KeySeal   string `cbor:"key_seal,omitempty" json:"-"`
	// Principal and CertNotAfter describe Cert (its common name and expiry).
	Principal    string    `cbor:"principal" json:"principal"`
	CertNotAfter time.Time `cbor:"cert_not_after" json:"cert_not_after"`
	// Vault is the vault replicated: the source's vault of that name into the target's
	// replica vault of the same name.
	Vault VaultID `cbor:"vault" json:"vault"`
	// Schedule is a cron expression (as BackupPolicy.Schedule; UTC); empty: runs only
	// when asked (coffer admin replicate run).
	Schedule string `cbor:"schedule,omitempty" json:"schedule,omitempty"`
	// LimitRate bounds the chunk bytes a run copies per second (0: no bound).
	LimitRate int64 `cbor:"limit_rate,omitempty" json:"limit_rate,omitempty"`
	// Set by the FSM: creation (cluster time), who, and the raft index of the creation.
	Created time.Time `cbor:"created" json:"created"`
	By      string    `cbor:"by" json:"by"`
	// RunRequested is the cluster time of the last `replicate run` (zero: none); the
	// leader starts a run when it is after State.LastRun.
	RunRequested time.Time `cbor:"run_requested,omitempty" json:"run_requested,omitzero"`
	// State is what the runs have done (set by the FSM from ImportSnapshot and
	// ReplicationRun entries).
	State ReplicationState `cbor:"state" json:"state"`
}

// ReplicationState is a replication job's progress.
type ReplicationState struct {
	// CursorTime and CursorID name the newest source snapshot (by commit time, then ID)
	// imported: every older source snapshot has been imported (or was absent). A source
	// snapshot at or before the cursor that the target no longer has was removed on the
	// target (its retention, an admin) and is not brought back.
	CursorTime time.Time  `cbor:"cursor_time,omitempty" json:"cursor_time,omitzero"`
	CursorID   SnapshotID `cbor:"cursor_id,omitempty" json:"-"`
	// LastRun is the cluster time the last run started; LastJob its job ID; LastStatus
	// and LastError its outcome (a job status); LastSuccess the end of the last
	// completed run.
	LastRun     time.Time `cbor:"last_run,omitempty" json:"last_run,omitzero"`
	LastJob     string    `cbor:"last_job,omitempty" json:"last_job,omitempty"`
	LastStatus  string    `cbor:"last_status,omitempty" json:"last_status,omitempty"`
	LastError   string    `cbor:"last_error,omitempty" json:"last_error,omitempty"`
	LastSuccess time.Time `cbor:"last_success,omitempty" json:"last_success,omitzero"`
	// Totals over every run: sealed chunk bytes and chunks copied, snapshots imported.
	Bytes     int64 `cbor:"bytes,omitempty" json:"bytes"`
	Chunks    int64 `cbor:"chunks,omitempty" json:"chunks"`
	Snapshots int64 `cbor:"snapshots,omitempty" json:"snapshots"`
}

// After reports whether snapshot s comes after the cursor (by time, then ID).
func (st ReplicationState) After(s Snapshot) bool {
	if c := s.Time.Compare(st.CursorTime); c != 0 {
		return c > 0
	}
	return bytes.Compare(s.ID[:], st.CursorID[:]) > 0
}

// ReplicationRun records a run's start (Start) or end (Final) in the job's state.
type ReplicationRun struct {
	Name  string    `cbor:"name"`
	Job   string    `cbor:"job"`
	Start time.Time `cbor:"start,omitempty"`
	Final bool      `cbor:"final,omitempty"`
	// Status and Error: the run's outcome (Final only; a job status).
	Status string `cbor:"status,omitempty"`
	Error  string `cbor:"error,omitempty"`
	// Bytes and Chunks the run copied (added to the totals; Final only).
	Bytes  int64 `cbor:"bytes,omitempty"`
	Chunks int64 `cbor:"chunks,omitempty"`
}

// VaultReplica marks a vault as the replica of a replication job's source vault:
// replication may write it (snapshots, locks, holds, key wraps), and it was created
// by the job.
type VaultReplica struct {
	Job    string   `cbor:"job" json:"job"`
	Source []string `cbor:"source" json:"source"`
}

// ReplicationFor returns r as a client may see it: without the source CA, the
// certificate and the key (clear or sealed).
func ReplicationFor(r Replication) Replication {
	r.SourceCA, r.Cert, r.Key, r.SealedKey, r.KeySeal = nil, nil, nil, nil, ""
	r.Source = slices.Clone(r.Source)
	return r
}

// ValidateReplication checks a job as an admin gives it (the FSM's fields ignored): a
// name, 1..16 source addresses, a source CA, certificate and key (clear, or sealed with
// its seal key's ID), a vault, a valid schedule (when given) and a non-negative rate.
func ValidateReplication(r Replication) error {
	if err := ValidatePolicyName(r.Name); err != nil {
		return fmt.Errorf("replication name: %w", err)
	}
	if len(r.Source) == 0 || len(r.Source) > maxReplicationSources {
		return fmt.Errorf("%w: replication %s: %d source addresses (1..%d)", ErrInvalid, r.Name, len(r.Source), maxReplicationSources)
	}
	for _, a := range r.Source {
		if a == "" || len(a) > 255 {
			return fmt.Errorf("%w: replication %s: source address %.40q", ErrInvalid, r.Name, a)
		}
	}
	key, keyMax := r.Key, maxReplicationPEM
	if len(r.SealedKey) > 0 {
		if len(r.Key) > 0 || r.KeySeal == "" {
			return fmt.Errorf("%w: replication %s: a sealed key comes without a clear key and with its seal key's ID", ErrInvalid, r.Name)
		}
		key, keyMax = r.SealedKey, maxReplicationPEM+sealedKeyOverhead
	}
	for _, f := range []struct {
		what string
		b    []byte
		max  int
	}{{"source CA", r.SourceCA, maxReplicationPEM}, {"certificate", r.Cert, maxReplicationPEM}, {"key", key, keyMax}} {
		if len(f.b) == 0 || len(f.b) > f.max {
			return fmt.Errorf("%w: replication %s: %s of %d bytes (1..%d)", ErrInvalid, r.Name, f.what, len(f.b), f.max)
		}
	}
	if err := ValidateAgentName(r.Principal); err != nil {
		return fmt.Errorf("replication %s: certificate name: %w", r.Name, err)
	}
	if err := ValidateVaultID(r.Vault); err != nil {
		return fmt.Errorf("replication %s: %w", r.Name, err)
	}
	if r.Schedule != "" {
		if _, err := ParseSchedule(r.Schedule); err != nil {
			return fmt.Errorf("replication %s: %w", r.Name, err)
		}
	}
	if r.LimitRate < 0 {
		return fmt.Errorf("%w: replication %s: negative rate limit", ErrInvalid, r.Name)
	}
	return nil
}

// StrongerLock returns the stronger of two locks: compliance over governance, and the
// later Until. A replica's lock is never weaker or shorter than the source's, nor than
// the one it already has.
func StrongerLock(a, b *Lock) *Lock {
	switch {
	case a == nil && b == nil:
		return nil
	case a == nil:
		c := *b
		return &c
	case b == nil:
		c := *a
		return &c
	}
	c := *a
	if b.Mode == Compliance {
		c.Mode = Compliance
	}
	if b.Until.After(c.Until) {
		c.Until = b.Until
	}
	return &c
}

// MergeReplicaKeys returns the key record of a replica after a run: the source's wraps
// replace the replica's wraps of the same ID, wraps only the replica has stay (added on
// the target, or removed on the source: a removal is not replicated, like a deletion),
// the epoch is the higher. have may be nil (a new replica).
func MergeReplicaKeys(have, src *VaultKeys) *VaultKeys {
	if src == nil {
		return have.Clone()
	}
	out := src.Clone()
	if have == nil {
		return out
	}
	for _, w := range have.Wraps {
		if _, ok := out.Wrap(w.ID); ok {
			continue
		}
		if w.Kind == WrapHost && slices.ContainsFunc(out.Wraps, func(o KeyWrap) bool { return o.Kind == WrapHost && o.Holder == w.Holder }) {
			continue
		}
		if w.Kind == WrapPlatform {
			continue
		}
		out.Wraps = append(out.Wraps, w)
	}
	out.Epoch = max(out.Epoch, have.Epoch)
	out.RotateBy = max(out.RotateBy, have.RotateBy)
	out.Revision = have.Revision
	return out
}

// ReplicationService manages replication jobs on the target cluster. meta/server
// implements it; metarpc carries it. Admin only; audited.
type ReplicationService interface {
	// AddReplication records a new job (ErrExists when the name is taken).
	AddReplication(ctx context.Context, r Replication) (Replication, error)
	// ListReplications returns the jobs sorted by name, without their credentials.
	ListReplications(ctx context.Context) ([]Replication, error)
	// RemoveReplication deletes a job; its replica vault and snapshots stay.
	RemoveReplication(ctx context.Context, name string) error
	// RunReplication asks the leader to run a job now.
	RunReplication(ctx context.Context, name string) (Replication, error)
}

// ReplicaImport is the outcome of importing one source snapshot: Imported when the
// replica did not have it, Strengthened when it had it and its lock or hold grew to
// the source's.
type ReplicaImport struct {
	Snapshot     Snapshot
	Imported     bool
	Strengthened bool
}
