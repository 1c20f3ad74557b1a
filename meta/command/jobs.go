package command

import (
	"fmt"

	"github.com/cofferhq/coffer/meta"
)

// Backup policies, agents and jobs (issue 15): tags 120..139.
const (
	TypePutPolicy    Type = 120
	TypeDeletePolicy Type = 121
	TypeStartJob     Type = 122
	TypeReportJob    Type = 123
	TypeHeartbeat    Type = 124
	TypeExpireJobs   Type = 125
	TypeCompactJobs  Type = 126
)

// PutPolicy creates (Create) or replaces a backup policy. The FSM sets Created, Updated,
// By and Version. Admin only; audited.
type PutPolicy struct {
	Policy meta.BackupPolicy `cbor:"policy"`
	Create bool              `cbor:"create,omitempty"`
	By     meta.Principal    `cbor:"by"`
}

// DeletePolicy removes a backup policy. Admin only; audited.
type DeletePolicy struct {
	Name string         `cbor:"name"`
	By   meta.Principal `cbor:"by"`
}

// StartJob opens a running job with ID "j<index>". An agent starts jobs only for
// itself.
type StartJob struct {
	Start meta.JobStart  `cbor:"start"`
	By    meta.Principal `cbor:"by"`
}

// ReportJob records a running job's progress or end. Only the job's agent or an admin.
type ReportJob struct {
	Report meta.JobReport `cbor:"report"`
	By     meta.Principal `cbor:"by"`
}

// Heartbeat records an agent's heartbeat and refreshes its running jobs.
type Heartbeat struct {
	Heartbeat meta.Heartbeat `cbor:"heartbeat"`
	By        meta.Principal `cbor:"by"`
}

// ExpireJobs marks failed each of IDs that is still running and has not been updated
// for Timeout nanoseconds of cluster time (the FSM decides again). The leader proposes
// it.
type ExpireJobs struct {
	IDs     []string `cbor:"ids"`
	Timeout int64    `cbor:"timeout"`
}

// CompactJobs removes the records of jobs that ended more than Retain nanoseconds of
// cluster time ago. The leader proposes it.
type CompactJobs struct {
	Retain int64 `cbor:"retain"`
}

// Type implements Body.
func (PutPolicy) Type() Type { return TypePutPolicy }

// Type implements Body.
func (DeletePolicy) Type() Type { return TypeDeletePolicy }

// Type implements Body.
func (StartJob) Type() Type { return TypeStartJob }

// Type implements Body.
func (ReportJob) Type() Type { return TypeReportJob }

// Type implements Body.
func (Heartbeat) Type() Type { return TypeHeartbeat }

// Type implements Body.
func (ExpireJobs) Type() Type { return TypeExpireJobs }

// Type implements Body.
func (CompactJobs) Type() Type { return TypeCompactJobs }

// decodeJobs decodes the body of one of this file's commands.
func (c Codec) decodeJobs(t Type, b []byte) (Body, error) {
	switch t {
	case TypePutPolicy:
		var v PutPolicy
		err := c.dec.Unmarshal(b, &v)
		return v, err
	case TypeDeletePolicy:
		var v DeletePolicy
		err := c.dec.Unmarshal(b, &v)
		return v, err
	case TypeStartJob:
		var v StartJob
		err := c.dec.Unmarshal(b, &v)
		return v, err
	case TypeReportJob:
		var v ReportJob
		err := c.dec.Unmarshal(b, &v)
		return v, err
	case TypeHeartbeat:
		var v Heartbeat
		err := c.dec.Unmarshal(b, &v)
		return v, err
	case TypeExpireJobs:
		var v ExpireJobs
		err := c.dec.Unmarshal(b, &v)
		return v, err
	case TypeCompactJobs:
		var v CompactJobs
		err := c.dec.Unmarshal(b, &v)
		return v, err
	}
	return nil, fmt.Errorf("%w: unknown command type %d", ErrDecode, t)
}
