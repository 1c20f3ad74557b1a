package metarpc

import (
	"context"
	"fmt"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/authz"
	"github.com/cofferhq/coffer/transport/wire"
)

// Two-person rule and admin MFA methods (meta.ApprovalService).
const (
	MethodListApprovals     = "meta.ListApprovals"
	MethodDecideApproval    = "meta.DecideApproval"
	MethodEnrollMFA         = "meta.EnrollMFA"
	MethodApprovalPolicy    = "meta.ApprovalPolicy"
	MethodSetApprovalPolicy = "meta.SetApprovalPolicy"
	MethodSealKey           = "meta.SealKey"
)

type (
	listApprovalsReq struct {
		Fwd bool            `cbor:"fwd,omitempty"`
		As  *meta.Principal `cbor:"as,omitempty"`
	}
	approvalList struct {
		Requests []meta.ApprovalRequest `cbor:"requests"`
	}
	decideApprovalReq struct {
		ID      string          `cbor:"id"`
		Approve bool            `cbor:"approve"`
		OTP     string          `cbor:"otp"`
		Reason  string          `cbor:"reason,omitempty"`
		Fwd     bool            `cbor:"fwd,omitempty"`
		As      *meta.Principal `cbor:"as,omitempty"`
	}
	enrollMFAReq struct {
		Secret string          `cbor:"secret"`
		Code   string          `cbor:"code"`
		Fwd    bool            `cbor:"fwd,omitempty"`
		As     *meta.Principal `cbor:"as,omitempty"`
	}
	approvalPolicyReq struct {
		Fwd bool            `cbor:"fwd,omitempty"`
		As  *meta.Principal `cbor:"as,omitempty"`
	}
	setApprovalPolicyReq struct {
		Policy meta.ApprovalPolicy `cbor:"policy"`
		Fwd    bool                `cbor:"fwd,omitempty"`
		As     *meta.Principal     `cbor:"as,omitempty"`
	}
	// sealKeyReq asks a meta server for its own cluster seal key (never forwarded).
	sealKeyReq struct {
		ID string `cbor:"id"` // the asking server's node ID (its certificate names it too)
	}
	sealKeyResp struct {
		Key []byte `cbor:"key"`
	}
)

// SealKeyHolder is a meta service that keeps the cluster seal key (server.Server).
type SealKeyHolder interface {
	// LocalSealKey returns this server's own seal key (ErrUnavailable when it has none).
	LocalSealKey(ctx context.Context) ([]byte, error)
}

// approvalRules is the authorization table of the approval methods: admins only (and a
// meta server forwarding an admin's request).
func approvalRules() []authz.Rule {
	fwd := authz.If("forwarding a caller's request (checked as that caller)")
	return []authz.Rule{
		{Method: MethodListApprovals, Audit: "approval list", Doc: "list two-person-rule requests (pending, decided, executed, expired)",
			Admin: authz.Allow, Meta: fwd},
		{Method: MethodDecideApproval, Destructive: true, Audit: "approval approve", Doc: "approve (and so execute once, as the requester) or deny a stored request, with a current TOTP code",
			Admin: authz.If("not the requester; enrolled MFA and a current, unused TOTP code"), Meta: fwd},
		{Method: MethodEnrollMFA, Destructive: true, Audit: "mfa enroll", Doc: "enroll the caller's TOTP secret, confirmed by a code",
			Admin: authz.If("its own principal, once"), Meta: fwd},
		{Method: MethodApprovalPolicy, Doc: "read which operations need a second admin",
			Admin: authz.Allow, Meta: fwd},
		{Method: MethodSealKey, Destructive: true, Audit: "seal key read", Doc: "the cluster seal key (under which TOTP secrets are sealed), for a meta server that joined after bootstrap",
			Meta: authz.If("a meta server in the current Raft configuration; the answering server's own key, never forwarded")},
		{Method: MethodSetApprovalPolicy, Destructive: true, Audit: "approval policy", Doc: "change which operations need a second admin (itself always needs one)",
			Admin: authz.If("stored for a second admin's approval"), Meta: fwd},
	}
}

// serveApproval runs the meta.ApprovalService methods; handled is false for others.
func (h *Server) serveApproval(ctx context.Context, peer transport.Peer, method string, body []byte) (out, fwd any, handled bool, err error) {
	if method == MethodSealKey {
		out, err := h.serveSealKey(ctx, peer, body)
		return out, nil, true, err
	}
	switch method {
	case MethodListApprovals, MethodDecideApproval, MethodEnrollMFA, MethodApprovalPolicy, MethodSetApprovalPolicy:
	default:
		return nil, nil, false, nil
	}
	svc, ok := h.svc.(meta.ApprovalService)
	if !ok {
		return nil, nil, true, &transport.Error{Code: transport.UnknownMethod, Msg: fmt.Sprintf("metarpc: %s: this server keeps no approval requests", method)}
	}
	switch method {
	case MethodListApprovals:
		var r listApprovalsReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		rs, err := svc.ListApprovals(ctx)
		return approvalList{Requests: rs}, markFwd(&r, &r.Fwd), true, err
	case MethodDecideApproval:
		var r decideApprovalReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		a, err := svc.DecideApproval(ctx, r.ID, r.Approve, r.OTP, r.Reason)
		return a, markFwd(&r, &r.Fwd), true, err
	case MethodEnrollMFA:
		var r enrollMFAReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		return empty{}, markFwd(&r, &r.Fwd), true, svc.EnrollMFA(ctx, r.Secret, r.Code)
	case MethodApprovalPolicy:
		var r approvalPolicyReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		p, err := svc.ApprovalPolicy(ctx)
		return p, markFwd(&r, &r.Fwd), true, err
	default: // MethodSetApprovalPolicy
		var r setApprovalPolicyReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		p, err := svc.SetApprovalPolicy(ctx, r.Policy)
		return p, markFwd(&r, &r.Fwd), true, err
	}
}

// serveSealKey answers a meta server of the Raft configuration with this server's own
// seal key; every other caller is refused (and the refusal audited).
func (h *Server) serveSealKey(ctx context.Context, peer transport.Peer, body []byte) (any, error) {
	if peer.Role != transport.RoleMeta {
		return nil, h.refuse(peer, MethodSealKey, &transport.Error{Code: transport.PermissionDenied,
			Msg: fmt.Sprintf("metarpc: %s: peer %q with role %q may not read the seal key (meta servers only)", MethodSealKey, peer.Principal, peer.Role)})
	}
	if err := h.metaAuthority(peer); err != nil {
		return nil, h.refuse(peer, MethodSealKey, &transport.Error{Code: transport.PermissionDenied,
			Msg: fmt.Sprintf("metarpc: %s: meta server %q is not in the current Raft configuration: %v", MethodSealKey, peer.Principal, err)})
	}
	var r sealKeyReq
	if err := decode(body, &r); err != nil {
		return nil, err
	}
	if r.ID != peer.Principal {
		return nil, &transport.Error{Code: transport.Invalid, Msg: fmt.Sprintf("metarpc: %s: request names %q, the certificate %q", MethodSealKey, r.ID, peer.Principal)}
	}
	holder, ok := h.svc.(SealKeyHolder)
	if !ok {
		return nil, &transport.Error{Code: transport.UnknownMethod, Msg: fmt.Sprintf("metarpc: %s: this server keeps no seal key", MethodSealKey)}
	}
	k, err := holder.LocalSealKey(ctx)
	if err != nil {
		return nil, err
	}
	return sealKeyResp{Key: k}, nil
}

// PeerSealKey asks the meta server at addr for its own seal key over c (the caller's
// meta certificate), for server.Config.PeerSealKey; self is the caller's node ID.
func PeerSealKey(c transport.Caller, self string) func(ctx context.Context, id, addr string) ([]byte, error) {
	return func(ctx context.Context, id, addr string) ([]byte, error) {
		var out sealKeyResp
		if err := wire.Call(ctx, c, addr, MethodSealKey, sealKeyReq{ID: self}, &out); err != nil {
			return nil, fmt.Errorf("metarpc: seal key from %s (%s): %w", id, addr, Errors.Wrap(err))
		}
		return out.Key, nil
	}
}

var _ meta.ApprovalService = (*Client)(nil)

// ListApprovals implements meta.ApprovalService.
func (cl *Client) ListApprovals(ctx context.Context) ([]meta.ApprovalRequest, error) {
	var out approvalList
	err := cl.call(ctx, MethodListApprovals, listApprovalsReq{}, &out)
	return out.Requests, err
}

// DecideApproval implements meta.ApprovalService.
func (cl *Client) DecideApproval(ctx context.Context, id string, approve bool, otp, reason string) (meta.ApprovalRequest, error) {
	var out meta.ApprovalRequest
	err := cl.call(ctx, MethodDecideApproval, decideApprovalReq{ID: id, Approve: approve, OTP: otp, Reason: reason}, &out)
	return out, err
}

// EnrollMFA implements meta.ApprovalService.
func (cl *Client) EnrollMFA(ctx context.Context, secret, code string) error {
	var out empty
	return cl.call(ctx, MethodEnrollMFA, enrollMFAReq{Secret: secret, Code: code}, &out)
}

// ApprovalPolicy implements meta.ApprovalService.
func (cl *Client) ApprovalPolicy(ctx context.Context) (meta.ApprovalPolicy, error) {
	var out meta.ApprovalPolicy
	err := cl.call(ctx, MethodApprovalPolicy, approvalPolicyReq{}, &out)
	return out, err
}

// SetApprovalPolicy implements meta.ApprovalService.
func (cl *Client) SetApprovalPolicy(ctx context.Context, p meta.ApprovalPolicy) (meta.ApprovalPolicy, error) {
	var out meta.ApprovalPolicy
	err := cl.call(ctx, MethodSetApprovalPolicy, setApprovalPolicyReq{Policy: p}, &out)
	return out, err
}
