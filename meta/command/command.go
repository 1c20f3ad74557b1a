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
	"reflect"
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
	if k, ok := kindOf(t); ok {
		return k.name
	}
	return fmt.Sprintf("Type(%d)", uint16(t))
}

// kind is what the codec knows of one command type.
type kind struct {
	name   string                            // the type's name (Type.String)
	decode func(Codec, []byte) (Body, error) // decodes a body of the type strictly
	is     func(Body) bool                   // reports whether a body is of the type
}

// kindFor describes the command body type T, named after the Go type; ok is true.
func kindFor[T Body]() (k kind, ok bool) {
	return kind{
		name: reflect.TypeFor[T]().Name(),
		decode: func(c Codec, raw []byte) (Body, error) {
			var v T
			if err := c.dec.Unmarshal(raw, &v); err != nil {
				return nil, err
			}
			return v, nil
		},
		is: func(b Body) bool { _, ok := b.(T); return ok },
	}, true
}

// kindOf describes command type t; ok is false for a tag this build does not know.
func kindOf(t Type) (kind, bool) {
	switch t {
	case TypeCreateVault:
		return kindFor[CreateVault]()
	case TypeCommitSnapshot:
		return kindFor[CommitSnapshot]()
	case TypeSetClusterMap:
		return kindFor[SetClusterMap]()
	case TypeTickV1:
		return kindFor[TickV1]()
	case TypeTick:
		return kindFor[Tick]()
	case TypeDeleteSnapshots:
		return kindFor[DeleteSnapshots]()
	case TypeSetLock:
		return kindFor[SetLock]()
	case TypeSetHold:
		return kindFor[SetHold]()
	case TypeRecordAudit:
		return kindFor[RecordAudit]()
	case TypeDeleteVault:
		return kindFor[DeleteVault]()
	case TypeUndeleteVault:
		return kindFor[UndeleteVault]()
	case TypePurgeVault:
		return kindFor[PurgeVault]()
	case TypeSetVaultPolicy:
		return kindFor[SetVaultPolicy]()
	case TypeGCBegin:
		return kindFor[GCBegin]()
	case TypeGCSweep:
		return kindFor[GCSweep]()
	case TypeGCEnd:
		return kindFor[GCEnd]()
	case TypeCreateEnrollToken:
		return kindFor[CreateEnrollToken]()
	case TypeConsumeEnrollToken:
		return kindFor[ConsumeEnrollToken]()
	case TypeRevokeCert:
		return kindFor[RevokeCert]()
	case TypeRevokeEnrollToken:
		return kindFor[RevokeEnrollToken]()
	case TypeSetVaultKeys:
		return kindFor[SetVaultKeys]()
	case TypeTouchKeyWrap:
		return kindFor[TouchKeyWrap]()
	case TypeCreateNodeToken:
		return kindFor[CreateNodeToken]()
	case TypeConsumeNodeToken:
		return kindFor[ConsumeNodeToken]()
	case TypeRecordCert:
		return kindFor[RecordCert]()
	}
	for _, family := range []func(Type) (kind, bool){jobsKind, opsKind, approvalKind, hostKind, replicationKind} {
		if k, ok := family(t); ok {
			return k, true
		}
	}
	return kind{}, false
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
	if k, ok := kindOf(t); !ok || !k.is(cmd.Body) {
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
	k, ok := kindOf(Type(env.Type))
	if !ok {
		return Command{}, fmt.Errorf("%w: unknown command type %d", ErrDecode, env.Type)
	}
	body, err := k.decode(c, env.Body)
	if err != nil {
		return Command{}, fmt.Errorf("%w: %s body: %v", ErrDecode, k.name, err)
	}
	return Command{Time: env.Time, Body: body}, nil
}

// defaultCodec is built once on first use and immutable after.
var defaultCodec = sync.OnceValue(NewCodec)

// Encode encodes cmd with the metadata codec (see Codec.Encode).
func Encode(cmd Command) ([]byte, error) { return defaultCodec().Encode(cmd) }

// Decode decodes one log entry with the metadata codec (see Codec.Decode).
func Decode(b []byte) (Command, error) { return defaultCodec().Decode(b) }
