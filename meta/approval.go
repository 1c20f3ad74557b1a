package meta

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Two-person rule and admin MFA (issue 17, steps 6-7).
//
// An operation the cluster's approval policy names is not executed when the first admin
// asks: the leader stores the request in Raft with its exact parameters (Method and the
// canonical CBOR Body) and answers with an *ApprovalRequiredError naming the request ID.
// A second, distinct admin approves it with a current TOTP code; the leader then executes
// the stored request once, as the requester.

// Gated operations (ApprovalPolicy.Operations).
const (
	OpGovernanceBypass = "governance-bypass"   // delete or shorten a governance-locked snapshot
	OpVaultDelete      = "vault-delete"        // coffer vault delete
	OpPolicyWeaken     = "retention-weaken"    // a vault policy keeping less or locking shorter
	OpKeyWrapRemove    = "key-wrap-remove"     // removing a key wrap or switching key management
	OpRevokeAdmin      = "revoke-admin"        // revoking an admin's certificate
	OpMetaMembership   = "meta-membership"     // coffer admin meta add|remove
	OpDecommission     = "decommission"        // decommissioning a node
	OpLockedRestore    = "locked-restore"      // restore grants and platform unwraps on locked/held snapshots
	OpIssueAdmin       = "issue-admin"         // issuing an admin certificate (a second admin identity)
	OpApprovalPolicy   = "approval-policy"     // changing this policy (always gated)
	DefaultApprovalTTL = 24 * time.Hour        // how long a request may wait for its approval
	MFAFailureLimit    = 5                     // wrong codes per principal within MFAFailureWindow
	MFAFailureWindow   = 15 * time.Minute      // after MFAFailureLimit failures, codes are refused
	maxApprovalBody    = 1 << 20               // bound on a stored request's body
	approvalIDPattern  = `^ap-[0-9a-f]{16}$`   // request IDs: "ap-" and 16 hex digits
	approvalMaxReason  = 1024                  // bound on a decision's reason
	approvalRequiredAt = "approval required: " // prefix of the refusal, see ApprovalIDFrom
)

// defaultApprovalOperations is the approval policy of a cluster that never set one.
// Immutable: read only through copies (slices.Clone), never written.
var defaultApprovalOperations = []string{OpGovernanceBypass, OpVaultDelete, OpPolicyWeaken, OpKeyWrapRemove,
	OpRevokeAdmin, OpMetaMembership, OpDecommission, OpLockedRestore, OpIssueAdmin, OpApprovalPolicy}

// DefaultApprovalPolicy returns the policy of a cluster that never stored one: every
// operation of the two-person rule is gated.
func DefaultApprovalPolicy() ApprovalPolicy {
	return ApprovalPolicy{Operations: slices.Clone(defaultApprovalOperations)}
}

// MinimalApprovalPolicy gates nothing but changes of the policy itself.
func MinimalApprovalPolicy() ApprovalPolicy {
	return ApprovalPolicy{Operations: []string{OpApprovalPolicy}}
}

// KnownApprovalOperations lists every operation name a policy may contain.
func KnownApprovalOperations() []string { return slices.Clone(defaultApprovalOperations) }

// ApprovalPolicy names the operations that need a second admin's approval. It is stored
// in Raft; changing it is itself gated (OpApprovalPolicy cannot be removed).
type ApprovalPolicy struct {
	Operations []string `cbor:"operations" json:"operations"`
}

// Requires reports whether op needs an approval under p.
func (p ApprovalPolicy) Requires(op string) bool {
	return op == OpApprovalPolicy || slices.Contains(p.Operations, op)
}

// ValidateApprovalPolicy checks that p names only known operations, each once, and keeps
// OpApprovalPolicy (the policy cannot be changed by one admin).
func ValidateApprovalPolicy(p ApprovalPolicy) error {
	seen := map[string]bool{}
	for _, op := range p.Operations {
		if !slices.Contains(defaultApprovalOperations, op) {
			return fmt.Errorf("%w: approval policy: unknown operation %q (known: %s)", ErrInvalid, op, strings.Join(defaultApprovalOperations, ", "))
		}
		if seen[op] {
			return fmt.Errorf("%w: approval policy: operation %q named twice", ErrInvalid, op)
		}
		seen[op] = true
	}
	if !seen[OpApprovalPolicy] {
		return fmt.Errorf("%w: approval policy: %q cannot be removed (the policy itself stays under the two-person rule)", ErrInvalid, OpApprovalPolicy)
	}
	return nil
}

// Approval request states.
const (
	ApprovalPending  = "pending"
	ApprovalApproved = "approved" // approved; the leader is executing it
	ApprovalDenied   = "denied"
	ApprovalExecuted = "executed"
	ApprovalFailed   = "failed" // approved and executed, and the operation itself refused
	ApprovalExpired  = "expired"
)

// ApprovalRequest is a gated operation waiting for, or having had, its second admin.
// Body is the canonical CBOR of the operation's parameters, executed exactly as stored.
type ApprovalRequest struct {
	ID        string    `cbor:"id" json:"id"`
	Operation string    `cbor:"operation" json:"operation"`
	Method    string    `cbor:"method" json:"method"`
	Body      []byte    `cbor:"body" json:"-"`
	Summary   string    `cbor:"summary" json:"summary"`
	Vault     VaultID   `cbor:"vault,omitempty" json:"vault,omitempty"`
	Requester Principal `cbor:"requester" json:"requester"`
	Created   time.Time `cbor:"created" json:"created"` // cluster time
	Expires   time.Time `cbor:"expires" json:"expires"` // cluster time
	State     string    `cbor:"state" json:"state"`
	// Decider is the admin who approved or denied it; DecidedAt the cluster time.
	Decider   *Principal `cbor:"decider,omitempty" json:"decider,omitempty"`
	DecidedAt time.Time  `cbor:"decided_at,omitempty" json:"decided_at,omitempty"`
	// Result is the execution's outcome (the operation's error text when failed), or a
	// deny reason.
	Result string `cbor:"result,omitempty" json:"result,omitempty"`
}

// StateAt is r's state at cluster time now: a pending request past its expiry is expired.
func (r ApprovalRequest) StateAt(now time.Time) string {
	if r.State == ApprovalPending && !now.Before(r.Expires) {
		return ApprovalExpired
	}
	return r.State
}

// approvalIDRe matches a request ID; immutable (a compiled regexp is safe for concurrent use).
var approvalIDRe = regexp.MustCompile(approvalIDPattern)

// ValidApprovalID reports whether id has the form of a request ID.
func ValidApprovalID(id string) error {
	if !approvalIDRe.MatchString(id) {
		return fmt.Errorf("%w: approval request ID %q (want ap- and 16 hex digits)", ErrInvalid, id)
	}
	return nil
}

// ValidateApprovalRequest checks a request before it is stored.
func ValidateApprovalRequest(r ApprovalRequest) error {
	if err := ValidApprovalID(r.ID); err != nil {
		return err
	}
	if !slices.Contains(defaultApprovalOperations, r.Operation) {
		return fmt.Errorf("%w: approval request: unknown operation %q", ErrInvalid, r.Operation)
	}
	if r.Method == "" || len(r.Body) > maxApprovalBody {
		return fmt.Errorf("%w: approval request: method empty or body over %d bytes", ErrInvalid, maxApprovalBody)
	}
	if r.Requester.Name == "" || (r.Requester.Role != RoleAdmin && !(r.Operation == OpLockedRestore && r.Requester.Role == RoleRestoreOperator)) {
		return fmt.Errorf("%w: approval request: requester %s is not an admin (nor a restore operator asking for a locked restore)", ErrDenied, r.Requester)
	}
	if !r.Expires.After(r.Created) {
		return fmt.Errorf("%w: approval request: expiry %s not after creation", ErrInvalid, r.Expires)
	}
	return nil
}

// CheckDecision decides whether by may approve or deny r at cluster time now. The
// requester can never decide their own request; an expired request cannot be approved.
func CheckDecision(by Principal, r ApprovalRequest, approve bool, now time.Time) error {
	if by.Role != RoleAdmin {
		return fmt.Errorf("%w: %s may not decide approval requests (admins only)", ErrDenied, by)
	}
	if by.Name == r.Requester.Name {
		return fmt.Errorf("%w: %s requested %s and cannot decide it (a second, distinct admin must)", ErrDenied, by, r.ID)
	}
	switch st := r.StateAt(now); st {
	case ApprovalPending:
		return nil
	case ApprovalExpired:
		if approve {
			return fmt.Errorf("%w: approval request %s expired at %s and will never execute", ErrInvalid, r.ID, r.Expires.UTC().Format(time.RFC3339))
		}
		return fmt.Errorf("%w: approval request %s expired at %s", ErrInvalid, r.ID, r.Expires.UTC().Format(time.RFC3339))
	default:
		return fmt.Errorf("%w: approval request %s is %s, not pending", ErrExists, r.ID, st)
	}
}

// ApprovalRequiredError is the answer to a gated operation: it was stored, not executed.
type ApprovalRequiredError struct {
	ID        string
	Operation string
	Expires   time.Time
}

func (e *ApprovalRequiredError) Error() string {
	return fmt.Sprintf("%srequest ID %s (%s; a second admin runs `coffer admin approvals approve %s` before %s)",
		approvalRequiredAt, e.ID, e.Operation, e.ID, e.Expires.UTC().Format(time.RFC3339))
}

// Is makes errors.Is(err, ErrApprovalRequired) true.
func (e *ApprovalRequiredError) Is(target error) bool { return target == ErrApprovalRequired }

// ErrApprovalRequired marks an operation stored for a second admin's approval.
var ErrApprovalRequired = errors.New("meta: approval required")

// approvalRequiredRe finds the request ID in a refusal's text; immutable.
var approvalRequiredRe = regexp.MustCompile(`approval required: request ID (ap-[0-9a-f]{16})`)

// ApprovalIDFrom returns the request ID of an approval-required answer, also after it
// crossed the wire as text; ok is false for any other error.
func ApprovalIDFrom(err error) (id string, ok bool) {
	if err == nil {
		return "", false
	}
	var ae *ApprovalRequiredError
	if errors.As(err, &ae) {
		return ae.ID, true
	}
	m := approvalRequiredRe.FindStringSubmatch(err.Error())
	if m == nil {
		return "", false
	}
	return m[1], true
}

// MFAEnrollment is a principal's TOTP enrollment. Sealed is the secret sealed under a key
// derived from the cluster seal key that only meta servers hold (never the secret
// itself), SealKey that key's ID; LastStep is the last accepted time step, so a code is
// accepted at most once.
type MFAEnrollment struct {
	Principal string `cbor:"principal" json:"principal"`
	Sealed    []byte `cbor:"sealed" json:"-"`
	SealKey   string `cbor:"seal_key,omitempty" json:"-"`
	// Failures are the cluster times of the latest wrong codes (MFAFailure; at most
	// MFAFailureLimit, within MFAFailureWindow when recorded).
	Failures []time.Time `cbor:"failures,omitempty" json:"-"`
	Enrolled time.Time   `cbor:"enrolled" json:"enrolled"`
	LastStep uint64      `cbor:"last_step" json:"-"`
}

// RecentMFAFailures returns the failures within MFAFailureWindow before now.
func RecentMFAFailures(fails []time.Time, now time.Time) []time.Time {
	var keep []time.Time
	for _, t := range fails {
		if now.Sub(t) < MFAFailureWindow {
			keep = append(keep, t)
		}
	}
	return keep
}

// MFABlocked returns how long after now e's principal must wait before a code is checked
// again (0: not blocked): MFAFailureLimit wrong codes within MFAFailureWindow block it.
func MFABlocked(e MFAEnrollment, now time.Time) time.Duration {
	keep := RecentMFAFailures(e.Failures, now)
	if len(keep) < MFAFailureLimit {
		return 0
	}
	return MFAFailureWindow - now.Sub(keep[len(keep)-MFAFailureLimit])
}

// ApprovalService is the two-person rule's API (admins only).
type ApprovalService interface {
	// ListApprovals returns every stored request, newest first, states as of now.
	ListApprovals(ctx context.Context) ([]ApprovalRequest, error)
	// DecideApproval approves or denies request id with the caller's current TOTP code.
	// An approval executes the stored request once, as its requester, and returns the
	// request in its final state (executed or failed, Result naming the outcome).
	DecideApproval(ctx context.Context, id string, approve bool, otp, reason string) (ApprovalRequest, error)
	// EnrollMFA enrolls the caller's TOTP secret, confirmed by a current code from it.
	EnrollMFA(ctx context.Context, secret, code string) error
	// ApprovalPolicy returns the cluster's approval policy.
	ApprovalPolicy(ctx context.Context) (ApprovalPolicy, error)
	// SetApprovalPolicy replaces it (itself gated: the answer is an approval request).
	SetApprovalPolicy(ctx context.Context, p ApprovalPolicy) (ApprovalPolicy, error)
}

// PolicyWeakens reports whether replacing a vault's retention policy old (nil: none) by
// next keeps less or locks shorter, and says how: pruning where there was none, a
// pruning rule lowered or dropped, a default lock removed, shortened or moved from
// compliance to governance. Keeping more (a rule raised or added, pruning removed) or
// locking longer is not a weakening. The agent lock limit is not retention.
func PolicyWeakens(old *VaultPolicy, next VaultPolicy) (bool, string) {
	var o VaultPolicy
	if old != nil {
		o = *old
	}
	var why []string
	switch {
	case next.Keep.Empty():
	case o.Keep.Empty():
		why = append(why, "pruning where there was none")
	default:
		type rule struct {
			name      string
			old, next int64
		}
		for _, r := range []rule{{"last", int64(o.Keep.Last), int64(next.Keep.Last)}, {"hourly", int64(o.Keep.Hourly), int64(next.Keep.Hourly)},
			{"daily", int64(o.Keep.Daily), int64(next.Keep.Daily)}, {"weekly", int64(o.Keep.Weekly), int64(next.Keep.Weekly)},
			{"monthly", int64(o.Keep.Monthly), int64(next.Keep.Monthly)}, {"yearly", int64(o.Keep.Yearly), int64(next.Keep.Yearly)},
			{"within", int64(o.Keep.Within), int64(next.Keep.Within)}} {
			if r.next < r.old {
				why = append(why, fmt.Sprintf("keep %s lowered", r.name))
			}
		}
	}
	if o.Lock != nil {
		switch {
		case next.Lock == nil:
			why = append(why, "default lock removed")
		case next.Lock.For < o.Lock.For:
			why = append(why, "default lock shortened")
		case o.Lock.Mode == Compliance && next.Lock.Mode != Compliance:
			why = append(why, "default lock from compliance to governance")
		}
	}
	if o.ApproveLockedRestore && !next.ApproveLockedRestore {
		why = append(why, "restores of locked or held snapshots no longer need approval")
	}
	return len(why) > 0, strings.Join(why, ", ")
}

// KeysChangeGated reports whether replacing a vault's key record old (nil: legacy
// wrappings only) by next removes a wrap or switches key management (the two-person
// rule's key-wrap-remove), and names the removed wraps.
func KeysChangeGated(old *VaultKeys, next VaultKeys) (bool, string) {
	if old == nil {
		return false, ""
	}
	var why []string
	if old.Management != next.Management {
		why = append(why, fmt.Sprintf("key management %s -> %s", old.Management, next.Management))
	}
	kept := map[string]bool{}
	for _, w := range next.Wraps {
		kept[w.ID] = true
	}
	for _, w := range old.Wraps {
		if !kept[w.ID] {
			why = append(why, fmt.Sprintf("remove wrap %s (%s %s)", w.ID, w.Kind, w.Holder))
		}
	}
	return len(why) > 0, strings.Join(why, ", ")
}
