package metarpc

import (
	"context"
	"fmt"
	"time"

	"github.com/cofferhq/coffer/chunkstore/grant"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/transport"
)

var _ meta.RetentionService = (*Client)(nil)

// serveRetention runs the meta.RetentionService methods; handled is false for any other
// method.
func (h *Server) serveRetention(ctx context.Context, peer transport.Peer, method string, body []byte) (out, fwd any, handled bool, err error) {
	switch method {
	case MethodIssueGrant:
		svc, ok := h.svc.(meta.GrantService)
		if !ok {
			return nil, nil, true, &transport.Error{Code: transport.UnknownMethod, Msg: fmt.Sprintf("metarpc: %s: this server issues no grants", method)}
		}
		var r issueGrantReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		tok, g, err := svc.IssueGrant(ctx, r.Vault, r.ID, time.Duration(r.TTL))
		return issueGrantResp{Token: tok, Grant: g}, markFwd(&r, &r.Fwd), true, err
	case MethodDeleteVault, MethodUndeleteVault, MethodSetVaultPolicy:
		out, fwd, err := h.serveVault(ctx, peer, method, body)
		return out, fwd, true, err
	case MethodDeleteSnapshots, MethodForget, MethodSetLock, MethodSetHold, MethodAuditLog, MethodRecordRefusal, MethodRecordNodeAction:
	default:
		return nil, nil, false, nil
	}
	svc, ok := h.svc.(meta.RetentionService)
	if !ok {
		return nil, nil, true, &transport.Error{Code: transport.UnknownMethod, Msg: fmt.Sprintf("metarpc: %s: this server does not implement retention", method)}
	}
	switch method {
	case MethodDeleteSnapshots:
		var r deleteSnapshotsReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		ss, err := svc.DeleteSnapshots(ctx, r.Vault, r.IDs, r.Bypass)
		return snapshotsResp{Snapshots: ss}, markFwd(&r, &r.Fwd), true, err
	case MethodForget:
		var r forgetReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		res, err := svc.Forget(ctx, r.Vault, r.Policy, r.DryRun)
		return res, markFwd(&r, &r.Fwd), true, err
	case MethodSetLock:
		var r setLockReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		s, err := svc.SetLock(ctx, r.Vault, r.ID, r.Lock, r.Bypass)
		return s, markFwd(&r, &r.Fwd), true, err
	case MethodSetHold:
		var r setHoldReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		s, err := svc.SetHold(ctx, r.Vault, r.ID, r.Hold, r.Reason)
		return s, markFwd(&r, &r.Fwd), true, err
	case MethodRecordRefusal, MethodRecordNodeAction:
		var r recordRefusalReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		record := svc.RecordRefusal
		if method == MethodRecordNodeAction {
			record = svc.RecordNodeAction
		}
		err := record(ctx, r.Entry)
		return empty{}, markFwd(&r, &r.Fwd), true, err
	default: // MethodAuditLog
		var r auditLogReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		es, err := svc.AuditLog(ctx, r.After, r.Limit)
		return auditResp{Entries: es}, markFwd(&r, &r.Fwd), true, err
	}
}

// DeleteSnapshots implements meta.RetentionService.
func (cl *Client) DeleteSnapshots(ctx context.Context, vault meta.VaultID, ids []meta.SnapshotID, b meta.Bypass) ([]meta.Snapshot, error) {
	var out snapshotsResp
	err := cl.call(ctx, MethodDeleteSnapshots, deleteSnapshotsReq{Vault: vault, IDs: ids, Bypass: b}, &out)
	return out.Snapshots, err
}

// Forget implements meta.RetentionService.
func (cl *Client) Forget(ctx context.Context, vault meta.VaultID, policy meta.Policy, dryRun bool) (meta.ForgetResult, error) {
	var out meta.ForgetResult
	err := cl.call(ctx, MethodForget, forgetReq{Vault: vault, Policy: policy, DryRun: dryRun}, &out)
	return out, err
}

// SetLock implements meta.RetentionService.
func (cl *Client) SetLock(ctx context.Context, vault meta.VaultID, id meta.SnapshotID, l meta.Lock, b meta.Bypass) (meta.Snapshot, error) {
	var out meta.Snapshot
	err := cl.call(ctx, MethodSetLock, setLockReq{Vault: vault, ID: id, Lock: l, Bypass: b}, &out)
	return out, err
}

// SetHold implements meta.RetentionService.
func (cl *Client) SetHold(ctx context.Context, vault meta.VaultID, id meta.SnapshotID, hold bool, reason string) (meta.Snapshot, error) {
	var out meta.Snapshot
	err := cl.call(ctx, MethodSetHold, setHoldReq{Vault: vault, ID: id, Hold: hold, Reason: reason}, &out)
	return out, err
}

// AuditLog implements meta.RetentionService.
func (cl *Client) AuditLog(ctx context.Context, after uint64, limit int) ([]meta.AuditEntry, error) {
	var out auditResp
	err := cl.call(ctx, MethodAuditLog, auditLogReq{After: after, Limit: limit}, &out)
	return out.Entries, err
}

func (h *Server) serveVault(ctx context.Context, peer transport.Peer, method string, body []byte) (out, fwd any, err error) {
	svc, ok := h.svc.(meta.VaultService)
	if !ok {
		return nil, nil, &transport.Error{Code: transport.UnknownMethod, Msg: fmt.Sprintf("metarpc: %s: this server does not implement vault deletion", method)}
	}
	if method == MethodDeleteVault {
		var r deleteVaultReq
		if err := decode(body, &r); err != nil {
			return nil, nil, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		v, err := svc.DeleteVault(ctx, r.ID, time.Duration(r.Window), r.Reason)
		return v, markFwd(&r, &r.Fwd), err
	}
	if method == MethodSetVaultPolicy {
		var r setVaultPolicyReq
		if err := decode(body, &r); err != nil {
			return nil, nil, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		v, err := svc.SetVaultPolicy(ctx, r.ID, r.Policy)
		return v, markFwd(&r, &r.Fwd), err
	}
	var r undeleteVaultReq
	if err := decode(body, &r); err != nil {
		return nil, nil, err
	}
	ctx = h.authenticate(ctx, peer, &r.As)
	v, err := svc.UndeleteVault(ctx, r.ID)
	return v, markFwd(&r, &r.Fwd), err
}

var _ meta.VaultService = (*Client)(nil)

// DeleteVault implements meta.VaultService.
func (cl *Client) DeleteVault(ctx context.Context, id meta.VaultID, window time.Duration, reason string) (meta.Vault, error) {
	var out meta.Vault
	err := cl.call(ctx, MethodDeleteVault, deleteVaultReq{ID: id, Window: int64(window), Reason: reason}, &out)
	return out, err
}

// UndeleteVault implements meta.VaultService.
func (cl *Client) UndeleteVault(ctx context.Context, id meta.VaultID) (meta.Vault, error) {
	var out meta.Vault
	err := cl.call(ctx, MethodUndeleteVault, undeleteVaultReq{ID: id}, &out)
	return out, err
}

// SetVaultPolicy implements meta.VaultService.
func (cl *Client) SetVaultPolicy(ctx context.Context, id meta.VaultID, p meta.VaultPolicy) (meta.Vault, error) {
	var out meta.Vault
	err := cl.call(ctx, MethodSetVaultPolicy, setVaultPolicyReq{ID: id, Policy: p}, &out)
	return out, err
}

var _ meta.GrantService = (*Client)(nil)

// IssueGrant implements meta.GrantService.
func (cl *Client) IssueGrant(ctx context.Context, vault meta.VaultID, id meta.SnapshotID, ttl time.Duration) ([]byte, grant.Grant, error) {
	var out issueGrantResp
	err := cl.call(ctx, MethodIssueGrant, issueGrantReq{Vault: vault, ID: id, TTL: int64(ttl)}, &out)
	return out.Token, out.Grant, err
}

// RecordRefusal implements meta.RetentionService.
func (cl *Client) RecordRefusal(ctx context.Context, e meta.AuditEntry) error {
	return cl.call(ctx, MethodRecordRefusal, recordRefusalReq{Entry: e}, nil)
}

// RecordNodeAction implements meta.RetentionService.
func (cl *Client) RecordNodeAction(ctx context.Context, e meta.AuditEntry) error {
	return cl.call(ctx, MethodRecordNodeAction, recordRefusalReq{Entry: e}, nil)
}
