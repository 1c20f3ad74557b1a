package fsm

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
)

// TestApprovalExpiryAndOnce drives the approval commands with injected cluster time: an
// expired request is never approved and so never executed; the requester cannot decide
// their own; an approval needs an enrolled decider and a step after the last one used; a
// request finishes once; every outcome, refusals included, is in the audit log.
func TestApprovalExpiryAndOnce(t *testing.T) {
	f := open(t, t.TempDir())
	const sec = int64(time.Second)
	alice := meta.Principal{Name: "alice", Role: meta.RoleAdmin}
	bob := meta.Principal{Name: "bob", Role: meta.RoleAdmin}
	idx := uint64(0)
	apply := func(stamp int64, b command.Body) Result {
		idx++
		return result(t, f.Apply(entry(t, idx, stamp, b)))
	}
	req := func(id string) command.RequestApproval {
		return command.RequestApproval{TTL: int64(10 * time.Second), Request: meta.ApprovalRequest{ID: id, Operation: meta.OpVaultDelete,
			Method: "meta.DeleteVault", Body: []byte{0xa0}, Summary: "delete vault v", Vault: "v", Requester: alice}}
	}
	const idA, idB = "ap-00000000000000a1", "ap-00000000000000b2"
	if r := apply(100*sec, command.SetMFA{Enrollment: meta.MFAEnrollment{Principal: "bob", Sealed: []byte{1, 2, 3}, SealKey: "k", LastStep: 5}, By: bob}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := apply(100*sec, command.SetMFA{Enrollment: meta.MFAEnrollment{Principal: "carol", Sealed: []byte{1}}, By: bob}); !errors.Is(r.Err, meta.ErrDenied) {
		t.Fatalf("enrolling another principal: %v, want ErrDenied", r.Err)
	}
	if r := apply(101*sec, req(idA)); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := apply(101*sec, req(idA)); !errors.Is(r.Err, meta.ErrExists) {
		t.Fatalf("the same ID again: %v, want ErrExists", r.Err)
	}
	if r := apply(102*sec, command.DecideApproval{ID: idA, Approve: true, By: alice, Step: 9}); !errors.Is(r.Err, meta.ErrDenied) {
		t.Fatalf("self-approval: %v, want ErrDenied", r.Err)
	}
	if r := apply(102*sec, command.DecideApproval{ID: idA, Approve: true, By: bob, Step: 5}); !errors.Is(r.Err, meta.ErrDenied) || !strings.Contains(r.Err.Error(), "already used") {
		t.Fatalf("a used step: %v, want a replay refusal", r.Err)
	}
	if r := apply(103*sec, command.FinishApproval{ID: idA}); !errors.Is(r.Err, meta.ErrExists) {
		t.Fatalf("finishing a pending request: %v, want ErrExists", r.Err)
	}
	// Cluster time passes the expiry: the approval is refused, nothing can finish it.
	apply(112*sec, command.Tick{Elapsed: 20 * sec}) // lets the cluster clock reach the stamps
	if r := apply(112*sec, command.DecideApproval{ID: idA, Approve: true, By: bob, Step: 6}); !errors.Is(r.Err, meta.ErrInvalid) || !strings.Contains(r.Err.Error(), "expired") {
		t.Fatalf("approving after the expiry: %v, want refused as expired", r.Err)
	}
	if r := apply(112*sec, command.FinishApproval{ID: idA}); !errors.Is(r.Err, meta.ErrExists) {
		t.Fatalf("finishing an expired request: %v, want ErrExists", r.Err)
	}
	a, err := f.Approval(idA)
	if err != nil || a.State != meta.ApprovalPending || a.StateAt(f.Now()) != meta.ApprovalExpired {
		t.Fatalf("expired request stored as %+v (%v), want pending and expired at cluster time", a, err)
	}
	// A fresh one is approved once and finished once.
	if r := apply(113*sec, req(idB)); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := apply(114*sec, command.DecideApproval{ID: idB, Approve: true, By: bob, Step: 7, Reason: "ok"}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := apply(114*sec, command.DecideApproval{ID: idB, Approve: true, By: bob, Step: 8}); !errors.Is(r.Err, meta.ErrExists) {
		t.Fatalf("approving twice: %v, want ErrExists", r.Err)
	}
	if r := apply(115*sec, command.FinishApproval{ID: idB}); r.Err != nil || r.Value.(meta.ApprovalRequest).State != meta.ApprovalExecuted {
		t.Fatalf("finish: %+v", r)
	}
	if r := apply(115*sec, command.FinishApproval{ID: idB}); !errors.Is(r.Err, meta.ErrExists) {
		t.Fatalf("finishing twice: %v, want ErrExists", r.Err)
	}
	es, err := f.AuditLog(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range es {
		got = append(got, e.Principal+" "+e.Action+" "+e.Outcome)
	}
	want := []string{
		"bob mfa enroll ok", "bob mfa enroll refused",
		"alice approval request vault-delete ok", "alice approval request vault-delete refused",
		"alice approval approve refused", "bob approval approve refused",
		"alice approval execute vault-delete refused",
		"bob approval expired (approve refused) refused", "alice approval execute vault-delete refused",
		"alice approval request vault-delete ok", "bob approval approve ok", "bob approval approve refused",
		"alice approval execute vault-delete ok", "alice approval execute vault-delete refused",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("audit log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestMFAFailuresBlockInRaft: wrong codes are kept in the enrollment at cluster time; with
// meta.MFAFailureLimit of them a decision is refused by the FSM itself (whatever a
// lagging leader checked), until the window has passed.
func TestMFAFailuresBlockInRaft(t *testing.T) {
	f := open(t, t.TempDir())
	const sec = int64(time.Second)
	alice := meta.Principal{Name: "alice", Role: meta.RoleAdmin}
	bob := meta.Principal{Name: "bob", Role: meta.RoleAdmin}
	idx := uint64(0)
	apply := func(stamp int64, b command.Body) Result {
		idx++
		return result(t, f.Apply(entry(t, idx, stamp, b)))
	}
	apply(100*sec, command.SetMFA{Enrollment: meta.MFAEnrollment{Principal: "bob", Sealed: []byte{1}, Failures: []time.Time{time.Unix(1, 0)}}, By: bob})
	if e, _, _ := f.MFA("bob"); len(e.Failures) != 0 {
		t.Fatalf("an enrollment brought its own failures: %v", e.Failures)
	}
	if r := apply(100*sec, command.MFAFailure{By: alice}); !errors.Is(r.Err, meta.ErrNotFound) {
		t.Fatalf("failure of an unenrolled principal: %v, want ErrNotFound", r.Err)
	}
	apply(101*sec, command.RequestApproval{TTL: int64(time.Hour), Request: meta.ApprovalRequest{ID: "ap-00000000000000c3", Operation: meta.OpVaultDelete,
		Method: "meta.DeleteVault", Body: []byte{0xa0}, Requester: alice}})
	for i := range meta.MFAFailureLimit + 2 {
		if r := apply(102*sec, command.MFAFailure{By: bob}); r.Err != nil {
			t.Fatalf("failure %d: %v", i, r.Err)
		}
	}
	e, _, _ := f.MFA("bob")
	if len(e.Failures) != meta.MFAFailureLimit || meta.MFABlocked(e, f.Now()) <= 0 {
		t.Fatalf("after %d failures: %d kept, blocked %v", meta.MFAFailureLimit+2, len(e.Failures), meta.MFABlocked(e, f.Now()))
	}
	if r := apply(103*sec, command.DecideApproval{ID: "ap-00000000000000c3", Approve: true, By: bob, Step: 9}); !errors.Is(r.Err, meta.ErrDenied) || !strings.Contains(r.Err.Error(), "too many wrong TOTP codes") {
		t.Fatalf("decision while blocked: %v, want refused", r.Err)
	}
	w := int64(meta.MFAFailureWindow)
	for at := 103 * sec; at < 103*sec+w+2*sec; at += 30 * sec {
		apply(at, command.Tick{Elapsed: 30 * sec}) // lets the cluster clock pass the window
	}
	if r := apply(104*sec+w, command.DecideApproval{ID: "ap-00000000000000c3", Approve: true, By: bob, Step: 10}); r.Err != nil {
		t.Fatalf("decision after the window: %v", r.Err)
	}
	es, _ := f.AuditLog(0, 0)
	refused := 0
	for _, e := range es {
		if e.Action == "mfa code" && e.Outcome == meta.AuditRefused && strings.Contains(e.Reason, "wrong TOTP code") {
			refused++
		}
	}
	if refused != meta.MFAFailureLimit+2 {
		t.Fatalf("%d wrong codes audited, want %d", refused, meta.MFAFailureLimit+2)
	}
}

// TestRequesterStepConsumed: a RequestApproval with the step of the requester's code
// needs an enrolled requester and a step after the last one used (the same record a
// decider's steps use), and records it; one without a step (an entry from before
// requesters gave codes) is applied as it was.
func TestRequesterStepConsumed(t *testing.T) {
	f := open(t, t.TempDir())
	const sec = int64(time.Second)
	alice := meta.Principal{Name: "alice", Role: meta.RoleAdmin}
	idx := uint64(0)
	apply := func(stamp int64, b command.Body) Result {
		idx++
		return result(t, f.Apply(entry(t, idx, stamp, b)))
	}
	req := func(id string, step uint64) command.RequestApproval {
		return command.RequestApproval{TTL: int64(time.Hour), Step: step, Request: meta.ApprovalRequest{ID: id, Operation: meta.OpVaultDelete,
			Method: "meta.DeleteVault", Body: []byte{0xa0}, Summary: "delete vault v", Vault: "v", Requester: alice}}
	}
	if r := apply(100*sec, req("ap-00000000000000a1", 9)); !errors.Is(r.Err, meta.ErrDenied) || !strings.Contains(r.Err.Error(), "no MFA enrollment") {
		t.Fatalf("a step from a requester without MFA: %v, want ErrDenied", r.Err)
	}
	if r := apply(100*sec, command.SetMFA{Enrollment: meta.MFAEnrollment{Principal: "alice", Sealed: []byte{1}, SealKey: "k", LastStep: 5}, By: alice}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := apply(101*sec, req("ap-00000000000000a2", 5)); !errors.Is(r.Err, meta.ErrDenied) || !strings.Contains(r.Err.Error(), "already used") {
		t.Fatalf("the enrollment's step again: %v, want a replay refusal", r.Err)
	}
	if r := apply(101*sec, req("ap-00000000000000a3", 6)); r.Err != nil {
		t.Fatal(r.Err)
	}
	if e, _, _ := f.MFA("alice"); e.LastStep != 6 {
		t.Fatalf("alice's last step %d, want 6", e.LastStep)
	}
	if r := apply(102*sec, req("ap-00000000000000a4", 6)); !errors.Is(r.Err, meta.ErrDenied) {
		t.Fatalf("step 6 again: %v, want a replay refusal", r.Err)
	}
	if r := apply(102*sec, req("ap-00000000000000a5", 0)); r.Err != nil {
		t.Fatalf("a request without a step: %v, want stored as before", r.Err)
	}
	for id, want := range map[string]bool{"ap-00000000000000a1": false, "ap-00000000000000a2": false, "ap-00000000000000a3": true,
		"ap-00000000000000a4": false, "ap-00000000000000a5": true} {
		if _, err := f.Approval(id); (err == nil) != want {
			t.Errorf("request %s stored: %v, want %v", id, err == nil, want)
		}
	}
}
