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
	MethodPGHealth   = "meta.PGHealth"
)

type (
	nodeActionReq struct {
		Req meta.NodeActionRequest `cbor:"req"`
		As  *meta.Principal        `cbor:"as,omitempty"`
		Fwd bool                   `cbor:"fwd,omitempty"`
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
// actions are authorized by the server (admin principals only); a forwarded request
// keeps the principal the first server saw.
func (h *Server) serveAdmin(ctx context.Context, peer transport.Peer, method string, body []byte) (out, fwd any, err error, ok bool) {
	adm, isAdmin := h.svc.(meta.ClusterAdmin)
	switch method {
	case MethodNodeAction, MethodPGHealth:
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
		ctx = h.authenticate(ctx, peer, &r.As)
		m, err := adm.NodeAction(ctx, r.Req)
		return m, markFwd(&r, &r.Fwd), err, true
	default: // MethodPGHealth
		if err := topologyReader(peer, method); err != nil {
			return nil, nil, err, true
		}
		var r pgHealthReq
		if err := decode(body, &r); err != nil {
			return nil, nil, err, true
		}
		pgs, err := adm.PGHealth(ctx)
		return pgHealthList{PGs: pgs}, markFwd(&r, &r.Fwd), err, true
	}
}

// NodeAction implements meta.ClusterAdmin. The server takes the principal from this
// client's certificate.
func (cl *Client) NodeAction(ctx context.Context, req meta.NodeActionRequest) (placement.Map, error) {
	var m placement.Map
	err := cl.call(ctx, MethodNodeAction, nodeActionReq{Req: req}, &m)
	return m, err
}

// PGHealth implements meta.ClusterAdmin.
func (cl *Client) PGHealth(ctx context.Context) ([]placement.PGHealth, error) {
	var r pgHealthList
	err := cl.call(ctx, MethodPGHealth, pgHealthReq{}, &r)
	return r.PGs, err
}
