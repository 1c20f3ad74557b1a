package command

import "github.com/cofferhq/coffer/meta"

// DeleteSnapshots removes snapshots of one vault, all or none: the FSM checks By's
// permission, legal holds and retention locks (meta.CheckDelete) at the cluster time of
// the entry and refuses the whole command if any snapshot may not go. Action names the
// path for the audit log ("delete", "forget"). Success and refusal are both audited.
type DeleteSnapshots struct {
	Vault  meta.VaultID      `cbor:"vault"`
	IDs    []meta.SnapshotID `cbor:"ids"`
	By     meta.Principal    `cbor:"by"`
	Bypass meta.Bypass       `cbor:"bypass"`
	Action string            `cbor:"action"`
}

// SetLock sets or extends a snapshot's retention lock as meta.CheckSetLock allows.
type SetLock struct {
	Vault  meta.VaultID    `cbor:"vault"`
	ID     meta.SnapshotID `cbor:"id"`
	Lock   meta.Lock       `cbor:"lock"`
	By     meta.Principal  `cbor:"by"`
	Bypass meta.Bypass     `cbor:"bypass"`
}

// SetHold sets (Hold) or clears a snapshot's legal hold; admin only.
type SetHold struct {
	Vault  meta.VaultID    `cbor:"vault"`
	ID     meta.SnapshotID `cbor:"id"`
	Hold   bool            `cbor:"hold"`
	By     meta.Principal  `cbor:"by"`
	Reason string          `cbor:"reason,omitempty"`
}

// RecordAudit appends an entry to the audit log (a refusal decided before the log, such
// as a role check on the leader). The FSM sets Seq and Time.
type RecordAudit struct {
	Entry meta.AuditEntry `cbor:"entry"`
}

// Type implements Body.
func (DeleteSnapshots) Type() Type { return TypeDeleteSnapshots }

// Type implements Body.
func (SetLock) Type() Type { return TypeSetLock }

// Type implements Body.
func (SetHold) Type() Type { return TypeSetHold }

// Type implements Body.
func (RecordAudit) Type() Type { return TypeRecordAudit }

// DeleteVault soft-deletes a vault for Window (see meta.CheckDeleteVault).
type DeleteVault struct {
	Vault  meta.VaultID   `cbor:"vault"`
	Window int64          `cbor:"window"` // nanoseconds, > 0
	By     meta.Principal `cbor:"by"`
	Reason string         `cbor:"reason,omitempty"`
}

// UndeleteVault recovers a soft-deleted vault within its window.
type UndeleteVault struct {
	Vault meta.VaultID   `cbor:"vault"`
	By    meta.Principal `cbor:"by"`
}

// PurgeVault destroys a soft-deleted vault whose window has ended (see
// meta.CheckPurgeVault): its key wrappings and snapshot records go; GC reclaims chunks.
type PurgeVault struct {
	Vault meta.VaultID `cbor:"vault"`
}

// Type implements Body.
func (DeleteVault) Type() Type { return TypeDeleteVault }

// Type implements Body.
func (UndeleteVault) Type() Type { return TypeUndeleteVault }

// Type implements Body.
func (PurgeVault) Type() Type { return TypePurgeVault }

// SetVaultPolicy replaces a vault's retention policy (admin only; audited).
type SetVaultPolicy struct {
	Vault  meta.VaultID     `cbor:"vault"`
	Policy meta.VaultPolicy `cbor:"policy"`
	By     meta.Principal   `cbor:"by"`
}

// Type implements Body.
func (SetVaultPolicy) Type() Type { return TypeSetVaultPolicy }
