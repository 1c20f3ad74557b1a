package command

import "github.com/cofferhq/coffer/meta"

// Operations (issue 15, steps 4-7: automatic retention, alerts, anomaly flags, verify
// jobs): tags 140..159.
const (
	TypeApplyRetention  Type = 140
	TypeRetentionRound  Type = 141
	TypeSetAlertSink    Type = 142
	TypeRemoveAlertSink Type = 143
	TypeRaiseAlert      Type = 144
	TypeResolveAlert    Type = 145
	TypeAlertAttempt    Type = 146
	TypeFlagJob         Type = 147
)

// Operations added after tags 140..159 were taken, from 120..139: automatic retention
// with the backup policies' own rules, and the compaction of fired alerts.
const (
	TypeApplyVaultRetention Type = 127
	TypeCompactAlerts       Type = 128
)

// ApplyVaultRetention is ApplyRetention with the backup policies' own retention: the
// FSM applies meta.PlanVaultRetention to the vault at the entry's cluster time (the
// snapshots of a backup policy with its own retention by its rules, the rest by the
// vault's stored rules), with the rules of `coffer forget`. Locked and held snapshots
// are kept and reported. Audited as the system principal.
type ApplyVaultRetention struct {
	Vault meta.VaultID `cbor:"vault"`
}

// CompactAlerts removes the fired alerts that are over Retain nanoseconds of cluster
// time old: resolved ones by their resolution time, one-time events (meta.AlertEvent)
// by the time they were raised. An open condition alert stays.
type CompactAlerts struct {
	Retain int64 `cbor:"retain"`
}

// Type implements Body.
func (ApplyVaultRetention) Type() Type { return TypeApplyVaultRetention }

// Type implements Body.
func (CompactAlerts) Type() Type { return TypeCompactAlerts }

// ApplyRetention applies the vault's stored retention policy (meta.Vault.Retention.Keep)
// at the entry's cluster time with the rules of `coffer forget` (meta.PlanRetention): the
// FSM itself decides, so a lock or hold set since the leader looked is never missed.
// Locked and held snapshots are kept and reported. Audited as the system principal.
type ApplyRetention struct {
	Vault meta.VaultID `cbor:"vault"`
}

// RetentionRound records that the leader finished a round of automatic retention at the
// entry's cluster time: the next is due one retention interval later.
type RetentionRound struct{}

// SetAlertSink adds or replaces an alert sink (admin only; audited).
type SetAlertSink struct {
	Sink meta.AlertSink `cbor:"sink"`
	By   meta.Principal `cbor:"by"`
}

// RemoveAlertSink removes an alert sink by name (admin only; audited).
type RemoveAlertSink struct {
	Name string         `cbor:"name"`
	By   meta.Principal `cbor:"by"`
}

// RaiseAlert records an alert unless one with the same Key is open: the FSM keeps one
// open alert per key, so an event raised again (by a retry, or by a new leader that saw
// the same condition) is recorded and delivered once. The FSM sets Seq and Raised.
type RaiseAlert struct {
	Alert meta.Alert `cbor:"alert"`
}

// ResolveAlert closes the open alert with Key (its condition ended); a later alert with
// the same key is a new one.
type ResolveAlert struct {
	Key string `cbor:"key"`
}

// AlertAttempt records one delivery attempt of alert Seq to sink Sink: delivered (OK) or
// failed with Error. The FSM gives up after meta.AlertMaxAttempts failures; a delivery
// and a final failure are audited.
type AlertAttempt struct {
	Seq   uint64 `cbor:"seq"`
	Sink  string `cbor:"sink"`
	OK    bool   `cbor:"ok,omitempty"`
	Error string `cbor:"error,omitempty"`
}

// FlagJob records the leader's anomaly verdict on an ended job (meta.Job.Anomaly).
type FlagJob struct {
	ID      string `cbor:"id"`
	Anomaly string `cbor:"anomaly"`
}

// Type implements Body.
func (FlagJob) Type() Type { return TypeFlagJob }

// Type implements Body.
func (ApplyRetention) Type() Type { return TypeApplyRetention }

// Type implements Body.
func (RetentionRound) Type() Type { return TypeRetentionRound }

// Type implements Body.
func (SetAlertSink) Type() Type { return TypeSetAlertSink }

// Type implements Body.
func (RemoveAlertSink) Type() Type { return TypeRemoveAlertSink }

// Type implements Body.
func (RaiseAlert) Type() Type { return TypeRaiseAlert }

// Type implements Body.
func (ResolveAlert) Type() Type { return TypeResolveAlert }

// Type implements Body.
func (AlertAttempt) Type() Type { return TypeAlertAttempt }

// opsKind describes the operations command type t; ok is false for other tags.
func opsKind(t Type) (kind, bool) {
	switch t {
	case TypeApplyRetention:
		return kindFor[ApplyRetention]()
	case TypeRetentionRound:
		return kindFor[RetentionRound]()
	case TypeSetAlertSink:
		return kindFor[SetAlertSink]()
	case TypeRemoveAlertSink:
		return kindFor[RemoveAlertSink]()
	case TypeRaiseAlert:
		return kindFor[RaiseAlert]()
	case TypeResolveAlert:
		return kindFor[ResolveAlert]()
	case TypeAlertAttempt:
		return kindFor[AlertAttempt]()
	case TypeFlagJob:
		return kindFor[FlagJob]()
	case TypeApplyVaultRetention:
		return kindFor[ApplyVaultRetention]()
	case TypeCompactAlerts:
		return kindFor[CompactAlerts]()
	}
	return kind{}, false
}
