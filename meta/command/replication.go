package command

import "github.com/cofferhq/coffer/meta"

// Cross-cluster replication (issue 19, part 2): tags 204..215.
const (
	TypeAddReplication        Type = 204
	TypeRemoveReplication     Type = 205
	TypeRequestReplicationRun Type = 206
	TypeReplicationRun        Type = 207
	TypeImportReplicaVault    Type = 208
	TypeImportReplicaSnapshot Type = 209
)

// AddReplication records a new replication job. The FSM sets Created, By and clears
// the state. Admin only; audited.
type AddReplication struct {
	Replication meta.Replication `cbor:"replication"`
	By          meta.Principal   `cbor:"by"`
}

// RemoveReplication deletes a replication job (its replica vault stays). Admin only;
// audited.
type RemoveReplication struct {
	Name string         `cbor:"name"`
	By   meta.Principal `cbor:"by"`
}

// RequestReplicationRun asks the leader to run a job now (sets RunRequested). Admin
// only; audited.
type RequestReplicationRun struct {
	Name string         `cbor:"name"`
	By   meta.Principal `cbor:"by"`
}

// ReplicationRun records a run's start or end in its job's state. The leader proposes
// it.
type ReplicationRun struct {
	Run meta.ReplicationRun `cbor:"run"`
}

// ImportReplicaVault creates the replica of the job's source vault (Vault: the source's
// record) or, when it exists and is the job's replica, merges the source's key wraps
// into it (meta.MergeReplicaKeys). The leader proposes it; audited as the system.
type ImportReplicaVault struct {
	Name  string     `cbor:"name"`
	Vault meta.Vault `cbor:"vault"`
}

// ImportReplicaSnapshot records a source snapshot in the job's replica vault as it is
// (commit time, lock, hold), or, when the replica has it, strengthens its lock and hold
// to the source's (never weakens them); and advances the job's cursor. The leader
// proposes it after checking that every chunk is stored, in GC epoch GCEpoch.
type ImportReplicaSnapshot struct {
	Name     string        `cbor:"name"`
	Snapshot meta.Snapshot `cbor:"snapshot"`
	GCEpoch  uint64        `cbor:"gc_epoch"`
}

// Type implements Body.
func (AddReplication) Type() Type { return TypeAddReplication }

// Type implements Body.
func (RemoveReplication) Type() Type { return TypeRemoveReplication }

// Type implements Body.
func (RequestReplicationRun) Type() Type { return TypeRequestReplicationRun }

// Type implements Body.
func (ReplicationRun) Type() Type { return TypeReplicationRun }

// Type implements Body.
func (ImportReplicaVault) Type() Type { return TypeImportReplicaVault }

// Type implements Body.
func (ImportReplicaSnapshot) Type() Type { return TypeImportReplicaSnapshot }

// replicationKind describes the replication command type t; ok is false for other tags.
func replicationKind(t Type) (kind, bool) {
	switch t {
	case TypeAddReplication:
		return kindFor[AddReplication]()
	case TypeRemoveReplication:
		return kindFor[RemoveReplication]()
	case TypeRequestReplicationRun:
		return kindFor[RequestReplicationRun]()
	case TypeReplicationRun:
		return kindFor[ReplicationRun]()
	case TypeImportReplicaVault:
		return kindFor[ImportReplicaVault]()
	case TypeImportReplicaSnapshot:
		return kindFor[ImportReplicaSnapshot]()
	}
	return kind{}, false
}
