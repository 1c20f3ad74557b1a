// Package meta defines Coffer's replicated metadata: vaults, snapshots and the cluster map,
// and the Service contract through which agents, admins and nodes read and change them.
//
// The implementation is a hashicorp/raft group whose FSM keeps its state in Pebble
// (meta/fsm, meta/raftlog, meta/server); meta/metarpc carries Service over the transport.
// Nothing per-chunk lives here.
package meta

import (
	"context"
	"errors"
	"time"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/placement"
)

// Sentinel errors.
var (
	ErrNotFound  = errors.New("meta: not found")
	ErrExists    = errors.New("meta: already exists")
	ErrNotLeader = errors.New("meta: not the leader")
	ErrInvalid   = errors.New("meta: invalid argument")
	// ErrMissingChunks: a commit's reference list names chunks that are not stored.
	ErrMissingChunks = errors.New("meta: referenced chunks are not stored")
	ErrLocked        = errors.New("meta: locked")
	ErrDenied        = errors.New("meta: permission denied")
	ErrUnavailable   = errors.New("meta: unavailable")
	// ErrGCEpoch: a garbage collection began while a commit was being checked; the check
	// must be redone (the server does so itself).
	ErrGCEpoch = errors.New("meta: garbage-collection epoch changed during the commit check")
)

// VaultID names a vault.
type VaultID string

// Vault is the unit of tenancy. The cluster stores only the wrapped master key; it never
// sees the key itself.
type Vault struct {
	ID      VaultID           `cbor:"id" json:"id"`
	Created time.Time         `cbor:"created" json:"created"` // cluster time
	Profile placement.Profile `cbor:"profile" json:"profile"`
	// KeyWraps holds the vault master key wrapped by recovery passphrases or keys. Opaque
	// to the cluster (see client/crypt FORMAT.md).
	KeyWraps [][]byte `cbor:"key_wraps" json:"-"`
	// Keys is the vault's key record (wraps per holder, key epochs; see keys.go). Vaults
	// made before it have only KeyWraps (legacy passphrase wrappings of the master key)
	// until an admin converts them; a vault with Keys has no KeyWraps.
	Keys *VaultKeys `cbor:"keys,omitempty" json:"-"`
	// Chunker names the chunking algorithm and parameters, part of the vault's format.
	Chunker string `cbor:"chunker" json:"chunker"`
	// Deleted is set while the vault is soft-deleted (nil otherwise): it takes no new
	// snapshots and is purged (key wrappings and snapshots destroyed) once the recovery
	// window ends, unless undeleted first.
	Deleted *VaultDeletion `cbor:"deleted,omitempty" json:"deleted,omitempty"`
	// Retention is the vault's retention policy (nil: none), set by an admin.
	Retention *VaultPolicy `cbor:"retention,omitempty" json:"retention,omitempty"`
	// Replica is set on a vault a replication job created on this (the target) cluster
	// (issue 19); nil for every other vault.
	Replica *VaultReplica `cbor:"replica,omitempty" json:"replica,omitempty"`
}

// VaultDeletion records a soft delete.
type VaultDeletion struct {
	At           time.Time `cbor:"at" json:"at"`                       // cluster time of the delete
	RecoverUntil time.Time `cbor:"recover_until" json:"recover_until"` // cluster time the window ends
	By           string    `cbor:"by" json:"by"`
	Reason       string    `cbor:"reason,omitempty" json:"reason,omitempty"`
}

// SnapshotID is a 32-byte random snapshot identifier chosen by the agent.
type SnapshotID = chunk.ID

// SnapshotStats are the agent-reported figures of one backup.
type SnapshotStats struct {
	FilesNew        int64   `cbor:"files_new" json:"files_new"`
	FilesChanged    int64   `cbor:"files_changed" json:"files_changed"`
	FilesUnmodified int64   `cbor:"files_unmodified" json:"files_unmodified"`
	DirsTotal       int64   `cbor:"dirs" json:"dirs"`
	BytesProcessed  int64   `cbor:"bytes_processed" json:"bytes_processed"`
	BytesAdded      int64   `cbor:"bytes_added" json:"bytes_added"`
	ChunksAdded     int64   `cbor:"chunks_added" json:"chunks_added"`
	DurationS       float64 `cbor:"duration_s" json:"duration_s"`
	Status          string  `cbor:"status" json:"status"` // "completed" or "partially failed"
	Skipped         int64   `cbor:"skipped" json:"skipped"`
}

// Snapshot is one committed backup. Immutable once committed.
type Snapshot struct {
	ID     SnapshotID  `cbor:"id" json:"id"`
	Vault  VaultID     `cbor:"vault" json:"vault"`
	Time   time.Time   `cbor:"time" json:"time"`   // cluster time of commit (set by the leader)
	Start  time.Time   `cbor:"start" json:"start"` // agent's clock when the backup began
	Host   string      `cbor:"host" json:"host"`
	Paths  []string    `cbor:"paths" json:"paths"`
	Tags   []string    `cbor:"tags" json:"tags,omitempty"`
	Parent *SnapshotID `cbor:"parent,omitempty" json:"parent,omitempty"`
	// Tree is the encrypted root tree chunk.
	Tree chunk.ID `cbor:"tree" json:"tree"`
	// Refs are the key-less chunks holding the snapshot's sorted reference list (every
	// chunk ID the snapshot needs, trees included; see client/FORMAT.md). The leader
	// reads them to check that every referenced chunk is stored before committing.
	Refs  []chunk.ID    `cbor:"refs" json:"refs"`
	Stats SnapshotStats `cbor:"stats" json:"stats"`
	// Lock is the retention lock (nil: none), the only part of a committed snapshot that
	// changes, and only as CheckSetLock allows.
	Lock *Lock `cbor:"lock,omitempty" json:"lock,omitempty"`
	// LegalHold blocks deletion until an admin clears it.
	LegalHold bool `cbor:"legal_hold,omitempty" json:"legal_hold,omitempty"`
}

// Server is one meta server as Raft sees it.
type Server struct {
	ID        string `cbor:"id" json:"id"`
	Addr      string `cbor:"addr" json:"addr"`
	Voter     bool   `cbor:"voter" json:"voter"`
	Leader    bool   `cbor:"leader" json:"leader"`
	Reachable bool   `cbor:"reachable" json:"reachable"`
}

// RaftStatus is the Raft view of the meta group. Self is the server that answered: the
// leader probes every server for Reachable; a follower knows only itself and the leader
// (metarpc asks the leader on a client's behalf and falls back to the follower's view).
type RaftStatus struct {
	Self         string   `cbor:"self,omitempty" json:"self,omitempty"`
	Leader       string   `cbor:"leader" json:"leader"`
	LeaderAddr   string   `cbor:"leader_addr" json:"leader_addr"`
	Term         uint64   `cbor:"term" json:"term"`
	CommitIndex  uint64   `cbor:"commit_index" json:"commit_index"`
	AppliedIndex uint64   `cbor:"applied_index" json:"applied_index"`
	Servers      []Server `cbor:"servers" json:"servers"`
}

// Service is the metadata API. Writes go through the Raft leader (followers forward);
// reads marked "current" are linearizable (the leader verifies its leadership first).
// All methods are safe for concurrent use.
type Service interface {
	// CreateVault creates a vault; ErrExists if the ID is taken, ErrInvalid on bad input.
	CreateVault(ctx context.Context, v Vault) (Vault, error)
	// GetVault returns a vault (current read) or ErrNotFound. Principals that may not
	// see key wraps (Principal.SeesKeyWraps) get the record without them.
	GetVault(ctx context.Context, id VaultID) (Vault, error)
	// ListVaults returns the vaults the principal may read, sorted by ID (current read),
	// without key wraps for principals that may not see them.
	ListVaults(ctx context.Context) ([]Vault, error)
	// CommitSnapshot records a snapshot after checking that every chunk in its reference
	// list (and the tree) is durably stored: ErrMissingChunks otherwise, and nothing is
	// recorded. The returned snapshot carries the cluster commit time. Committing an ID
	// that exists fails with ErrExists.
	CommitSnapshot(ctx context.Context, s Snapshot) (Snapshot, error)
	// ListSnapshots returns a vault's snapshots sorted by time (current read).
	ListSnapshots(ctx context.Context, vault VaultID) ([]Snapshot, error)
	// GetSnapshot returns one snapshot or ErrNotFound (current read).
	GetSnapshot(ctx context.Context, vault VaultID, id SnapshotID) (Snapshot, error)
	// ClusterMap returns the current cluster map (current read); agents and restore
	// operators get only its entry points (MapFor).
	ClusterMap(ctx context.Context) (placement.Map, error)
	// SetClusterMap replaces the map if m.Epoch is exactly current epoch + 1, else
	// ErrInvalid. Node role only.
	SetClusterMap(ctx context.Context, m placement.Map) error
	// RaftStatus reports the meta group's Raft state as seen by the answering server.
	RaftStatus(ctx context.Context) (RaftStatus, error)
}

// NotLeaderError is returned on a follower. LeaderAddr is the leader's address, empty
// when no leader is known. It matches ErrNotLeader.
type NotLeaderError struct{ LeaderAddr string }

func (e *NotLeaderError) Error() string {
	if e.LeaderAddr == "" {
		return "meta: not the leader (no leader known)"
	}
	return "meta: not the leader (leader at " + e.LeaderAddr + ")"
}

// Is reports whether target is ErrNotLeader.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }
