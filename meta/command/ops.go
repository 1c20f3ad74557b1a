package command

import (
	"fmt"

	"github.com/cofferhq/coffer/meta"
)

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

// opsName names the operations tags for Type.String.
func opsName(t Type) (string, bool) {
	switch t {
	case TypeApplyRetention:
		return "ApplyRetention", true
	case TypeRetentionRound:
		return "RetentionRound", true
	case TypeSetAlertSink:
		return "SetAlertSink", true
	case TypeRemoveAlertSink:
		return "RemoveAlertSink", true
	case TypeRaiseAlert:
		return "RaiseAlert", true
	case TypeResolveAlert:
		return "ResolveAlert", true
	case TypeAlertAttempt:
		return "AlertAttempt", true
	case TypeFlagJob:
		return "FlagJob", true
	case TypeApplyVaultRetention:
		return "ApplyVaultRetention", true
	case TypeCompactAlerts:
		return "CompactAlerts", true
	}
	return "", false
}

// isOps reports whether b is one of the operations commands.
func isOps(b Body) bool {
	switch b.(type) {
	case ApplyRetention, RetentionRound, SetAlertSink, RemoveAlertSink, RaiseAlert, ResolveAlert, AlertAttempt, FlagJob,
		ApplyVaultRetention, CompactAlerts:
		return true
	}
	return false
}

// decodeOps decodes an operations body; ok is false for other tags.
func (c Codec) decodeOps(t Type, raw []byte) (body Body, ok bool, err error) {
	switch t {
	case TypeApplyRetention:
		return decodeAs[ApplyRetention](c, raw)
	case TypeRetentionRound:
		return decodeAs[RetentionRound](c, raw)
	case TypeSetAlertSink:
		return decodeAs[SetAlertSink](c, raw)
	case TypeRemoveAlertSink:
		return decodeAs[RemoveAlertSink](c, raw)
	case TypeRaiseAlert:
		return decodeAs[RaiseAlert](c, raw)
	case TypeResolveAlert:
		return decodeAs[ResolveAlert](c, raw)
	case TypeAlertAttempt:
		return decodeAs[AlertAttempt](c, raw)
	case TypeFlagJob:
		return decodeAs[FlagJob](c, raw)
	case TypeApplyVaultRetention:
		return decodeAs[ApplyVaultRetention](c, raw)
	case TypeCompactAlerts:
		return decodeAs[CompactAlerts](c, raw)
	}
	return nil, false, nil
}

func decodeAs[T Body](c Codec, raw []byte) (Body, bool, error) {
	var v T
	if err := c.dec.Unmarshal(raw, &v); err != nil {
		return nil, true, fmt.Errorf("%T: %w", v, err)
	}
	return v, true, nil
}
