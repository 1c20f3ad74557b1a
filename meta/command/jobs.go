package command

import "github.com/cofferhq/coffer/meta"

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

// jobsKind describes the policy, agent and job command type t; ok is false for other tags.
func jobsKind(t Type) (kind, bool) {
	switch t {
	case TypePutPolicy:
		return kindFor[PutPolicy]()
	case TypeDeletePolicy:
		return kindFor[DeletePolicy]()
	case TypeStartJob:
		return kindFor[StartJob]()
	case TypeReportJob:
		return kindFor[ReportJob]()
	case TypeHeartbeat:
		return kindFor[Heartbeat]()
	case TypeExpireJobs:
		return kindFor[ExpireJobs]()
	case TypeCompactJobs:
		return kindFor[CompactJobs]()
	}
	return kind{}, false
}
