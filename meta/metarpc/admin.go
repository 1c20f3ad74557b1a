package metarpc

import (
	"context"
	"fmt"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/placement"
	"github.com/cofferhq/coffer/transport"
)

// Cluster-administration methods (meta.ClusterAdmin).
const (
	MethodNodeAction = "meta.NodeAction"
	MethodAuditLog   = "meta.AuditLog"
	MethodPGHealth   = "meta.PGHealth"
)

type (
	nodeActionReq struct {
		Req meta.NodeActionRequest `cbor:"req"`
		Fwd bool                   `cbor:"fwd,omitempty"`
	}
	auditLogReq struct {
		Limit int  `cbor:"limit"`
		Fwd   bool `cbor:"fwd,omitempty"`
	}
	auditList struct {
		Entries []meta.AuditEntry `cbor:"entries"`
	}
	pgHealthReq struct {
		Fwd bool `cbor:"fwd,omitempty"`
	}
	pgHealthList struct {
		PGs []placement.PGHealth `cbor:"pgs"`
	}
)

var _ meta.ClusterAdmin = (*Client)(nil)

// serveAdmin runs the meta.ClusterAdmin methods; ok is false for other methods. Node
// actions need an admin peer; the request's Principal is the peer's (a forwarded
// request keeps the principal the first server saw).
func (h *Server) serveAdmin(ctx context.Context, peer transport.Peer, method string, body []byte) (out, fwd any, err error, ok bool) {
	adm, isAdmin := h.svc.(meta.ClusterAdmin)
	switch method {
	case MethodNodeAction, MethodAuditLog, MethodPGHealth:
		if !isAdmin {
			return nil, nil, &transport.Error{Code: transport.UnknownMethod, Msg: fmt.Sprintf("metarpc: %s: not served here", method)}, true
		}
	default:
		return nil, nil, nil, false
	}
	switch method {
	case MethodNodeAction:
		var r nodeActionReq
		if err := decode(body, &r); err != nil {
			return nil, nil, err, true
		}
		if !r.Fwd {
			if peer.Role != transport.RoleAdmin {
				return nil, nil, &transport.Error{Code: transport.PermissionDenied,
					Msg: fmt.Sprintf("metarpc: %s: peer %q with role %q may not change node states (admin only)", method, peer.Principal, peer.Role)}, true
			}
			r.Req.Principal = peer.Principal
		} else if peer.Role != transport.RoleNode {
			return nil, nil, &transport.Error{Code: transport.PermissionDenied,
				Msg: fmt.Sprintf("metarpc: %s: forwarded request from non-node peer %q", method, peer.Principal)}, true
		}
		m, err := adm.NodeAction(ctx, r.Req)
		return m, markFwd(&r, &r.Fwd), err, true
	case MethodAuditLog:
		if peer.Role != transport.RoleAdmin && peer.Role != transport.RoleNode {
			return nil, nil, &transport.Error{Code: transport.PermissionDenied,
				Msg: fmt.Sprintf("metarpc: %s: peer %q with role %q may not read the audit log", method, peer.Principal, peer.Role)}, true
		}
		var r auditLogReq
		if err := decode(body, &r); err != nil {
			return nil, nil, err, true
		}
		es, err := adm.AuditLog(ctx, r.Limit)
		return auditList{Entries: es}, markFwd(&r, &r.Fwd), err, true
	default: // MethodPGHealth
		var r pgHealthReq
		if err := decode(body, &r); err != nil {
			return nil, nil, err, true
		}
		pgs, err := adm.PGHealth(ctx)
		return pgHealthList{PGs: pgs}, markFwd(&r, &r.Fwd), err, true
	}
}

// NodeAction implements meta.ClusterAdmin. The server sets the principal from this
// client's certificate.
func (cl *Client) NodeAction(ctx context.Context, req meta.NodeActionRequest) (placement.Map, error) {
	var m placement.Map
	err := cl.call(ctx, MethodNodeAction, nodeActionReq{Req: req}, &m)
	return m, err
}

// AuditLog implements meta.ClusterAdmin.
func (cl *Client) AuditLog(ctx context.Context, limit int) ([]meta.AuditEntry, error) {
	var r auditList
	err := cl.call(ctx, MethodAuditLog, auditLogReq{Limit: limit}, &r)
	return r.Entries, err
}

// PGHealth implements meta.ClusterAdmin.
func (cl *Client) PGHealth(ctx context.Context) ([]placement.PGHealth, error) {
	var r pgHealthList
	err := cl.call(ctx, MethodPGHealth, pgHealthReq{}, &r)
	return r.PGs, err
}
