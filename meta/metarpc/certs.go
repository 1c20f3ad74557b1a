package metarpc

import (
	"context"
	"fmt"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/authz"
)

// Certificate methods (meta.CertService). MethodJoinNode, like MethodEnroll, is callable
// without a certificate: the one-time node join token is the credential.
const (
	MethodCreateNodeToken = "meta.CreateNodeToken"
	MethodJoinNode        = "meta.JoinNode"
	MethodIssueCert       = "meta.IssueCert"
	MethodRenewCert       = "meta.RenewCert"
	MethodListCerts       = "meta.ListCerts"
)

// certRules is the authorization table of the certificate methods (part of AuthzRules).
func certRules() []authz.Rule {
	fwd := authz.If("forwarding a caller's request (checked as that caller)")
	own := authz.If("its own certificate, not revoked, same identity")
	return []authz.Rule{
		{Method: MethodCreateNodeToken, Destructive: true, Doc: "mint a one-time node join token (role, node ID, domain)",
			Admin: authz.Allow, Meta: fwd},
		{Method: MethodJoinNode, Doc: "exchange a node join token and a CSR for a node or meta certificate, the cluster secret and the meta servers",
			Meta:      authz.If("forwarding a join from a follower"),
			Anonymous: authz.If("on meta servers; the one-time token is the credential and fixes role and ID")},
		{Method: MethodIssueCert, Destructive: true, Doc: "sign an admin, restore-operator or replication certificate for a CSR of that principal",
			Admin: authz.Allow, Meta: fwd},
		{Method: MethodRenewCert, Audit: "cert renew", Doc: "a new certificate, same identity, for the caller's new key",
			Agent: own, Restore: own, Admin: own, Node: own, Meta: authz.If("its own certificate, or forwarding a caller's"), Replication: own},
		{Method: MethodListCerts, Doc: "issued certificates with their lifetimes, and revocations",
			Admin: authz.Allow, Meta: fwd},
	}
}

type (
	createNodeTokenReq struct {
		Role   string          `cbor:"role"`
		ID     string          `cbor:"id"`
		Domain string          `cbor:"domain,omitempty"`
		TTL    int64           `cbor:"ttl"`
		Fwd    bool            `cbor:"fwd,omitempty"`
		As     *meta.Principal `cbor:"as,omitempty"`
	}
	joinNodeReq struct {
		Req meta.NodeJoinRequest `cbor:"req"`
		Fwd bool                 `cbor:"fwd,omitempty"`
	}
	issueCertReq struct {
		Req meta.IssueCertRequest `cbor:"req"`
		Fwd bool                  `cbor:"fwd,omitempty"`
		As  *meta.Principal       `cbor:"as,omitempty"`
	}
	renewCertReq struct {
		Req meta.RenewRequest `cbor:"req"`
		Fwd bool              `cbor:"fwd,omitempty"`
		As  *meta.Principal   `cbor:"as,omitempty"`
	}
	listCertsReq struct {
		Fwd bool            `cbor:"fwd,omitempty"`
		As  *meta.Principal `cbor:"as,omitempty"`
	}
	certList struct {
		Certs       []meta.IssuedCert `cbor:"certs"`
		Revocations []meta.Revocation `cbor:"revocations"`
		Now         time.Time         `cbor:"now"`
	}
)

// presentedOf is the certificate a peer authenticated with.
func presentedOf(peer transport.Peer) meta.Presented {
	return meta.Presented{Serial: peer.Serial, Principal: peer.Principal, Role: string(peer.Role),
		Vaults: append([]string(nil), peer.Vaults...), Issued: peer.Issued}
}

// serveCerts runs the meta.CertService methods; handled is false for other methods.
func (h *Server) serveCerts(ctx context.Context, peer transport.Peer, method string, body []byte) (out, fwd any, handled bool, err error) {
	switch method {
	case MethodCreateNodeToken, MethodJoinNode, MethodIssueCert, MethodRenewCert, MethodListCerts:
	default:
		return nil, nil, false, nil
	}
	svc, ok := h.svc.(meta.CertService)
	if !ok {
		return nil, nil, true, &transport.Error{Code: transport.Unavailable, Msg: fmt.Sprintf("metarpc: %s: this server does not issue certificates", method)}
	}
	switch method {
	case MethodCreateNodeToken:
		var r createNodeTokenReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		tok, rec, err := svc.CreateNodeToken(ctx, r.Role, r.ID, r.Domain, time.Duration(r.TTL))
		return createEnrollTokenResp{Token: tok, Record: rec}, markFwd(&r, &r.Fwd), true, err
	case MethodJoinNode:
		var r joinNodeReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		if !r.Fwd || h.metaAuthority(peer) != nil {
			r.Req.From = ""
			if peer.Addr != nil {
				r.Req.From = peer.Addr.String()
			}
		}
		ctx := meta.WithPrincipal(ctx, meta.Principal{Name: "anonymous"})
		res, err := svc.JoinNode(ctx, r.Req)
		return res, markFwd(&r, &r.Fwd), true, err
	case MethodIssueCert:
		var r issueCertReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		res, err := svc.IssueCert(ctx, r.Req)
		return res, markFwd(&r, &r.Fwd), true, err
	case MethodRenewCert:
		var r renewCertReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		// The identity to renew is the certificate the caller presented here; only a
		// follower forwarding (meta authority) passes on what it observed.
		if !r.Fwd || h.metaAuthority(peer) != nil {
			r.Req.Presented = presentedOf(peer)
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		res, err := svc.RenewCert(ctx, r.Req)
		return res, markFwd(&r, &r.Fwd), true, err
	default: // MethodListCerts
		var r listCertsReq
		if err := decode(body, &r); err != nil {
			return nil, nil, true, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		certs, revs, now, err := svc.ListCerts(ctx)
		return certList{Certs: certs, Revocations: revs, Now: now}, markFwd(&r, &r.Fwd), true, err
	}
}

var _ meta.CertService = (*Client)(nil)

// CreateNodeToken implements meta.CertService.
func (cl *Client) CreateNodeToken(ctx context.Context, role, id, domain string, ttl time.Duration) (string, meta.EnrollToken, error) {
	var out createEnrollTokenResp
	err := cl.call(ctx, MethodCreateNodeToken, createNodeTokenReq{Role: role, ID: id, Domain: domain, TTL: int64(ttl)}, &out)
	return out.Token, out.Record, err
}

// JoinNode implements meta.CertService. Over an endpoint without a certificate
// (pki.NewAnonymousIdentity) it works like Enroll.
func (cl *Client) JoinNode(ctx context.Context, req meta.NodeJoinRequest) (meta.NodeJoinResult, error) {
	var out meta.NodeJoinResult
	err := cl.call(ctx, MethodJoinNode, joinNodeReq{Req: req}, &out)
	return out, err
}

// IssueCert implements meta.CertService.
func (cl *Client) IssueCert(ctx context.Context, req meta.IssueCertRequest) (meta.CertResult, error) {
	var out meta.CertResult
	err := cl.call(ctx, MethodIssueCert, issueCertReq{Req: req}, &out)
	return out, err
}

// RenewCert implements meta.CertService. req.Presented is ignored: the server takes the
// identity from the certificate this client's endpoint presents.
func (cl *Client) RenewCert(ctx context.Context, req meta.RenewRequest) (meta.CertResult, error) {
	var out meta.CertResult
	req.Presented = meta.Presented{}
	err := cl.call(ctx, MethodRenewCert, renewCertReq{Req: req}, &out)
	return out, err
}

// ListCerts implements meta.CertService.
func (cl *Client) ListCerts(ctx context.Context) ([]meta.IssuedCert, []meta.Revocation, time.Time, error) {
	var out certList
	err := cl.call(ctx, MethodListCerts, listCertsReq{}, &out)
	return out.Certs, out.Revocations, out.Now, err
}
