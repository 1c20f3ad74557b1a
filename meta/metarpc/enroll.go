package metarpc

import (
	"context"
	"fmt"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/authz"
)

// Enrollment and revocation methods (meta.EnrollService). MethodEnroll is the only
// method of the whole meta service a peer without a certificate may call.
const (
	MethodCreateEnrollToken = "meta.CreateEnrollToken"
	MethodEnroll            = "meta.Enroll"
	MethodRevokeCert        = "meta.RevokeCert"
	MethodListEnrollTokens  = "meta.ListEnrollTokens"
	MethodRevokeEnrollToken = "meta.RevokeEnrollToken"
	MethodSecurityState     = "meta.SecurityState"
)

// AnonymousMethods lists the methods a meta server's endpoint lets peers without a
// certificate call (quic.Config.AnonymousMethods): those of AuthzRules an anonymous
// caller may call.
func AnonymousMethods() []string { return authz.MustTable(AuthzRules()).Anonymous() }

type (
	createEnrollTokenReq struct {
		Vault meta.VaultID    `cbor:"vault"`
		Name  string          `cbor:"name,omitempty"`
		TTL   int64           `cbor:"ttl"`
		Fwd   bool            `cbor:"fwd,omitempty"`
		As    *meta.Principal `cbor:"as,omitempty"`
		// Labels are the host labels the token gives its agent (issue 15).
		Labels map[string]string `cbor:"labels,omitempty"`
	}
	createEnrollTokenResp struct {
		Token  string           `cbor:"token"`
		Record meta.EnrollToken `cbor:"record"`
	}
	enrollReq struct {
		Req meta.EnrollRequest `cbor:"req"`
		Fwd bool               `cbor:"fwd,omitempty"`
	}
	listEnrollTokensReq struct {
		All bool            `cbor:"all,omitempty"`
		Fwd bool            `cbor:"fwd,omitempty"`
		As  *meta.Principal `cbor:"as,omitempty"`
	}
	enrollTokenList struct {
		Tokens []meta.EnrollToken `cbor:"tokens"`
		Now    time.Time          `cbor:"now"` // cluster time
	}
	revokeEnrollTokenReq struct {
		ID     string          `cbor:"id"`
		Reason string          `cbor:"reason,omitempty"`
		Fwd    bool            `cbor:"fwd,omitempty"`
		As     *meta.Principal `cbor:"as,omitempty"`
	}
	revokeCertReq struct {
		Revocation meta.Revocation `cbor:"revocation"`
		Fwd        bool            `cbor:"fwd,omitempty"`
		As         *meta.Principal `cbor:"as,omitempty"`
	}
	securityStateReq struct {
		Known uint64          `cbor:"known"`
		Fwd   bool            `cbor:"fwd,omitempty"`
		As    *meta.Principal `cbor:"as,omitempty"`
	}
)

// serveEnroll runs the meta.EnrollService methods; handled is false for other methods.
// A peer without a certificate reaches only MethodEnroll (the transport already
// enforces this; ServeRPC checks it again).
func (h *Server) serveEnroll(ctx context.Context, peer transport.Peer, method string, body []byte) (out, fwd any, handled bool, err error) {
	switch method {
	case MethodCreateEnrollToken, MethodEnroll, MethodRevokeCert, MethodSecurityState,
		MethodListEnrollTokens, MethodRevokeEnrollToken:
	default:
		return nil, nil, false, nil
	}
	svc, ok := h.svc.(meta.EnrollService)
	if !ok {
		return nil, nil, true, &transport.Error{Code: transport.UnknownMethod, Msg: fmt.Sprintf("metarpc: %s: this server does not enroll agents", method)}
	}
	switch method {
	case MethodCreateEnrollToken:
		var r createEnrollTokenReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		tok, rec, err := svc.CreateEnrollToken(ctx, r.Vault, r.Name, time.Duration(r.TTL), r.Labels)
		return createEnrollTokenResp{Token: tok, Record: rec}, markFwd(&r, &r.Fwd), true, err
	case MethodEnroll:
		var r enrollReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		// The client's address is the receiving server's observation; a follower
		// forwarding passes on its own.
		if !r.Fwd || h.metaAuthority(peer) != nil {
			r.Req.From = ""
			if peer.Addr != nil {
				r.Req.From = peer.Addr.String()
			}
		}
		// NB: no principal of the caller's counts here (the token is the credential); a
		// principal without a role keeps anything below from treating the call as the
		// server's own (PrincipalFrom defaults to the system principal).
		ctx := meta.WithPrincipal(ctx, meta.Principal{Name: "anonymous"})
		res, err := svc.Enroll(ctx, r.Req)
		return res, markFwd(&r, &r.Fwd), true, err
	case MethodListEnrollTokens:
		var r listEnrollTokensReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		ts, now, err := svc.ListEnrollTokens(ctx, r.All)
		return enrollTokenList{Tokens: ts, Now: now}, markFwd(&r, &r.Fwd), true, err
	case MethodRevokeEnrollToken:
		var r revokeEnrollTokenReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		t, err := svc.RevokeEnrollToken(ctx, r.ID, r.Reason)
		return t, markFwd(&r, &r.Fwd), true, err
	case MethodRevokeCert:
		var r revokeCertReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		rv, err := svc.RevokeCert(ctx, r.Revocation)
		return rv, markFwd(&r, &r.Fwd), true, err
	default: // MethodSecurityState
		var r securityStateReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		st, err := svc.SecurityState(ctx, r.Known)
		return st, markFwd(&r, &r.Fwd), true, err
	}
}

var _ meta.EnrollService = (*Client)(nil)

// CreateEnrollToken implements meta.EnrollService.
func (cl *Client) CreateEnrollToken(ctx context.Context, vault meta.VaultID, name string, ttl time.Duration, labels map[string]string) (string, meta.EnrollToken, error) {
	var out createEnrollTokenResp
	err := cl.call(ctx, MethodCreateEnrollToken, createEnrollTokenReq{Vault: vault, Name: name, TTL: int64(ttl), Labels: labels}, &out)
	return out.Token, out.Record, err
}

// Enroll implements meta.EnrollService. Over an endpoint without a certificate
// (pki.NewAnonymousIdentity) this is the one call that works.
func (cl *Client) Enroll(ctx context.Context, req meta.EnrollRequest) (meta.EnrollResult, error) {
	var out meta.EnrollResult
	err := cl.call(ctx, MethodEnroll, enrollReq{Req: req}, &out)
	return out, err
}

// ListEnrollTokens implements meta.EnrollService.
func (cl *Client) ListEnrollTokens(ctx context.Context, all bool) ([]meta.EnrollToken, time.Time, error) {
	var out enrollTokenList
	err := cl.call(ctx, MethodListEnrollTokens, listEnrollTokensReq{All: all}, &out)
	return out.Tokens, out.Now, err
}

// RevokeEnrollToken implements meta.EnrollService.
func (cl *Client) RevokeEnrollToken(ctx context.Context, id, reason string) (meta.EnrollToken, error) {
	var out meta.EnrollToken
	err := cl.call(ctx, MethodRevokeEnrollToken, revokeEnrollTokenReq{ID: id, Reason: reason}, &out)
	return out, err
}

// RevokeCert implements meta.EnrollService.
func (cl *Client) RevokeCert(ctx context.Context, r meta.Revocation) (meta.Revocation, error) {
	var out meta.Revocation
	err := cl.call(ctx, MethodRevokeCert, revokeCertReq{Revocation: r}, &out)
	return out, err
}

// SecurityState implements meta.EnrollService.
func (cl *Client) SecurityState(ctx context.Context, known uint64) (meta.SecurityState, error) {
	var out meta.SecurityState
	err := cl.call(ctx, MethodSecurityState, securityStateReq{Known: known}, &out)
	return out, err
}
