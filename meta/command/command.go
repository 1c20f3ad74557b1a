// Package command encodes the commands of Coffer's metadata Raft log: a small versioned
// CBOR envelope with an append-only type tag, the leader's time stamp and the body.
//
// Every meta server decodes every log entry, so the encoding is strict: core deterministic
// CBOR, unknown envelope versions, unknown type tags, unknown fields and duplicate map keys
// are all errors (see FORMAT.md in the parent meta directory). Encoding the same command
// always yields the same bytes.
package command

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/placement"
	"github.com/fxamacker/cbor/v2"
)

// Version is the envelope version this package writes and the only one it reads.
const Version = 1

// Type tags a command body. Tags are append-only: never renumber or reuse one.
type Type uint16

// Command type tags.
const (
	TypeCreateVault    Type = 1
	TypeCommitSnapshot Type = 2
	TypeSetClusterMap  Type = 3
	// TypeTickV1 is the first Tick, whose Elapsed let the clock run at twice real time;
	// kept to apply old log entries as they were applied (leaders propose TypeTick).
	TypeTickV1 Type = 4
	TypeTick   Type = 5
	// Retention (issue 6); tags from 60 keep clear of other work's additions.
	TypeDeleteSnapshots Type = 60
	TypeSetLock         Type = 61
	TypeSetHold         Type = 62
	TypeRecordAudit     Type = 63
	TypeDeleteVault     Type = 64
	TypeUndeleteVault   Type = 65
	TypePurgeVault      Type = 66
	TypeSetVaultPolicy  Type = 67

	TypeGCBegin Type = 80
	TypeGCSweep Type = 81
	TypeGCEnd   Type = 82
)

func (t Type) String() string {
	switch t {
	case TypeCreateVault:
		return "CreateVault"
	case TypeCommitSnapshot:
		return "CommitSnapshot"
	case TypeSetClusterMap:
		return "SetClusterMap"
	case TypeTickV1:
		return "TickV1"
	case TypeTick:
		return "Tick"
	case TypeDeleteSnapshots:
		return "DeleteSnapshots"
	case TypeSetLock:
		return "SetLock"
	case TypeSetHold:
		return "SetHold"
	case TypeRecordAudit:
		return "RecordAudit"
	case TypeDeleteVault:
		return "DeleteVault"
	case TypeUndeleteVault:
		return "UndeleteVault"
	case TypePurgeVault:
		return "PurgeVault"
	case TypeSetVaultPolicy:
		return "SetVaultPolicy"
	case TypeGCBegin:
		return "GCBegin"
	case TypeGCSweep:
		return "GCSweep"
	case TypeGCEnd:
		return "GCEnd"
	case TypeCreateEnrollToken:
		return "CreateEnrollToken"
	case TypeConsumeEnrollToken:
		return "ConsumeEnrollToken"
	case TypeRevokeCert:
		return "RevokeCert"
	case TypeRevokeEnrollToken:
		return "RevokeEnrollToken"
	case TypePutPolicy:
		return "PutPolicy"
	case TypeDeletePolicy:
		return "DeletePolicy"
	case TypeStartJob:
		return "StartJob"
	case TypeReportJob:
		return "ReportJob"
	case TypeHeartbeat:
		return "Heartbeat"
	case TypeExpireJobs:
		return "ExpireJobs"
	case TypeCompactJobs:
		return "CompactJobs"
	case TypeSetVaultKeys:
		return "SetVaultKeys"
	case TypeTouchKeyWrap:
		return "TouchKeyWrap"
	case TypeCreateNodeToken:
		return "CreateNodeToken"
	case TypeConsumeNodeToken:
		return "ConsumeNodeToken"
	case TypeRecordCert:
		return "RecordCert"
	}
	if name, ok := opsName(t); ok {
		return name
	}
	if name, ok := approvalName(t); ok {
		return name
	}
	if name, ok := hostName(t); ok {
		return name
	}
	return fmt.Sprintf("Type(%d)", uint16(t))
}

// ErrDecode marks a log entry that cannot be decoded (bad CBOR, unknown version or type).
var ErrDecode = errors.New("command: cannot decode")

// Body is one command's payload: CreateVault, CommitSnapshot, SetClusterMap or Tick.
type Body interface {
	Type() Type
}

// CreateVault records a new vault. The FSM sets Vault.Created from the cluster clock.
// By is the principal that asked: the FSM checks its permission and writes the outcome,
// success or refusal, to the audit log. Nil in entries written before issue 11 (applied
// as they were: no check, no audit record).
type CreateVault struct {
	Vault meta.Vault      `cbor:"vault"`
	By    *meta.Principal `cbor:"by,omitempty"`
}

// CommitSnapshot records a snapshot whose chunks the leader has checked. The FSM sets
// Snapshot.Time from the cluster clock.
type CommitSnapshot struct {
	Snapshot meta.Snapshot `cbor:"snapshot"`
	// GCEpoch is the garbage-collection epoch the leader read before it checked the
	// snapshot's chunks. The FSM refuses the entry (meta.ErrGCEpoch) when another epoch
	// has begun since: its mark may not have seen this snapshot, so the check is redone.
	GCEpoch uint64 `cbor:"gc_epoch,omitempty"`
	// By is the principal that asked for the commit: the FSM holds a lock the snapshot
	// comes with to By's limit (meta.CheckAgentLockLimit). Nil in entries written before
	// issue 11 and for the meta servers' own commits.
	By *meta.Principal `cbor:"by,omitempty"`
}

// SetClusterMap replaces the cluster map; its epoch must be the current one plus one.
type SetClusterMap struct {
	Map placement.Map `cbor:"map"`
}

// Tick advances the cluster clock towards the command's time stamp. Elapsed is the real
// time in nanoseconds the leader measured on its monotonic clock since its previous Tick
// in the same term (0 for its first): the FSM lets the clock run at most that far plus
// 1% ahead, so a leader's wall clock jumping forward cannot expire locks early.
type Tick struct {
	Elapsed int64 `cbor:"elapsed,omitempty"`
}

// TickV1 is the Tick of log entries written before issue 11: the FSM let the clock run
// at most twice Elapsed ahead. Applied as it was, so every replica computes the same
// clock from an old log; leaders no longer propose it.
type TickV1 struct {
	Elapsed int64 `cbor:"elapsed,omitempty"`
}

// Type implements Body.
func (CreateVault) Type() Type { return TypeCreateVault }

// Type implements Body.
func (CommitSnapshot) Type() Type { return TypeCommitSnapshot }

// Type implements Body.
func (SetClusterMap) Type() Type { return TypeSetClusterMap }

// Type implements Body.
func (Tick) Type() Type { return TypeTick }

// Type implements Body.
func (TickV1) Type() Type { return TypeTickV1 }

// Command is one decoded log entry.
type Command struct {
	// Time is the leader's clock when it proposed the command, in Unix nanoseconds.
	Time int64
	Body Body
}

type envelope struct {
	Version uint8  `cbor:"1,keyasint"`
	Type    uint16 `cbor:"2,keyasint"`
	Time    int64  `cbor:"3,keyasint"`
	Body    []byte `cbor:"4,keyasint"`
}

// Codec marshals values with the metadata encoding: core deterministic CBOR, times as
// RFC 3339 strings in UTC with nanoseconds; decoding rejects unknown fields and duplicate
// map keys. The zero value is not usable; use NewCodec. A Codec is immutable and safe for
// concurrent use.
type Codec struct {
	enc cbor.EncMode
	dec cbor.DecMode
}

// NewCodec builds the metadata codec.
func NewCodec() Codec {
	eo := cbor.CoreDetEncOptions()
	eo.Time = cbor.TimeRFC3339NanoUTC
	enc, err := eo.EncMode()
	if err != nil {
		panic(fmt.Sprintf("command: encoder options: %v", err)) // static options; cannot fail
	}
	dec, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	}.DecMode()
	if err != nil {
		panic(fmt.Sprintf("command: decoder options: %v", err))
	}
	return Codec{enc: enc, dec: dec}
}

// Marshal encodes v deterministically.
func (c Codec) Marshal(v any) ([]byte, error) { return c.enc.Marshal(v) }

// Unmarshal decodes b into v strictly (no unknown fields, no duplicate keys).
func (c Codec) Unmarshal(b []byte, v any) error { return c.dec.Unmarshal(b, v) }

// Encode encodes cmd. The result owns its memory.
func (c Codec) Encode(cmd Command) ([]byte, error) {
	if cmd.Body == nil {
		return nil, errors.New("command: encode: nil body")
	}
	t := cmd.Body.Type()
	switch cmd.Body.(type) {
	case CreateVault, CommitSnapshot, SetClusterMap, Tick, TickV1, DeleteSnapshots, SetLock, SetHold, RecordAudit,
		DeleteVault, UndeleteVault, PurgeVault, SetVaultPolicy, GCBegin, GCSweep, GCEnd,
		CreateEnrollToken, ConsumeEnrollToken, RevokeCert, RevokeEnrollToken:
	case PutPolicy, DeletePolicy, StartJob, ReportJob, Heartbeat, ExpireJobs, CompactJobs:
	case SetVaultKeys, TouchKeyWrap:
	case CreateNodeToken, ConsumeNodeToken, RecordCert:
	default:
		if isOps(cmd.Body) || isApproval(cmd.Body) || isHost(cmd.Body) {
			break
		}
		return nil, fmt.Errorf("command: encode: unsupported body type %T", cmd.Body)
	}
	body, err := c.enc.Marshal(cmd.Body)
	if err != nil {
		return nil, fmt.Errorf("command: encode %s: %w", t, err)
	}
	b, err := c.enc.Marshal(envelope{Version: Version, Type: uint16(t), Time: cmd.Time, Body: body})
	if err != nil {
		return nil, fmt.Errorf("command: encode %s: %w", t, err)
	}
	return b, nil
}

// Decode decodes one log entry. Errors wrap ErrDecode and name the problem (bad
// envelope, unknown version, unknown type tag, bad body). b is not retained.
func (c Codec) Decode(b []byte) (Command, error) {
	var env envelope
	if err := c.dec.Unmarshal(b, &env); err != nil {
		return Command{}, fmt.Errorf("%w: envelope: %v", ErrDecode, err)
	}
	if env.Version != Version {
		return Command{}, fmt.Errorf("%w: unknown envelope version %d (this build reads %d)", ErrDecode, env.Version, Version)
	}
	var body Body
	var err error
	switch t := Type(env.Type); t {
	case TypeCreateVault:
		var v CreateVault
		err = c.dec.Unmarshal(env.Body, &v)
		body = v
	case TypeCommitSnapshot:
		var v CommitSnapshot
		err = c.dec.Unmarshal(env.Body, &v)
		body = v
	case TypeSetClusterMap:
		var v SetClusterMap
		err = c.dec.Unmarshal(env.Body, &v)
		body = v
	case TypeTick:
		var v Tick
		err = c.dec.Unmarshal(env.Body, &v)
		body = v
	case TypeTickV1:
		var v TickV1
		err = c.dec.Unmarshal(env.Body, &v)
		body = v
	case TypeDeleteSnapshots:
		var v DeleteSnapshots
		err = c.dec.Unmarshal(env.Body, &v)
		body = v
	case TypeSetLock:
		var v SetLock
		err = c.dec.Unmarshal(env.Body, &v)
		body = v
	case TypeSetHold:
		var v SetHold
		err = c.dec.Unmarshal(env.Body, &v)
		body = v
	case TypeRecordAudit:
		var v RecordAudit
		err = c.dec.Unmarshal(env.Body, &v)
		body = v
	case TypeDeleteVault:
		var v DeleteVault
		err = c.dec.Unmarshal(env.Body, &v)
		body = v
	case TypeUndeleteVault:
		var v UndeleteVault
		err = c.dec.Unmarshal(env.Body, &v)
		body = v
	case TypePurgeVault:
		var v PurgeVault
		err = c.dec.Unmarshal(env.Body, &v)
		body = v
	case TypeSetVaultPolicy:
		var v SetVaultPolicy
		err = c.dec.Unmarshal(env.Body, &v)
		body = v
	case TypeGCBegin:
		var v GCBegin
		err = c.dec.Unmarshal(env.Body, &v)
		body = v
	case TypeGCSweep:
		var v GCSweep
		err = c.dec.Unmarshal(env.Body, &v)
		body = v
	case TypeGCEnd:
		var v GCEnd
		err = c.dec.Unmarshal(env.Body, &v)
		body = v
	case TypeCreateEnrollToken:
		var v CreateEnrollToken
		err = c.dec.Unmarshal(env.Body, &v)
		body = v
	case TypeConsumeEnrollToken:
		var v ConsumeEnrollToken
		err = c.dec.Unmarshal(env.Body, &v)
		body = v
	case TypeRevokeCert:
		var v RevokeCert
		err = c.dec.Unmarshal(env.Body, &v)
		body = v
	case TypeRevokeEnrollToken:
		var v RevokeEnrollToken
		err = c.dec.Unmarshal(env.Body, &v)
		body = v
	case TypePutPolicy, TypeDeletePolicy, TypeStartJob, TypeReportJob, TypeHeartbeat, TypeExpireJobs, TypeCompactJobs:
		body, err = c.decodeJobs(t, env.Body)
	case TypeSetVaultKeys:
		var v SetVaultKeys
		err = c.dec.Unmarshal(env.Body, &v)
		body = v
	case TypeTouchKeyWrap:
		var v TouchKeyWrap
		err = c.dec.Unmarshal(env.Body, &v)
		body = v
	case TypeCreateNodeToken:
		var v CreateNodeToken
		err = c.dec.Unmarshal(env.Body, &v)
		body = v
	case TypeConsumeNodeToken:
		var v ConsumeNodeToken
		err = c.dec.Unmarshal(env.Body, &v)
		body = v
	case TypeRecordCert:
		var v RecordCert
		err = c.dec.Unmarshal(env.Body, &v)
		body = v
	default:
		var ok bool
		if body, ok, err = c.decodeOps(t, env.Body); !ok {
			body, ok, err = c.decodeApproval(t, env.Body)
		}
		if !ok {
			body, ok, err = c.decodeHost(t, env.Body)
		}
		if !ok {
			return Command{}, fmt.Errorf("%w: unknown command type %d", ErrDecode, env.Type)
		}
	}
	if err != nil {
		return Command{}, fmt.Errorf("%w: %s body: %v", ErrDecode, Type(env.Type), err)
	}
	return Command{Time: env.Time, Body: body}, nil
}

// defaultCodec is built once on first use and immutable after.
var defaultCodec = sync.OnceValue(NewCodec)

// Encode encodes cmd with the metadata codec (see Codec.Encode).
func Encode(cmd Command) ([]byte, error) { return defaultCodec().Encode(cmd) }

// Decode decodes one log entry with the metadata codec (see Codec.Decode).
func Decode(b []byte) (Command, error) { return defaultCodec().Decode(b) }
