package fsm

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
)

// Keys of the two-person rule and admin MFA.
const (
	prefixApproval    = "apr/"       // + request ID: meta.ApprovalRequest
	keyApprovalPolicy = "apr-policy" // meta.ApprovalPolicy (absent: the default)
	prefixMFA         = "mfa/"       // + principal name: meta.MFAEnrollment
)

// applyApproval applies the approval and MFA commands; every outcome, refusals too, is
// in the audit log.
func (f *FSM) applyApproval(b *pebble.Batch, index uint64, body command.Body, now time.Time) (any, error) {
	var (
		entry meta.AuditEntry
		v     any
		err   error
	)
	switch c := body.(type) {
	case command.RequestApproval:
		r := c.Request
		entry = meta.AuditEntry{Principal: r.Requester.Name, Role: r.Requester.Role, Action: "approval request " + r.Operation,
			Vault: r.Vault, Target: r.ID, Reason: r.Summary}
		v, err = f.requestApproval(b, c, now)
	case command.DecideApproval:
		entry = meta.AuditEntry{Principal: c.By.Name, Role: c.By.Role, Action: "approval deny", Target: c.ID, Reason: c.Reason}
		if c.Approve {
			entry.Action = "approval approve"
		}
		var r meta.ApprovalRequest
		r, err = f.decideApproval(b, c, now)
		entry.Vault = r.Vault
		if err == nil {
			v = r
		} else if r.ID != "" && r.StateAt(now) == meta.ApprovalExpired {
			entry.Action = "approval expired (" + strings.TrimPrefix(entry.Action, "approval ") + " refused)"
		}
	case command.FinishApproval:
		var r meta.ApprovalRequest
		r, err = f.finishApproval(b, c, now)
		entry = meta.AuditEntry{Principal: r.Requester.Name, Role: r.Requester.Role, Action: "approval execute " + r.Operation,
			Vault: r.Vault, Target: c.ID, Reason: r.Result}
		if r.Decider != nil {
			entry.Reason = strings.TrimSpace("approved by " + r.Decider.Name + "; " + r.Result)
		}
		v = r
	case command.SetApprovalPolicy:
		entry = meta.AuditEntry{Principal: c.By.Name, Role: c.By.Role, Action: "approval policy", Reason: strings.Join(c.Policy.Operations, ",")}
		if err = meta.ValidateApprovalPolicy(c.Policy); err == nil {
			err = f.put(b, keyApprovalPolicy, c.Policy)
			v = c.Policy
		}
	case command.SetMFA:
		entry = meta.AuditEntry{Principal: c.By.Name, Role: c.By.Role, Action: "mfa enroll", Target: c.Enrollment.Principal}
		v, err = f.setMFA(b, c, now)
	case command.MFAFailure:
		entry = meta.AuditEntry{Principal: c.By.Name, Role: c.By.Role, Action: "mfa code", Target: c.By.Name}
		v, err = f.mfaFailure(b, c, now)
		if err == nil {
			// The refusal of the code is what is recorded.
			err = fmt.Errorf("%w: wrong TOTP code for %s", meta.ErrDenied, c.By)
			if aerr := f.writeAudit(b, index, now, entry, err, ""); aerr != nil {
				return nil, aerr
			}
			return v, nil
		}
	default:
		return nil, fmt.Errorf("%w: unhandled approval command %T", meta.ErrInvalid, body)
	}
	if aerr := f.writeAudit(b, index, now, entry, err, ""); aerr != nil && err == nil {
		return nil, aerr
	}
	if err != nil {
		return nil, err
	}
	return v, nil
}

func (f *FSM) requestApproval(b *pebble.Batch, c command.RequestApproval, now time.Time) (meta.ApprovalRequest, error) {
	r := c.Request
	if c.TTL <= 0 {
		return r, fmt.Errorf("%w: approval request %s: expiry %v not positive", meta.ErrInvalid, r.ID, time.Duration(c.TTL))
	}
	r.Created, r.Expires, r.State = now, now.Add(time.Duration(c.TTL)), meta.ApprovalPending
	r.Decider, r.DecidedAt, r.Result = nil, time.Time{}, ""
	if err := meta.ValidateApprovalRequest(r); err != nil {
		return r, err
	}
	if _, ok, err := getCopy(b, prefixApproval+r.ID); err != nil {
		return r, err
	} else if ok {
		return r, fmt.Errorf("approval request %s: %w", r.ID, meta.ErrExists)
	}
	if c.Step != 0 {
		if err := f.useTOTPStep(b, r.Requester, c.Step, now); err != nil {
			return r, err
		}
	}
	return r, f.put(b, prefixApproval+r.ID, r)
}

// useTOTPStep checks that p has MFA enrolled, is not blocked by wrong codes and that
// step (of a code the leader checked) is after p's last accepted one, then records it.
func (f *FSM) useTOTPStep(b *pebble.Batch, p meta.Principal, step uint64, now time.Time) error {
	var e meta.MFAEnrollment
	raw, ok, err := getCopy(b, prefixMFA+p.Name)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: %s has no MFA enrollment (coffer admin mfa enroll)", meta.ErrDenied, p)
	}
	if err := f.codec.Unmarshal(raw, &e); err != nil {
		return fmt.Errorf("fsm: decode MFA enrollment of %q: %w", p.Name, err)
	}
	if wait := meta.MFABlocked(e, now); wait > 0 {
		return fmt.Errorf("%w: too many wrong TOTP codes for %s; try again in %v", meta.ErrDenied, p, wait.Round(time.Second))
	}
	if step <= e.LastStep {
		return fmt.Errorf("%w: TOTP code of %s already used (replay refused)", meta.ErrDenied, p)
	}
	e.LastStep = step
	return f.put(b, prefixMFA+p.Name, e)
}

func (f *FSM) readApproval(b *pebble.Batch, id string) (meta.ApprovalRequest, error) {
	var r meta.ApprovalRequest
	raw, ok, err := getCopy(b, prefixApproval+id)
	if err != nil {
		return r, err
	}
	if !ok {
		return r, fmt.Errorf("approval request %s: %w", id, meta.ErrNotFound)
	}
	if err := f.codec.Unmarshal(raw, &r); err != nil {
		return r, fmt.Errorf("fsm: decode approval request %s: %w", id, err)
	}
	return r, nil
}

// decideApproval checks the decision (meta.CheckDecision) and the decider's TOTP step
// (enrolled, after the last one accepted), then records both.
func (f *FSM) decideApproval(b *pebble.Batch, c command.DecideApproval, now time.Time) (meta.ApprovalRequest, error) {
	r, err := f.readApproval(b, c.ID)
	if err != nil {
		return r, err
	}
	if err := meta.CheckDecision(c.By, r, c.Approve, now); err != nil {
		return r, err
	}
	if err := f.useTOTPStep(b, c.By, c.Step, now); err != nil {
		return r, err
	}
	by := c.By
	r.Decider, r.DecidedAt = &by, now
	if c.Approve {
		r.State = meta.ApprovalApproved
	} else {
		r.State, r.Result = meta.ApprovalDenied, c.Reason
	}
	return r, f.put(b, prefixApproval+r.ID, r)
}

// finishApproval moves an approved request to executed or failed, once.
func (f *FSM) finishApproval(b *pebble.Batch, c command.FinishApproval, _ time.Time) (meta.ApprovalRequest, error) {
	r, err := f.readApproval(b, c.ID)
	if err != nil {
		return r, err
	}
	if r.State != meta.ApprovalApproved {
		return r, fmt.Errorf("%w: approval request %s is %s, not approved", meta.ErrExists, r.ID, r.State)
	}
	r.State, r.Result = meta.ApprovalExecuted, "executed"
	if c.Err != "" {
		r.State, r.Result = meta.ApprovalFailed, c.Err
	}
	return r, f.put(b, prefixApproval+r.ID, r)
}

func (f *FSM) setMFA(b *pebble.Batch, c command.SetMFA, now time.Time) (meta.MFAEnrollment, error) {
	e := c.Enrollment
	if c.By.Role != meta.RoleAdmin || c.By.Name != e.Principal {
		return e, fmt.Errorf("%w: %s may not enroll MFA for %q (admins enroll themselves)", meta.ErrDenied, c.By, e.Principal)
	}
	if len(e.Sealed) == 0 || len(e.Sealed) > 1024 || len(e.SealKey) > 64 {
		return e, fmt.Errorf("%w: MFA enrollment of %q: sealed secret of %d bytes, seal key ID of %d", meta.ErrInvalid, e.Principal, len(e.Sealed), len(e.SealKey))
	}
	e.Enrolled, e.Failures = now, nil
	return e, f.put(b, prefixMFA+e.Principal, e)
}

// mfaFailure appends a wrong code's cluster time to the principal's enrollment, keeping
// only those within meta.MFAFailureWindow (at most meta.MFAFailureLimit of them).
func (f *FSM) mfaFailure(b *pebble.Batch, c command.MFAFailure, now time.Time) (meta.MFAEnrollment, error) {
	var e meta.MFAEnrollment
	raw, ok, err := getCopy(b, prefixMFA+c.By.Name)
	if err != nil {
		return e, err
	}
	if !ok {
		return e, fmt.Errorf("%w: %s has no MFA enrollment", meta.ErrNotFound, c.By)
	}
	if err := f.codec.Unmarshal(raw, &e); err != nil {
		return e, fmt.Errorf("fsm: decode MFA enrollment of %q: %w", c.By.Name, err)
	}
	e.Failures = append(meta.RecentMFAFailures(e.Failures, now), now)
	if n := len(e.Failures); n > meta.MFAFailureLimit {
		e.Failures = e.Failures[n-meta.MFAFailureLimit:]
	}
	return e, f.put(b, prefixMFA+c.By.Name, e)
}

// Approval returns one stored request.
func (f *FSM) Approval(id string) (meta.ApprovalRequest, error) {
	var r meta.ApprovalRequest
	ok, err := f.getValue(prefixApproval+id, &r)
	if err != nil {
		return r, err
	}
	if !ok {
		return r, fmt.Errorf("approval request %s: %w", id, meta.ErrNotFound)
	}
	return r, nil
}

// Approvals returns every stored request, newest first.
func (f *FSM) Approvals() ([]meta.ApprovalRequest, error) {
	out := []meta.ApprovalRequest{}
	err := f.scan(prefixApproval, func(val []byte) error {
		var r meta.ApprovalRequest
		if err := f.codec.Unmarshal(val, &r); err != nil {
			return fmt.Errorf("fsm: decode approval request: %w", err)
		}
		out = append(out, r)
		return nil
	})
	slices.SortFunc(out, func(a, b meta.ApprovalRequest) int { return b.Created.Compare(a.Created) })
	return out, err
}

// ApprovalPolicy returns the stored approval policy; ok is false when none was stored.
func (f *FSM) ApprovalPolicy() (p meta.ApprovalPolicy, ok bool, err error) {
	ok, err = f.getValue(keyApprovalPolicy, &p)
	return p, ok, err
}

// MFA returns a principal's enrollment; ok is false when it has none.
func (f *FSM) MFA(principal string) (meta.MFAEnrollment, bool, error) {
	var e meta.MFAEnrollment
	ok, err := f.getValue(prefixMFA+principal, &e)
	return e, ok, err
}

// MFAEnrolled returns how many principals have enrolled MFA.
func (f *FSM) MFAEnrolled() (int, error) {
	n := 0
	err := f.scan(prefixMFA, func([]byte) error { n++; return nil })
	return n, err
}

// knownApprovalKey reports whether k is a key of this file (snapshot restore).
func knownApprovalKey(k string) bool {
	switch {
	case k == keyApprovalPolicy:
		return true
	case strings.HasPrefix(k, prefixApproval):
		return meta.ValidApprovalID(k[len(prefixApproval):]) == nil
	case strings.HasPrefix(k, prefixMFA):
		return len(k) > len(prefixMFA) && len(k) <= len(prefixMFA)+256
	}
	return false
}
