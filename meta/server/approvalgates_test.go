package server

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/transport/pki"
	"github.com/hashicorp/raft"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
)

// gateFixture is a one-server meta group under the default approval policy with two
// admins enrolled (the rule armed); the leader's wall clock moves on a TOTP step per
// approval so one approver can decide many requests.
type gateFixture struct {
	t          *testing.T
	c          *cluster
	s          *Server
	alice, bob context.Context
	bobKey     *otp.Key
	keys       map[string]*otp.Key // by principal name
	skew       *atomic.Int64
}

func newGateFixture(t *testing.T, tweaks ...func(*Config)) *gateFixture {
	skew := &atomic.Int64{}
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	c := newCluster(t, 1, func(cfg *Config) {
		cfg.Approvals = nil // the production default
		cfg.Now = now
		cfg.GrantKey = make([]byte, 32)
		cfg.SealKeyFile = filepath.Join(cfg.Dir, "seal.key")
		if err := NewSealKeyFile(cfg.SealKeyFile); err != nil {
			t.Fatal(err)
		}
		for _, tw := range tweaks {
			tw(cfg)
		}
	})
	s := c.srv[c.leader()]
	// The leader's loop proposes the initial cluster map on its first tick after the
	// election; the gates below (decommission) read it, and a single-server group can run
	// them all inside that first tick.
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, ok, err := s.fsm.ClusterMap(); err == nil && ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no initial cluster map within 10 s")
		}
		time.Sleep(20 * time.Millisecond) // polling for a state, not synchronising
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	f := &gateFixture{t: t, c: c, s: s, skew: skew, keys: map[string]*otp.Key{},
		alice: meta.WithPrincipal(ctx, meta.Principal{Name: "alice", Role: meta.RoleAdmin}),
		bob:   meta.WithPrincipal(ctx, meta.Principal{Name: "bob", Role: meta.RoleAdmin})}
	for _, who := range []context.Context{f.alice, f.bob} {
		key, err := totp.Generate(totp.GenerateOpts{Issuer: "coffer", AccountName: meta.PrincipalFrom(who).Name})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.EnrollMFA(who, key.Secret(), f.code(key)); err != nil {
			t.Fatal(err)
		}
		f.bobKey = key
		f.keys[meta.PrincipalFrom(who).Name] = key
	}
	return f
}

// req returns who's context carrying a fresh TOTP code of who's authenticator: the
// leader's clock moves on a step first, as a code's step is accepted once.
func (f *gateFixture) req(who context.Context) context.Context {
	f.t.Helper()
	f.skew.Add(int64(31 * time.Second))
	return meta.WithTOTP(who, f.code(f.keys[meta.PrincipalFrom(who).Name]))
}

// code is key's code at the leader's clock.
func (f *gateFixture) code(key *otp.Key) string {
	c, err := totp.GenerateCodeCustom(key.Secret(), f.s.cfg.Now(), totpOpts)
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

// queued checks that err is an approval-required answer for op by alice and returns the ID.
func (f *gateFixture) queued(what string, err error, op string) string {
	f.t.Helper()
	return f.queuedBy(what, err, op, f.alice)
}

func (f *gateFixture) queuedBy(what string, err error, op string, requester context.Context) string {
	f.t.Helper()
	id, ok := meta.ApprovalIDFrom(err)
	if !ok || !errors.Is(err, meta.ErrApprovalRequired) {
		f.t.Fatalf("%s by one admin: %v, want queued for approval", what, err)
	}
	r, err := f.s.fsm.Approval(id)
	name := meta.PrincipalFrom(requester).Name
	if err != nil || r.Operation != op || r.State != meta.ApprovalPending || r.Requester.Name != name {
		f.t.Fatalf("%s: stored request %+v (%v), want %s's pending %s", what, r, err, name, op)
	}
	if _, err := f.s.DecideApproval(requester, id, true, "123456", ""); !errors.Is(err, meta.ErrDenied) {
		f.t.Fatalf("%s: approval by the requester: %v, want ErrDenied", what, err)
	}
	return id
}

// approve has bob approve id with a fresh code and returns the final request.
func (f *gateFixture) approve(id string) meta.ApprovalRequest {
	f.t.Helper()
	f.skew.Add(int64(31 * time.Second)) // the next TOTP step: each step is accepted once
	r, err := f.s.DecideApproval(f.bob, id, true, f.code(f.bobKey), "checked")
	if err != nil {
		f.t.Fatalf("approve %s: %v", id, err)
	}
	return r
}

// TestTwoPersonGates: every operation kind the default approval policy names beyond the
// governance bypass is refused and queued for one admin (the requester cannot approve
// it), and runs once, with its stored parameters, when a second admin approves; what
// the policy does not name (strengthening retention, adding a wrap, revoking a
// non-admin) runs at once.
func TestTwoPersonGates(t *testing.T) {
	f := newGateFixture(t)
	s := f.s
	for _, v := range []meta.VaultID{"del", "pol", "keys"} {
		nv := newVault(v)
		if v == "keys" {
			nv.KeyWraps = nil
			nv.Keys = &meta.VaultKeys{Management: meta.KeyCustomer, Epoch: 1, Wraps: []meta.KeyWrap{
				{ID: "aaaaaaaaaaaaaaaa", Kind: meta.WrapPassphrase, Holder: meta.WrapPassphrase, Recipient: "age1aa", Identity: []byte{2}, Keyring: []byte{1}},
				{ID: "bbbbbbbbbbbbbbbb", Kind: meta.WrapHost, Holder: "web01", Recipient: "age1bb", Keyring: []byte{1}}}}
		}
		if _, err := s.CreateVault(f.alice, nv); err != nil {
			t.Fatalf("create %s: %v", v, err)
		}
	}

	// vault-delete
	_, err := s.DeleteVault(f.req(f.alice), "del", time.Hour, "retired")
	id := f.queued("vault delete", err, meta.OpVaultDelete)
	if v, _ := s.fsm.Vault("del"); v.Deleted != nil {
		t.Fatal("a queued vault delete deleted the vault")
	}
	if r := f.approve(id); r.State != meta.ApprovalExecuted {
		t.Fatalf("approved vault delete: %+v", r)
	}
	if v, _ := s.fsm.Vault("del"); v.Deleted == nil || v.Deleted.By != "alice" || v.Deleted.Reason != "retired" {
		t.Fatalf("after approval the vault is %+v, want deleted by alice as requested", v.Deleted)
	}

	// retention-weaken: pruning where there was none; strengthening runs at once.
	_, err = s.SetVaultPolicy(f.req(f.alice), "pol", meta.VaultPolicy{Keep: meta.Policy{Last: 3}})
	id = f.queued("retention weakening", err, meta.OpPolicyWeaken)
	if r := f.approve(id); r.State != meta.ApprovalExecuted {
		t.Fatalf("approved policy: %+v", r)
	}
	if v, _ := s.fsm.Vault("pol"); v.Retention == nil || v.Retention.Keep.Last != 3 {
		t.Fatalf("policy after approval: %+v", v.Retention)
	}
	if _, err := s.SetVaultPolicy(f.alice, "pol", meta.VaultPolicy{Keep: meta.Policy{Last: 5}}); err != nil {
		t.Fatalf("keeping more: %v, want done at once", err)
	}
	_, err = s.SetVaultPolicy(f.req(f.alice), "pol", meta.VaultPolicy{Keep: meta.Policy{Last: 4}})
	f.queued("keep last lowered", err, meta.OpPolicyWeaken)

	// key-wrap-remove: removing the host wrap (with a new epoch) is gated, adding is not.
	v, _ := s.fsm.Vault("keys")
	next := *v.Keys.Clone()
	next.Wraps, next.Epoch = next.Wraps[:1], 2
	_, err = s.UpdateVaultKeys(f.req(f.alice), "keys", meta.KeysChange{Revision: v.Keys.Revision, Keys: next, Event: "remove wrap", Reason: "host retired"})
	id = f.queued("key wrap removal", err, meta.OpKeyWrapRemove)
	if r := f.approve(id); r.State != meta.ApprovalExecuted {
		t.Fatalf("approved wrap removal: %+v", r)
	}
	if v, _ := s.fsm.Vault("keys"); len(v.Keys.Wraps) != 1 || v.Keys.Epoch != 2 {
		t.Fatalf("keys after approval: %+v", v.Keys)
	}

	// revoke-admin: a principal the cluster issued no certificate to may be an admin.
	_, err = s.RevokeCert(f.req(f.alice), meta.Revocation{Principal: "mallory", Reason: "left"})
	id = f.queued("revocation of an unknown (admin) principal", err, meta.OpRevokeAdmin)
	if r := f.approve(id); r.State != meta.ApprovalExecuted {
		t.Fatalf("approved revocation: %+v", r)
	}
	if rs, _, err := s.fsm.Revocations(); err != nil || !revoked(rs, "mallory") {
		t.Fatalf("revocations after approval: %+v (%v)", rs, err)
	}

	// meta-membership: queued; executed once (the test group cannot reach m9, so the
	// operation itself refuses and the request ends failed, never pending).
	_, err = s.ChangeMeta(f.req(f.alice), meta.MetaChange{Action: meta.MetaAdd, ID: "m9", Addr: "m9", Reason: "grow"})
	id = f.queued("meta add", err, meta.OpMetaMembership)
	if r := f.approve(id); r.State != meta.ApprovalExecuted && r.State != meta.ApprovalFailed {
		t.Fatalf("approved meta add: %+v", r)
	}

	// decommission: a chunk node's.
	_, err = s.NodeAction(f.req(f.alice), meta.NodeActionRequest{Node: "c1", Action: meta.NodeDecommission, Reason: "old disk"})
	id = f.queued("decommission", err, meta.OpDecommission)
	if m, ok, err := s.fsm.ClusterMap(); err != nil || !ok || len(m.Nodes) == 0 || m.Nodes[0].State != "active" {
		t.Fatalf("a queued decommission changed the node: %+v", m)
	}
	if r := f.approve(id); r.State != meta.ApprovalExecuted && r.State != meta.ApprovalFailed {
		t.Fatalf("approved decommission: %+v", r)
	}
	// A drain is not gated.
	if _, err := s.NodeAction(f.alice, meta.NodeActionRequest{Node: "c1", Action: meta.NodeDrain}); errors.Is(err, meta.ErrApprovalRequired) {
		t.Fatalf("drain: %v, want not gated", err)
	}

	// Every request executed once: one execute entry each, all audited.
	es, err := s.AuditLog(f.alice, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	executes := map[string]int{}
	for _, e := range es {
		if strings.HasPrefix(e.Action, "approval execute ") {
			executes[e.Target]++
		}
	}
	rs, _ := s.ListApprovals(f.alice)
	for _, r := range rs {
		want := 0
		if r.State == meta.ApprovalExecuted || r.State == meta.ApprovalFailed {
			want = 1
		}
		if executes[r.ID] != want {
			t.Errorf("request %s (%s, %s) executed %d times in the audit log, want %d", r.ID, r.Operation, r.State, executes[r.ID], want)
		}
	}
}

// TestGatedRequestNeedsRequesterTOTP (issue 17): a thief of an enrolled admin's
// certificate without the authenticator cannot queue a gated operation. A request
// without the requester's TOTP code is refused and nothing is stored; a wrong code is
// refused and counted in Raft as the approver's are; a current code queues the request,
// and the same code again is a replay, refused.
func TestGatedRequestNeedsRequesterTOTP(t *testing.T) {
	f := newGateFixture(t)
	s := f.s
	if _, err := s.CreateVault(f.alice, newVault("del")); err != nil {
		t.Fatal(err)
	}
	pending := func() int {
		t.Helper()
		rs, err := s.fsm.Approvals()
		if err != nil {
			t.Fatal(err)
		}
		return len(rs)
	}

	// The stolen certificate alone.
	_, err := s.DeleteVault(f.alice, "del", time.Hour, "stolen certificate")
	if !errors.Is(err, meta.ErrDenied) || errors.Is(err, meta.ErrApprovalRequired) || !strings.Contains(err.Error(), "TOTP") {
		t.Fatalf("gated request without the requester's TOTP code: %v, want refused", err)
	}
	// A guessed code: a code of alice's secret an hour away is wrong now.
	wrong, err := totp.GenerateCodeCustom(f.keys["alice"].Secret(), s.cfg.Now().Add(time.Hour), totpOpts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteVault(meta.WithTOTP(f.alice, wrong), "del", time.Hour, "guessed"); !errors.Is(err, meta.ErrDenied) || errors.Is(err, meta.ErrApprovalRequired) {
		t.Fatalf("gated request with a wrong code: %v, want refused", err)
	}
	if e, _, _ := s.fsm.MFA("alice"); len(e.Failures) != 1 {
		t.Fatalf("alice's recorded wrong codes: %v, want the one", e.Failures)
	}
	if n := pending(); n != 0 {
		t.Fatalf("%d requests stored after refusals, want none", n)
	}

	// Alice with her authenticator.
	ctx := f.req(f.alice)
	_, err = s.DeleteVault(ctx, "del", time.Hour, "retired")
	f.queued("vault delete with the requester's code", err, meta.OpVaultDelete)
	if _, err := s.DeleteVault(ctx, "del", time.Hour, "again"); !errors.Is(err, meta.ErrDenied) || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("the same code again: %v, want a refused replay", err)
	}
	if n := pending(); n != 1 {
		t.Fatalf("%d requests stored, want 1", n)
	}
	es, err := s.AuditLog(f.alice, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	refused := 0
	for _, e := range es {
		if e.Principal == "alice" && e.Outcome == meta.AuditRefused && (e.Action == "mfa code" || strings.HasPrefix(e.Action, "approval request")) {
			refused++
		}
	}
	if refused < 3 {
		t.Fatalf("%d audited refusals of alice's codes, want the missing, wrong and replayed ones", refused)
	}
}

func revoked(rs []meta.Revocation, principal string) bool {
	for _, r := range rs {
		if r.Principal == principal {
			return true
		}
	}
	return false
}

// TestTwoPersonLockedRestore: with the vault policy's ApproveLockedRestore, a restore
// grant on a held (or compliance-locked) snapshot is queued for a second admin; the
// approval does not hand the grant to the approver: the requester's next call consumes
// it once and gets the grant, and another principal cannot use it. Turning the setting
// off is a retention weakening.
func TestTwoPersonLockedRestore(t *testing.T) {
	f := newGateFixture(t)
	s := f.s
	if _, err := s.CreateVault(f.alice, newVault("lr")); err != nil {
		t.Fatal(err)
	}
	snap, err := s.CommitSnapshot(f.alice, storedSnapshot(t, f.c.chunks, "lr", 3, 0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetHold(f.alice, "lr", snap.ID, true, "litigation"); err != nil {
		t.Fatal(err)
	}
	oncall := meta.WithPrincipal(f.alice, meta.Principal{Name: "oncall", Role: meta.RoleRestoreOperator, Vaults: []meta.VaultID{"lr"}})
	if _, _, err := s.IssueGrant(oncall, "lr", snap.ID, time.Minute); err != nil {
		t.Fatalf("grant without the vault setting: %v", err)
	}
	if _, err := s.SetVaultPolicy(f.alice, "lr", meta.VaultPolicy{ApproveLockedRestore: true}); err != nil {
		t.Fatalf("asking for approvals (stronger): %v, want done at once", err)
	}
	_, _, err = s.IssueGrant(oncall, "lr", snap.ID, time.Minute)
	id := f.queuedBy("grant on a held snapshot", err, meta.OpLockedRestore, oncall)
	r := f.approve(id)
	if r.State != meta.ApprovalApproved {
		t.Fatalf("approved locked restore: %+v, want approved (deferred to the requester)", r)
	}
	// Another admin's grant is a request of its own.
	_, _, err = s.IssueGrant(f.req(f.alice), "lr", snap.ID, time.Minute)
	f.queued("alice's grant", err, meta.OpLockedRestore)
	tok, g, err := s.IssueGrant(oncall, "lr", snap.ID, time.Minute)
	if err != nil || len(tok) == 0 || g.Principal != "oncall" {
		t.Fatalf("requester's grant after approval: %+v (%v)", g, err)
	}
	if r, _ := s.fsm.Approval(id); r.State != meta.ApprovalExecuted {
		t.Fatalf("consumed request is %s, want executed", r.State)
	}
	_, _, err = s.IssueGrant(oncall, "lr", snap.ID, time.Minute)
	f.queuedBy("a second grant (the approval was used)", err, meta.OpLockedRestore, oncall)
	_, err = s.SetVaultPolicy(f.req(f.alice), "lr", meta.VaultPolicy{})
	f.queued("turning ApproveLockedRestore off", err, meta.OpPolicyWeaken)
}

// TestMFARateLimitSurvivesLeaderChange: wrong TOTP codes are counted in Raft, so after
// meta.MFAFailureLimit of them on one leader the next leader refuses even a right code.
func TestMFARateLimitSurvivesLeaderChange(t *testing.T) {
	seal := filepath.Join(t.TempDir(), "seal.key")
	if err := NewSealKeyFile(seal); err != nil {
		t.Fatal(err)
	}
	key, _ := ReadSealKeyFile(seal)
	c := newCluster(t, 3, func(cfg *Config) {
		cfg.SealKeyFile = filepath.Join(cfg.Dir, "seal.key")
		if err := WriteSealKeyFile(cfg.SealKeyFile, key); err != nil {
			t.Fatal(err)
		}
	})
	li := c.leader()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bob := meta.WithPrincipal(ctx, meta.Principal{Name: "bob", Role: meta.RoleAdmin})
	k, err := totp.Generate(totp.GenerateOpts{Issuer: "coffer", AccountName: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	now := func() string {
		code, _ := totp.GenerateCodeCustom(k.Secret(), time.Now(), totpOpts)
		return code
	}
	if err := c.srv[li].EnrollMFA(bob, k.Secret(), now()); err != nil {
		t.Fatal(err)
	}
	for i := range meta.MFAFailureLimit {
		if _, err := c.srv[li].checkTOTP(bob, meta.PrincipalFrom(bob), "000000"); !errors.Is(err, meta.ErrDenied) || !strings.Contains(err.Error(), "wrong TOTP code") {
			t.Fatalf("wrong code %d: %v", i+1, err)
		}
	}
	if e, _, err := c.srv[li].fsm.MFA("bob"); err != nil || len(e.Failures) != meta.MFAFailureLimit {
		t.Fatalf("failures recorded: %v (%v), want %d", e.Failures, err, meta.MFAFailureLimit)
	}
	next := (li + 1) % 3
	if err := c.srv[li].raft.LeadershipTransferToServer(raft.ServerID(addrOf(next)), raft.ServerAddress(addrOf(next))).Error(); err != nil {
		t.Fatal(err)
	}
	nl := c.leader()
	if nl == li {
		t.Fatalf("leadership stayed on %s", addrOf(li))
	}
	if err := c.srv[nl].raft.Barrier(10 * time.Second).Error(); err != nil { // the new leader has applied the log
		t.Fatal(err)
	}
	// Future codes would be valid; the block is what refuses them.
	if _, err := c.srv[nl].checkTOTP(bob, meta.PrincipalFrom(bob), now()); !errors.Is(err, meta.ErrDenied) || !strings.Contains(err.Error(), "too many wrong TOTP codes") {
		t.Fatalf("right code on the new leader %s after %d wrong ones: %v, want rate-limited", addrOf(nl), meta.MFAFailureLimit, err)
	}
}

// TestTwoPersonIssueAdmin: the attack is one admin minting a second admin identity,
// enrolling its MFA and approving their own requests. Once the rule is armed an admin
// certificate is queued; the approval does not sign it (the requester holds the key);
// the requester's identical request then gets it once, and a changed request (another
// CSR) is a new request. Restore-operator certificates are not gated.
func TestTwoPersonIssueAdmin(t *testing.T) {
	ca, err := pki.NewCA("gate test root", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	f := newGateFixture(t, func(cfg *Config) { cfg.CA = ca })
	s := f.s
	csr := func(name string) []byte {
		der, _, err := pki.NewKeyAndCSR(name)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	if res, err := s.IssueCert(f.alice, meta.IssueCertRequest{Role: meta.CertRoleRestore, Principal: "oncall", CSR: csr("oncall")}); err != nil || len(res.Cert) == 0 {
		t.Fatalf("restore-operator certificate: %v, want issued at once", err)
	}
	req := meta.IssueCertRequest{Role: meta.CertRoleAdmin, Principal: "mallory", CSR: csr("mallory")}
	_, err = s.IssueCert(f.req(f.alice), req)
	id := f.queued("admin certificate", err, meta.OpIssueAdmin)
	for _, c := range mustIssued(t, s) {
		if c.Principal == "mallory" {
			t.Fatalf("a queued admin certificate was signed: %+v", c)
		}
	}
	if r := f.approve(id); r.State != meta.ApprovalApproved {
		t.Fatalf("approved issuance: %+v, want approved (deferred to the requester)", r)
	}
	// Another admin's identical request is not the approved one.
	_, err = s.IssueCert(f.req(f.bob), req)
	f.queuedBy("bob's identical request", err, meta.OpIssueAdmin, f.bob)
	// The requester with another key for the same name is a new request.
	other := req
	other.CSR = csr("mallory")
	_, err = s.IssueCert(f.req(f.alice), other)
	f.queued("the same name with another key", err, meta.OpIssueAdmin)
	res, err := s.IssueCert(f.alice, req)
	if err != nil || len(res.Cert) == 0 || res.Record.Principal != "mallory" || res.Record.Role != string(meta.RoleAdmin) {
		t.Fatalf("requester's issuance after approval: %+v (%v)", res.Record, err)
	}
	if r, _ := s.fsm.Approval(id); r.State != meta.ApprovalExecuted {
		t.Fatalf("consumed request is %s, want executed", r.State)
	}
	_, err = s.IssueCert(f.req(f.alice), req)
	f.queued("the same request again (the approval was used)", err, meta.OpIssueAdmin)
}

func mustIssued(t *testing.T, s *Server) []meta.IssuedCert {
	t.Helper()
	cs, err := s.fsm.IssuedCerts()
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// TestTwoPersonHostDecommission: a host decommission by one admin is queued whole
// (meta.OpDecommission): nothing is retired or revoked until a second admin approves,
// and the approval retires the host and revokes its certificates once.
func TestTwoPersonHostDecommission(t *testing.T) {
	f := newGateFixture(t)
	s := f.s
	retired := func() bool {
		as, err := s.fsm.Agents()
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range as {
			if a.Host == "web01" && a.Retired != nil {
				return true
			}
		}
		return false
	}
	revoked := func() int {
		rs, _, err := s.fsm.Revocations()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, r := range rs {
			if r.Principal == "web01" {
				n++
			}
		}
		return n
	}
	_, err := s.DecommissionHost(f.req(f.alice), meta.HostDecommission{Host: "web01", Reason: "retired rack"})
	id := f.queued("host decommission", err, meta.OpDecommission)
	if retired() || revoked() != 0 {
		t.Fatalf("a queued decommission acted: retired %v, revocations %d", retired(), revoked())
	}
	if r := f.approve(id); r.State != meta.ApprovalExecuted {
		t.Fatalf("approved decommission: %+v, want executed", r)
	}
	if !retired() || revoked() != 1 {
		t.Fatalf("after approval: retired %v, revocations %d, want retired and 1", retired(), revoked())
	}
}
