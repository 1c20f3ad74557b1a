package command

import "github.com/cofferhq/coffer/meta"

// Two-person rule and admin MFA (issue 17, steps 6-7): tags 180..199.
const (
	TypeRequestApproval   Type = 180
	TypeDecideApproval    Type = 181
	TypeFinishApproval    Type = 182
	TypeSetApprovalPolicy Type = 183
	TypeSetMFA            Type = 184
	TypeMFAFailure        Type = 185
)

// RequestApproval stores a gated operation. The FSM sets Created to the entry's cluster
// time and Expires to Created+TTL; the request is pending. Step, when not zero, is the
// TOTP time step of the requester's code, which the leader checked: like a decider's, it
// must be after the requester's last accepted step (no replay), and becomes it. Entries
// written before requesters gave codes have none (applied as they were). Audited,
// refusals too.
type RequestApproval struct {
	Request meta.ApprovalRequest `cbor:"request"`
	TTL     int64                `cbor:"ttl"` // nanoseconds
	Step    uint64               `cbor:"step,omitempty"`
}

// DecideApproval approves or denies a pending request (meta.CheckDecision at the entry's
// cluster time). Step is the TOTP time step of the decider's code, which the leader
// checked: it must be after the decider's last accepted step (no replay), and becomes
// it. Audited, refusals too (self-approval, expired, replay).
type DecideApproval struct {
	ID      string         `cbor:"id"`
	Approve bool           `cbor:"approve"`
	By      meta.Principal `cbor:"by"`
	Step    uint64         `cbor:"step"`
	Reason  string         `cbor:"reason,omitempty"`
}

// FinishApproval records the execution of an approved request: executed, or failed with
// the operation's error. Only an approved request can finish, so a request is executed
// at most once. Audited.
type FinishApproval struct {
	ID  string `cbor:"id"`
	Err string `cbor:"err,omitempty"`
}

// SetApprovalPolicy replaces the cluster's approval policy (only ever proposed when an
// approved request executes). Audited.
type SetApprovalPolicy struct {
	Policy meta.ApprovalPolicy `cbor:"policy"`
	By     meta.Principal      `cbor:"by"`
}

// SetMFA stores a principal's TOTP enrollment (the secret sealed). Audited, without the
// secret.
type SetMFA struct {
	Enrollment meta.MFAEnrollment `cbor:"enrollment"`
	By         meta.Principal     `cbor:"by"`
}

// MFAFailure records a wrong TOTP code of a principal at the entry's cluster time: the
// leader refuses every code of a principal with meta.MFAFailureLimit failures within
// meta.MFAFailureWindow, whichever server leads. Audited.
type MFAFailure struct {
	By meta.Principal `cbor:"by"`
}

// Type implements Body.
func (MFAFailure) Type() Type { return TypeMFAFailure }

// Type implements Body.
func (RequestApproval) Type() Type { return TypeRequestApproval }

// Type implements Body.
func (DecideApproval) Type() Type { return TypeDecideApproval }

// Type implements Body.
func (FinishApproval) Type() Type { return TypeFinishApproval }

// Type implements Body.
func (SetApprovalPolicy) Type() Type { return TypeSetApprovalPolicy }

// Type implements Body.
func (SetMFA) Type() Type { return TypeSetMFA }

// approvalKind describes the approval command type t; ok is false for other tags.
func approvalKind(t Type) (kind, bool) {
	switch t {
	case TypeRequestApproval:
		return kindFor[RequestApproval]()
	case TypeDecideApproval:
		return kindFor[DecideApproval]()
	case TypeFinishApproval:
		return kindFor[FinishApproval]()
	case TypeSetApprovalPolicy:
		return kindFor[SetApprovalPolicy]()
	case TypeSetMFA:
		return kindFor[SetMFA]()
	case TypeMFAFailure:
		return kindFor[MFAFailure]()
	}
	return kind{}, false
}
