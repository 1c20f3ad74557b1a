package metarpc

import (
	"github.com/cofferhq/coffer/chunkstore/grant"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/placement"
	"github.com/cofferhq/coffer/transport"
)

// Method names.
const (
	MethodCreateVault    = "meta.CreateVault"
	MethodGetVault       = "meta.GetVault"
	MethodListVaults     = "meta.ListVaults"
	MethodCommitSnapshot = "meta.CommitSnapshot"
	MethodListSnapshots  = "meta.ListSnapshots"
	MethodGetSnapshot    = "meta.GetSnapshot"
	MethodClusterMap     = "meta.ClusterMap"
	MethodSetClusterMap  = "meta.SetClusterMap"
	MethodRaftStatus     = "meta.RaftStatus"
)

// Request bodies. Fwd marks a request a follower has already forwarded to the leader, so
// that it is never forwarded twice.
type (
	createVaultReq struct {
		Vault meta.Vault      `cbor:"vault"`
		Fwd   bool            `cbor:"fwd,omitempty"`
		As    *meta.Principal `cbor:"as,omitempty"`
	}
	getVaultReq struct {
		ID  meta.VaultID    `cbor:"id"`
		Fwd bool            `cbor:"fwd,omitempty"`
		As  *meta.Principal `cbor:"as,omitempty"`
	}
	listVaultsReq struct {
		Fwd bool            `cbor:"fwd,omitempty"`
		As  *meta.Principal `cbor:"as,omitempty"`
	}
	commitSnapshotReq struct {
		Snapshot meta.Snapshot   `cbor:"snapshot"`
		Fwd      bool            `cbor:"fwd,omitempty"`
		As       *meta.Principal `cbor:"as,omitempty"`
	}
	listSnapshotsReq struct {
		Vault meta.VaultID    `cbor:"vault"`
		Fwd   bool            `cbor:"fwd,omitempty"`
		As    *meta.Principal `cbor:"as,omitempty"`
	}
	getSnapshotReq struct {
		Vault meta.VaultID    `cbor:"vault"`
		ID    meta.SnapshotID `cbor:"id"`
		Fwd   bool            `cbor:"fwd,omitempty"`
		As    *meta.Principal `cbor:"as,omitempty"`
	}
	clusterMapReq struct {
		Fwd bool            `cbor:"fwd,omitempty"`
		As  *meta.Principal `cbor:"as,omitempty"`
	}
	setClusterMapReq struct {
		Map placement.Map   `cbor:"map"`
		Fwd bool            `cbor:"fwd,omitempty"`
		As  *meta.Principal `cbor:"as,omitempty"`
	}
	// raftStatusReq asks for a server's Raft view. Local asks for the answering server's
	// own view (its applied index, for the leader's catch-up and reachability probes);
	// otherwise a follower asks the leader, whose view includes every server's
	// reachability.
	raftStatusReq struct {
		Local bool `cbor:"local,omitempty"`
		Fwd   bool `cbor:"fwd,omitempty"`
	}
	empty     struct{}
	vaultList struct {
		Vaults []meta.Vault `cbor:"vaults"`
	}
	snapshotList struct {
		Snapshots []meta.Snapshot `cbor:"snapshots"`
	}
)

// Errors is the sentinel table for meta errors on the wire.
var Errors = transport.SentinelTable{
	{Err: meta.ErrMissingChunks, Code: transport.MissingChunks},
	{Err: meta.ErrNotFound, Code: transport.NotFound},
	{Err: meta.ErrExists, Code: transport.Exists},
	{Err: meta.ErrNotLeader, Code: transport.NotLeader},
	{Err: meta.ErrInvalid, Code: transport.Invalid},
	{Err: meta.ErrLocked, Code: transport.Locked},
	{Err: meta.ErrDenied, Code: transport.PermissionDenied},
	// Stored for a second admin: not done, the text names the request ID
	// (meta.ApprovalIDFrom); arrives as ErrDenied.
	{Err: meta.ErrApprovalRequired, Code: transport.PermissionDenied},
	{Err: meta.ErrUnavailable, Code: transport.Unavailable},
	// A commit that kept racing new GC epochs: retry later.
	{Err: meta.ErrGCEpoch, Code: transport.Unavailable},
}

// Retention methods (meta.RetentionService).
const (
	MethodDeleteSnapshots = "meta.DeleteSnapshots"
	MethodForget          = "meta.Forget"
	MethodSetLock         = "meta.SetLock"
	MethodSetHold         = "meta.SetHold"
	MethodAuditLog        = "meta.AuditLog"
)

type (
	deleteSnapshotsReq struct {
		Vault  meta.VaultID      `cbor:"vault"`
		IDs    []meta.SnapshotID `cbor:"ids"`
		Bypass meta.Bypass       `cbor:"bypass"`
		Fwd    bool              `cbor:"fwd,omitempty"`
		As     *meta.Principal   `cbor:"as,omitempty"`
	}
	forgetReq struct {
		Vault  meta.VaultID    `cbor:"vault"`
		Policy meta.Policy     `cbor:"policy"`
		DryRun bool            `cbor:"dry_run"`
		Fwd    bool            `cbor:"fwd,omitempty"`
		As     *meta.Principal `cbor:"as,omitempty"`
	}
	setLockReq struct {
		Vault  meta.VaultID    `cbor:"vault"`
		ID     meta.SnapshotID `cbor:"id"`
		Lock   meta.Lock       `cbor:"lock"`
		Bypass meta.Bypass     `cbor:"bypass"`
		Fwd    bool            `cbor:"fwd,omitempty"`
		As     *meta.Principal `cbor:"as,omitempty"`
	}
	setHoldReq struct {
		Vault  meta.VaultID    `cbor:"vault"`
		ID     meta.SnapshotID `cbor:"id"`
		Hold   bool            `cbor:"hold"`
		Reason string          `cbor:"reason,omitempty"`
		Fwd    bool            `cbor:"fwd,omitempty"`
		As     *meta.Principal `cbor:"as,omitempty"`
	}
	auditLogReq struct {
		After uint64          `cbor:"after"`
		Limit int             `cbor:"limit"`
		Fwd   bool            `cbor:"fwd,omitempty"`
		As    *meta.Principal `cbor:"as,omitempty"`
	}
	snapshotsResp struct {
		Snapshots []meta.Snapshot `cbor:"snapshots"`
	}
	auditResp struct {
		Entries []meta.AuditEntry `cbor:"entries"`
	}
)

// Vault methods (meta.VaultService).
const (
	MethodDeleteVault    = "meta.DeleteVault"
	MethodUndeleteVault  = "meta.UndeleteVault"
	MethodSetVaultPolicy = "meta.SetVaultPolicy"
)

type (
	deleteVaultReq struct {
		ID     meta.VaultID    `cbor:"id"`
		Window int64           `cbor:"window"`
		Reason string          `cbor:"reason,omitempty"`
		Fwd    bool            `cbor:"fwd,omitempty"`
		As     *meta.Principal `cbor:"as,omitempty"`
	}
	setVaultPolicyReq struct {
		ID     meta.VaultID     `cbor:"id"`
		Policy meta.VaultPolicy `cbor:"policy"`
		Fwd    bool             `cbor:"fwd,omitempty"`
		As     *meta.Principal  `cbor:"as,omitempty"`
	}
	undeleteVaultReq struct {
		ID  meta.VaultID    `cbor:"id"`
		Fwd bool            `cbor:"fwd,omitempty"`
		As  *meta.Principal `cbor:"as,omitempty"`
	}
)

// MethodIssueGrant carries meta.GrantService.
const MethodIssueGrant = "meta.IssueGrant"

type (
	issueGrantReq struct {
		Vault meta.VaultID    `cbor:"vault"`
		ID    meta.SnapshotID `cbor:"id"`
		TTL   int64           `cbor:"ttl"`
		Fwd   bool            `cbor:"fwd,omitempty"`
		As    *meta.Principal `cbor:"as,omitempty"`
	}
	issueGrantResp struct {
		Token []byte      `cbor:"token"`
		Grant grant.Grant `cbor:"grant"`
	}
)

// MethodRecordRefusal carries meta.RetentionService.RecordRefusal.
const MethodRecordRefusal = "meta.RecordRefusal"

// MethodRecordNodeAction carries meta.RetentionService.RecordNodeAction (request:
// recordRefusalReq).
const MethodRecordNodeAction = "meta.RecordNodeAction"

type recordRefusalReq struct {
	Entry meta.AuditEntry `cbor:"entry"`
	Fwd   bool            `cbor:"fwd,omitempty"`
	As    *meta.Principal `cbor:"as,omitempty"`
}
