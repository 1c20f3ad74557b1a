package node_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/client/clientconfig"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/node"
	"github.com/cofferhq/coffer/node/nodetest"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
)

// totpCode is the code of key's secret at t (RFC 6238 defaults, as the meta servers check).
func totpCode(t *testing.T, key *otp.Key, at time.Time) string {
	t.Helper()
	code, err := totp.GenerateCodeCustom(key.Secret(), at, totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// enrollMFA enrolls a fresh TOTP secret for the admin behind svc, confirmed with the
// current code, and returns the key.
func enrollMFA(t *testing.T, svc meta.ApprovalService, name string) *otp.Key {
	t.Helper()
	key, err := totp.Generate(totp.GenerateOpts{Issuer: "coffer", AccountName: name})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, time.Minute)
	if err := svc.EnrollMFA(ctx, key.Secret(), "000000"+"0"); !errors.Is(err, meta.ErrDenied) {
		t.Fatalf("%s: enrolling with a malformed code: %v, want ErrDenied", name, err)
	}
	if err := svc.EnrollMFA(ctx, key.Secret(), totpCode(t, key, time.Now())); err != nil {
		t.Fatalf("%s: enroll MFA: %v", name, err)
	}
	if err := svc.EnrollMFA(ctx, key.Secret(), totpCode(t, key, time.Now())); !errors.Is(err, meta.ErrExists) {
		t.Fatalf("%s: enrolling again: %v, want ErrExists", name, err)
	}
	return key
}

// TestTwoPersonRuleGovernanceBypass is issue 17's two-person acceptance over loopback
// QUIC, every call entering through a follower: a governance bypass by one admin is
// refused and queued (the snapshot stays); the same admin cannot approve it; a second
// admin with a valid TOTP code executes it exactly once (a second approval is refused,
// one deletion in the audit log); a replayed code is refused; wrong codes are
// rate-limited (then even a right one is refused); an expired request never executes; a
// restore operator can neither list nor approve; every step is in the audit log.
func TestTwoPersonRuleGovernanceBypass(t *testing.T) {
	const ttl = 20 * time.Second
	c := nodetest.New(t, nodetest.Opts{TwoPerson: true, ApprovalTTL: ttl})
	f, err := clientconfig.Load(node.DevClientConfig(c.Dir))
	if err != nil {
		t.Fatal(err)
	}
	metas := followerFirst(t, c, f.Meta)
	connect := func(name string, role transport.Role) client.Config {
		return nodetest.ConnectWith(t, identityFor(t, c, pki.IssueRequest{CommonName: name, Role: role}), metas, c.ChunkAddrs())
	}
	alice, bob, carol := connect("alice", transport.RoleAdmin), connect("bob", transport.RoleAdmin), connect("carol", transport.RoleAdmin)
	dave := connect("dave", transport.RoleAdmin)
	oncall := connect("oncall", transport.RoleRestore)
	aliceAp, bobAp, carolAp := alice.Meta.(meta.ApprovalService), bob.Meta.(meta.ApprovalService), carol.Meta.(meta.ApprovalService)
	aliceRet := alice.Meta.(meta.RetentionService)
	ctx := ctxT(t, 4*time.Minute)

	if _, err := client.InitVault(ctx, alice, "fin", passphrase); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "src")
	nodetest.MakeTree(t, src, nodetest.TreeOpts{Seed: 17})
	a, err := client.Open(ctx, alice, "fin", passphrase)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	s1, s2 := backup(t, a, src), backup(t, a, src)
	until := time.Now().Add(time.Hour).UTC()
	for _, s := range []meta.Snapshot{s1, s2} {
		if _, err := aliceRet.SetLock(ctx, "fin", s.ID, meta.Lock{Mode: meta.Governance, Until: until}, meta.Bypass{}); err != nil {
			t.Fatal(err)
		}
	}
	aliceKey := enrollMFA(t, aliceAp, "alice")
	bobKey := enrollMFA(t, bobAp, "bob")
	carolKey := enrollMFA(t, carolAp, "carol")
	daveKey := enrollMFA(t, dave.Meta.(meta.ApprovalService), "dave")
	exists := func(s meta.Snapshot) bool {
		_, err := alice.Meta.GetSnapshot(ctx, "fin", s.ID)
		if err != nil && !errors.Is(err, meta.ErrNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}

	// One admin's governance bypass without her TOTP code (her certificate alone) is
	// refused, and nothing is queued.
	bypass := meta.Bypass{Governance: true, Reason: "ticket 4711"}
	_, err = aliceRet.DeleteSnapshots(ctx, "fin", []meta.SnapshotID{s1.ID}, bypass)
	if _, queued := meta.ApprovalIDFrom(err); queued || !errors.Is(err, meta.ErrDenied) || !strings.Contains(err.Error(), "TOTP code") {
		t.Fatalf("governance bypass without the requester's code: %v, want refused", err)
	}
	// With her code (the next step: enrollment used this one) it is refused and queued.
	_, err = aliceRet.DeleteSnapshots(meta.WithTOTP(ctx, totpCode(t, aliceKey, time.Now().Add(30*time.Second))), "fin", []meta.SnapshotID{s1.ID}, bypass)
	id1, ok := meta.ApprovalIDFrom(err)
	if !ok || !errors.Is(err, meta.ErrDenied) || !strings.Contains(err.Error(), "approval required: request ID") {
		t.Fatalf("governance bypass by one admin: %v, want approval required", err)
	}
	if !exists(s1) {
		t.Fatal("a queued bypass deleted the snapshot")
	}
	rs, err := bobAp.ListApprovals(ctx)
	if err != nil || len(rs) != 1 || rs[0].ID != id1 || rs[0].State != meta.ApprovalPending || rs[0].Requester.Name != "alice" ||
		rs[0].Operation != meta.OpGovernanceBypass || rs[0].Vault != "fin" {
		t.Fatalf("approvals listed: %+v (%v), want alice's pending request %s", rs, err, id1)
	}
	if got := rs[0].Expires.Sub(rs[0].Created); got != ttl {
		t.Fatalf("request expires %v after creation, want %v", got, ttl)
	}

	// A restore operator can neither list nor decide.
	if _, err := oncall.Meta.(meta.ApprovalService).ListApprovals(ctx); !errors.Is(err, meta.ErrDenied) {
		t.Fatalf("restore operator listing approvals: %v, want ErrDenied", err)
	}
	if _, err := oncall.Meta.(meta.ApprovalService).DecideApproval(ctx, id1, true, "123456", ""); !errors.Is(err, meta.ErrDenied) {
		t.Fatalf("restore operator approving: %v, want ErrDenied", err)
	}

	// The requester cannot approve their own request (with or without a code).
	if _, err := aliceAp.DecideApproval(ctx, id1, true, "123456", ""); !errors.Is(err, meta.ErrDenied) || !strings.Contains(err.Error(), "cannot decide") {
		t.Fatalf("self-approval: %v, want ErrDenied naming the requester", err)
	}
	if !exists(s1) {
		t.Fatal("a refused self-approval deleted the snapshot")
	}

	// A second admin with a valid code executes it, once.
	code := totpCode(t, bobKey, time.Now().Add(30*time.Second)) // the next step: enrollment used this one
	r, err := bobAp.DecideApproval(ctx, id1, true, code, "checked with legal")
	if err != nil || r.State != meta.ApprovalExecuted || r.Decider == nil || r.Decider.Name != "bob" {
		t.Fatalf("second admin's approval: %+v, %v; want executed", r, err)
	}
	if exists(s1) {
		t.Fatal("approved bypass did not delete the snapshot")
	}
	if _, err := carolAp.DecideApproval(ctx, id1, true, totpCode(t, carolKey, time.Now().Add(30*time.Second)), ""); !errors.Is(err, meta.ErrExists) {
		t.Fatalf("approving an executed request again: %v, want ErrExists", err)
	}

	// A replayed code is refused. (Another admin asks: alice's next code is a step away.)
	_, err = dave.Meta.(meta.RetentionService).DeleteSnapshots(meta.WithTOTP(ctx, totpCode(t, daveKey, time.Now().Add(30*time.Second))),
		"fin", []meta.SnapshotID{s2.ID}, bypass)
	id2, ok := meta.ApprovalIDFrom(err)
	if !ok || id2 == id1 {
		t.Fatalf("second bypass: %v, want a new approval request", err)
	}
	if _, err := bobAp.DecideApproval(ctx, id2, true, code, ""); !errors.Is(err, meta.ErrDenied) || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("replayed TOTP code: %v, want refused as a replay", err)
	}

	// Wrong codes are rate-limited: after the limit even the right code is refused.
	for i := range meta.MFAFailureLimit {
		if _, err := carolAp.DecideApproval(ctx, id2, true, "000000", ""); !errors.Is(err, meta.ErrDenied) || !strings.Contains(err.Error(), "wrong TOTP code") {
			t.Fatalf("wrong code %d: %v, want refused", i+1, err)
		}
	}
	if _, err := carolAp.DecideApproval(ctx, id2, true, totpCode(t, carolKey, time.Now().Add(30*time.Second)), ""); !errors.Is(err, meta.ErrDenied) || !strings.Contains(err.Error(), "too many wrong TOTP codes") {
		t.Fatalf("right code after %d wrong ones: %v, want rate-limited", meta.MFAFailureLimit, err)
	}

	// The request expires (cluster time) and never executes.
	deadline := time.Now().Add(2 * ttl)
	for {
		rs, err := bobAp.ListApprovals(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rs[0].ID == id2 && rs[0].State == meta.ApprovalExpired {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("request %s not expired after %v: %+v", id2, 2*ttl, rs[0])
		}
		time.Sleep(200 * time.Millisecond) // polling the cluster clock's progress
	}
	if _, err := bobAp.DecideApproval(ctx, id2, true, totpCode(t, bobKey, time.Now().Add(30*time.Second)), ""); !errors.Is(err, meta.ErrInvalid) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("approving an expired request: %v, want refused as expired", err)
	}
	if !exists(s2) {
		t.Fatal("an expired request executed")
	}

	// Every step is in the audit log, the deletion exactly once.
	es, err := aliceRet.AuditLog(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	type want struct{ principal, action, outcome, target, reason string }
	wants := []want{
		{"alice", "approval request governance-bypass", meta.AuditRefused, "alice", "TOTP code"},
		{"alice", "approval request governance-bypass", meta.AuditOK, id1, "ticket 4711"},
		{"alice", "approval approve", meta.AuditRefused, id1, "cannot decide"},
		{"bob", "approval approve", meta.AuditOK, id1, "checked with legal"},
		{"alice", "snapshot delete (governance bypass)", meta.AuditOK, s1.ID.String(), "ticket 4711"},
		{"alice", "approval execute governance-bypass", meta.AuditOK, id1, "approved by bob"},
		{"carol", "approval approve", meta.AuditRefused, id1, "not pending"},
		{"dave", "approval request governance-bypass", meta.AuditOK, id2, ""},
		{"bob", "approval approve", meta.AuditRefused, id2, "already used"},
		{"carol", "mfa code", meta.AuditRefused, "carol", "wrong TOTP code"},
		{"carol", "mfa code", meta.AuditRefused, "carol", "too many wrong TOTP codes"},
		{"bob", "approval expired (approve refused)", meta.AuditRefused, id2, "expired"},
	}
	next := 0
	deletions := 0
	for _, e := range es {
		if strings.HasPrefix(e.Action, "snapshot delete") && e.Outcome == meta.AuditOK {
			deletions++
		}
		if next < len(wants) {
			w := wants[next]
			if e.Principal == w.principal && e.Action == w.action && e.Outcome == w.outcome &&
				(w.target == "" || strings.Contains(e.Target, w.target)) && strings.Contains(e.Reason, w.reason) {
				next++
			}
		}
	}
	if next < len(wants) {
		for _, e := range es {
			t.Logf("audit: %+v", e)
		}
		t.Fatalf("audit log lacks (in order) %+v", wants[next])
	}
	// The restore operator's refusals by the authorization table are recorded
	// asynchronously, so their place in the log is not fixed: only their presence is.
	for _, action := range []string{"approval list", "approval approve"} {
		found := false
		for _, e := range es {
			found = found || (e.Principal == "oncall" && e.Action == action && e.Outcome == meta.AuditRefused)
		}
		if !found {
			t.Fatalf("audit log lacks oncall's refused %q", action)
		}
	}
	if deletions != 1 {
		t.Fatalf("%d successful snapshot deletions in the audit log, want exactly 1", deletions)
	}
}
