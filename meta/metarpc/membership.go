package metarpc

import (
	"context"
	"fmt"
	"slices"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/wire"
)

// Meta-group membership methods (meta.MembershipAdmin).
const (
	MethodChangeMeta  = "meta.ChangeMeta"
	MethodMetaServers = "meta.MetaServers"
)

type (
	changeMetaReq struct {
		Req meta.MetaChange `cbor:"req"`
		As  *meta.Principal `cbor:"as,omitempty"`
		Fwd bool            `cbor:"fwd,omitempty"`
	}
	metaServersReq struct {
		Fwd bool `cbor:"fwd,omitempty"`
	}
	metaServerList struct {
		Servers []meta.Server `cbor:"servers"`
	}
)

var _ meta.MembershipAdmin = (*Client)(nil)

// serveMembership runs the meta.MembershipAdmin methods; ok is false for other methods.
// ChangeMeta is authorized by the server (admin principals only); MetaServers answers
// any authenticated caller with IDs and addresses only.
func (h *Server) serveMembership(ctx context.Context, peer transport.Peer, method string, body []byte) (out, fwd any, err error, ok bool) {
	switch method {
	case MethodChangeMeta, MethodMetaServers:
	default:
		return nil, nil, nil, false
	}
	adm, isAdm := h.svc.(meta.MembershipAdmin)
	if !isAdm {
		return nil, nil, &transport.Error{Code: transport.UnknownMethod, Msg: fmt.Sprintf("metarpc: %s: not served here", method)}, true
	}
	if method == MethodChangeMeta {
		var r changeMetaReq
		if err := decode(body, &r); err != nil {
			return nil, nil, err, true
		}
		ctx = h.authenticate(ctx, peer, &r.As)
		rs, err := adm.ChangeMeta(ctx, r.Req)
		return rs, markFwd(&r, &r.Fwd), err, true
	}
	var r metaServersReq
	if err := decode(body, &r); err != nil {
		return nil, nil, err, true
	}
	ss, err := adm.MetaServers(ctx)
	// Callers learn where the group is, not its state.
	for i := range ss {
		ss[i].Reachable = false
	}
	return metaServerList{Servers: ss}, markFwd(&r, &r.Fwd), err, true
}

// ChangeMeta implements meta.MembershipAdmin. The server takes the principal from this
// client's certificate.
func (cl *Client) ChangeMeta(ctx context.Context, req meta.MetaChange) (meta.RaftStatus, error) {
	var rs meta.RaftStatus
	err := cl.call(ctx, MethodChangeMeta, changeMetaReq{Req: req}, &rs)
	return rs, err
}

// MetaServers implements meta.MembershipAdmin.
func (cl *Client) MetaServers(ctx context.Context) ([]meta.Server, error) {
	var r metaServerList
	err := cl.call(ctx, MethodMetaServers, metaServersReq{}, &r)
	return r.Servers, err
}

// RefreshServers asks the meta group for its current servers and makes their addresses
// the ones this client tries first; the seed addresses it was made with stay behind them
// as a fallback. It returns the servers learned.
func (cl *Client) RefreshServers(ctx context.Context) ([]meta.Server, error) {
	ss, err := cl.MetaServers(ctx)
	if err != nil {
		return nil, err
	}
	var addrs []string
	for _, s := range ss {
		if s.Addr != "" && !slices.Contains(addrs, s.Addr) {
			addrs = append(addrs, s.Addr)
		}
	}
	if len(addrs) > 0 {
		cl.setAddrs(addrs)
	}
	return ss, nil
}

// PeerStatus returns a function asking the meta server at addr for its own Raft view
// (not forwarded), for server.Config.PeerStatus.
func PeerStatus(c transport.Caller) func(ctx context.Context, addr string) (meta.RaftStatus, error) {
	return func(ctx context.Context, addr string) (meta.RaftStatus, error) {
		var rs meta.RaftStatus
		if err := wire.Call(ctx, c, addr, MethodRaftStatus, raftStatusReq{Local: true}, &rs); err != nil {
			return rs, fmt.Errorf("metarpc: raft status of %s: %w", addr, Errors.Wrap(err))
		}
		return rs, nil
	}
}
