package server

import (
	"context"
	"fmt"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
)

// Gates of the two-person rule beyond the governance bypass (issue 17, step 6): each is
// called by its operation on the leader after the caller's own checks and before the
// operation's entry is proposed; it answers *meta.ApprovalRequiredError when the request
// was stored, nil when the operation runs now (see gate).

// Methods of stored requests, besides those in approval.go.
const (
	apSetVaultPolicy  = "meta.SetVaultPolicy"
	apNodeAction      = "meta.NodeAction"
	apUpdateVaultKeys = "meta.UpdateVaultKeys"
)

type (
	apSetVaultPolicyArgs struct {
		Vault  meta.VaultID     `cbor:"vault"`
		Policy meta.VaultPolicy `cbor:"policy"`
	}
	apNodeActionArgs struct {
		Req meta.NodeActionRequest `cbor:"req"`
	}
	apUpdateVaultKeysArgs struct {
		Vault  meta.VaultID    `cbor:"vault"`
		Change meta.KeysChange `cbor:"change"`
	}
)

// gateDeleteVault: vault delete (any recovery window) is meta.OpVaultDelete.
func (s *Server) gateDeleteVault(ctx context.Context, id meta.VaultID, window time.Duration, reason string) error {
	if _, err := s.fsm.Vault(id); err != nil {
		return nil // nothing to approve: the operation refuses (and audits) it
	}
	return s.gate(ctx, meta.OpVaultDelete, apDeleteVault, apDeleteVaultArgs{Vault: id, Window: int64(window), Reason: reason}, id,
		fmt.Sprintf("delete vault %s (recovery window %v): %s", id, window, reason))
}

// gateVaultPolicy: a retention policy that keeps less or locks shorter
// (meta.PolicyWeakens) is meta.OpPolicyWeaken.
func (s *Server) gateVaultPolicy(ctx context.Context, id meta.VaultID, p meta.VaultPolicy) error {
	v, err := s.fsm.Vault(id)
	if err != nil || meta.ValidateVaultPolicy(p) != nil {
		return nil // the operation refuses (and audits) it
	}
	weaker, why := meta.PolicyWeakens(v.Retention, p)
	if !weaker {
		return nil
	}
	return s.gate(ctx, meta.OpPolicyWeaken, apSetVaultPolicy, apSetVaultPolicyArgs{Vault: id, Policy: p}, id,
		fmt.Sprintf("retention policy of %s weakened: %s", id, why))
}

// gateRevokeCert: revoking an admin's certificate (by serial of an admin certificate the
// cluster issued, or by the name of a principal holding one) is meta.OpRevokeAdmin. A
// serial or principal the cluster has no record of (a certificate signed on the CA host,
// as the first admin's) counts as an admin's: the cluster cannot tell its role.
func (s *Server) gateRevokeCert(ctx context.Context, r meta.Revocation) error {
	admin, err := s.revokesAdmin(r)
	if err != nil || !admin {
		return err
	}
	target := r.Serial
	if target == "" {
		target = "principal " + r.Principal
	}
	return s.gate(ctx, meta.OpRevokeAdmin, apRevokeCert, apRevokeCertArgs{Revocation: r}, "",
		fmt.Sprintf("revoke admin certificate %s: %s", target, r.Reason))
}

// revokesAdmin reports whether r may revoke an admin's certificate: it names an admin
// certificate the cluster issued (by serial or principal), or a serial or principal the
// cluster has no record of (its role cannot be told).
func (s *Server) revokesAdmin(r meta.Revocation) (bool, error) {
	certs, err := s.fsm.IssuedCerts()
	if err != nil {
		return false, err
	}
	known, admin := false, false
	for _, c := range certs {
		if (r.Serial != "" && c.Serial == r.Serial) || (r.Principal != "" && c.Principal == r.Principal) {
			known = true
			admin = admin || c.Role == string(meta.RoleAdmin)
		}
	}
	return !known || admin, nil
}

// apDecommissionHost is a host decommission (meta.OpDecommission, or meta.OpRevokeAdmin
// when the host's name may be an admin's: decommissioning revokes the principal's
// certificates). The whole decommission is stored, so the approval retires the host and
// revokes its certificates together.
const apDecommissionHost = "meta.DecommissionHost"

type apDecommissionHostArgs struct {
	Decommission meta.HostDecommission `cbor:"decommission"`
}

// gateDecommissionHost: host decommission is meta.OpDecommission; if the policy does not
// name that but the host's name may be an admin's, it is meta.OpRevokeAdmin.
func (s *Server) gateDecommissionHost(ctx context.Context, d meta.HostDecommission) error {
	pol, err := s.approvalPolicy()
	if err != nil {
		return err
	}
	op := meta.OpDecommission
	if !pol.Requires(op) {
		admin, err := s.revokesAdmin(meta.Revocation{Principal: d.Host})
		if err != nil || !admin {
			return err
		}
		op = meta.OpRevokeAdmin
	}
	return s.gate(ctx, op, apDecommissionHost, apDecommissionHostArgs{Decommission: d}, "",
		fmt.Sprintf("decommission host %s (keep for %v, rollback %v): %s", d.Host, d.KeepFor, d.Rollback, d.Reason))
}

// gateChangeMeta: adding or removing a meta server is meta.OpMetaMembership.
func (s *Server) gateChangeMeta(ctx context.Context, req meta.MetaChange) error {
	if req.ID == "" || (req.Action != meta.MetaAdd && req.Action != meta.MetaRemove) {
		return nil // the operation refuses (and audits) it
	}
	return s.gate(ctx, meta.OpMetaMembership, apChangeMeta, apChangeMetaArgs{Change: req}, "",
		fmt.Sprintf("meta %s %s %s: %s", req.Action, req.ID, req.Addr, req.Reason))
}

// gateNodeAction: decommissioning a chunk node is meta.OpDecommission.
func (s *Server) gateNodeAction(ctx context.Context, req meta.NodeActionRequest) error {
	if req.Action != meta.NodeDecommission {
		return nil
	}
	return s.GateDecommission(ctx, apNodeAction, apNodeActionArgs{Req: req}, fmt.Sprintf("decommission node %s: %s", req.Node, req.Reason))
}

// GateDecommission stores a decommission (meta.OpDecommission) for a second admin's
// approval when the policy names it: method names the operation (a case of execute) and
// args its canonical parameters. Operations that decommission (chunk nodes here, hosts
// elsewhere) call it after their own checks; nil means: run now.
func (s *Server) GateDecommission(ctx context.Context, method string, args any, summary string) error {
	return s.gate(ctx, meta.OpDecommission, method, args, "", summary)
}

// gateVaultKeys: removing a key wrap or switching key management
// (meta.KeysChangeGated) is meta.OpKeyWrapRemove. A backup agent's change (it may only
// add wraps and rotate, meta.CheckKeysChange) is never gated.
func (s *Server) gateVaultKeys(ctx context.Context, vault meta.VaultID, c meta.KeysChange) error {
	v, err := s.fsm.Vault(vault)
	if err != nil {
		return nil // the operation refuses (and audits) it
	}
	gated, why := meta.KeysChangeGated(v.Keys, c.Keys)
	if !gated {
		return nil
	}
	return s.gate(ctx, meta.OpKeyWrapRemove, apUpdateVaultKeys, apUpdateVaultKeysArgs{Vault: vault, Change: c}, vault,
		fmt.Sprintf("vault keys %s of %s: %s: %s", c.Event, vault, why, c.Reason))
}

// executeGated runs the stored operations of this file; ok is false for other methods.
func (s *Server) executeGated(ctx context.Context, r meta.ApprovalRequest, dec func(any) error) (ok bool, err error) {
	switch r.Method {
	case apSetVaultPolicy:
		var a apSetVaultPolicyArgs
		if err := dec(&a); err != nil {
			return true, err
		}
		_, err = s.SetVaultPolicy(ctx, a.Vault, a.Policy)
	case apNodeAction:
		var a apNodeActionArgs
		if err := dec(&a); err != nil {
			return true, err
		}
		_, err = s.NodeAction(ctx, a.Req)
	case apUpdateVaultKeys:
		var a apUpdateVaultKeysArgs
		if err := dec(&a); err != nil {
			return true, err
		}
		_, err = s.UpdateVaultKeys(ctx, a.Vault, a.Change)
	case apDecommissionHost:
		var a apDecommissionHostArgs
		if err := dec(&a); err != nil {
			return true, err
		}
		_, err = s.DecommissionHost(ctx, a.Decommission)
	default:
		return false, nil
	}
	return true, err
}

// apIssueGrant is a restore grant on a locked or held snapshot (meta.OpLockedRestore). It
// is deferred: the approval does not run it (the grant must reach the requester, not the
// approver); the requester's next IssueGrant for the same snapshot, before the request
// expires, consumes the approval (FinishApproval, once) and receives the grant.
const apIssueGrant = "meta.IssueGrant"

type apIssueGrantArgs struct {
	Vault    meta.VaultID    `cbor:"vault"`
	Snapshot meta.SnapshotID `cbor:"snapshot"`
}

// deferredMethod reports whether an approved request of method runs when its requester
// asks again rather than when it is approved.
func deferredMethod(method string) bool { return method == apIssueGrant || method == apIssueAdminCert }

// gateLockedRestore: with the vault's ApproveLockedRestore, a restore grant on a snapshot
// under a compliance lock or legal hold needs a second admin's approval (requested by an
// admin or a restore operator). The requester's first call is queued; after approval its
// next call consumes the approval once and gets the grant.
func (s *Server) gateLockedRestore(ctx context.Context, vault meta.VaultID, snap meta.Snapshot) error {
	p := meta.PrincipalFrom(ctx)
	if p.Role != meta.RoleAdmin && p.Role != meta.RoleRestoreOperator {
		return nil
	}
	v, err := s.fsm.Vault(vault)
	if err != nil || v.Retention == nil || !v.Retention.ApproveLockedRestore {
		return err
	}
	now := s.fsm.Now()
	if !snap.LegalHold && (snap.Lock == nil || snap.Lock.Mode != meta.Compliance || !now.Before(snap.Lock.Until)) {
		return nil
	}
	pol, err := s.approvalPolicy()
	if err != nil || !pol.Requires(meta.OpLockedRestore) {
		return err
	}
	if armed, err := s.twoPersonArmed(); err != nil || !armed {
		return err
	}
	args := apIssueGrantArgs{Vault: vault, Snapshot: snap.ID}
	if used, err := s.consumeApproved(ctx, p, apIssueGrant, args); err != nil || used {
		return err
	}
	what := "compliance-locked"
	if snap.LegalHold {
		what = "under legal hold"
	}
	return s.queue(ctx, p, meta.OpLockedRestore, apIssueGrant, args, vault,
		fmt.Sprintf("restore grant for %s on snapshot %s (%s)", p.Name, snap.ID, what))
}

// consumeApproved looks for p's approved, unexpired request of a deferred method whose
// stored parameters are exactly args, and consumes it (FinishApproval moves it from
// approved once, so one approval serves one call). used reports that it did.
func (s *Server) consumeApproved(ctx context.Context, p meta.Principal, method string, args any) (used bool, err error) {
	body, err := s.codec.Marshal(args)
	if err != nil {
		return false, fmt.Errorf("%w: server: encode %s request: %v", meta.ErrInvalid, method, err)
	}
	rs, err := s.fsm.Approvals()
	if err != nil {
		return false, err
	}
	now := s.fsm.Now()
	for _, r := range rs {
		if r.Method != method || r.State != meta.ApprovalApproved || r.Requester.Name != p.Name ||
			string(r.Body) != string(body) || !now.Before(r.Expires) {
			continue
		}
		if _, err := s.propose(timeoutOf(ctx), command.FinishApproval{ID: r.ID}); err != nil {
			continue
		}
		return true, nil
	}
	return false, nil
}

// apIssueAdminCert is the issuance of an admin certificate (meta.OpIssueAdmin). Without
// this gate one admin could mint a second admin identity, enroll its MFA and approve
// their own requests. Deferred like apIssueGrant: the certificate must reach the
// requester (who holds the key of the CSR), so the approval does not sign it; the
// requester's next identical request before the expiry consumes the approval once.
const apIssueAdminCert = "meta.IssueCert"

type apIssueAdminCertArgs struct {
	Principal string `cbor:"principal"`
	CSR       []byte `cbor:"csr"`
	Validity  int64  `cbor:"validity,omitempty"`
}

// gateIssueAdmin: an admin certificate is issued at once while the rule is not armed or
// the policy does not name meta.OpIssueAdmin; otherwise the first request is queued and,
// once a second admin approved it, the same request (same principal, CSR and validity)
// by the same admin gets the certificate once.
func (s *Server) gateIssueAdmin(ctx context.Context, req meta.IssueCertRequest) error {
	p := meta.PrincipalFrom(ctx)
	if req.Role != meta.CertRoleAdmin || p.Role != meta.RoleAdmin {
		return nil
	}
	pol, err := s.approvalPolicy()
	if err != nil || !pol.Requires(meta.OpIssueAdmin) {
		return err
	}
	if armed, err := s.twoPersonArmed(); err != nil || !armed {
		return err
	}
	args := apIssueAdminCertArgs{Principal: req.Principal, CSR: req.CSR, Validity: req.Validity}
	if used, err := s.consumeApproved(ctx, p, apIssueAdminCert, args); err != nil || used {
		return err
	}
	return s.queue(ctx, p, meta.OpIssueAdmin, apIssueAdminCert, args, "",
		fmt.Sprintf("issue an admin certificate for %q (requested by %s)", req.Principal, p.Name))
}
