package metarpc

import (
	"context"
	"fmt"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/authz"
)

// Host decommission methods (meta.HostAdmin; issue 19, part 3). Requests are opsReq.
const (
	MethodHostDependencies = "meta.HostDependencies"
	MethodHostRunRequest   = "meta.HostRunRequest"
	MethodHostDecommission = "meta.HostDecommission"
	MethodHostReinstate    = "meta.HostReinstate"
)

// hostRunAt is the answer of MethodHostRunRequest.
type hostRunAt struct {
	At time.Time `cbor:"at"`
}

var _ meta.HostAdmin = (*Client)(nil)

// hostRules is the authorization table of the host methods.
func hostRules() []authz.Rule {
	fwd := authz.If("forwarding a caller's request (checked as that caller)")
	return []authz.Rule{
		{Method: MethodHostDependencies, Doc: "what depends on a host: policies, next runs, running jobs, snapshots with their locks and holds",
			Admin: authz.Allow, Meta: fwd},
		{Method: MethodHostRunRequest, Doc: "ask a host's agent for a final run of each of its backup policies",
			Admin: authz.Allow, Meta: fwd},
		{Method: MethodHostDecommission, Destructive: true, Doc: "retire a host: its schedules stop, its certificates are revoked (and its key wraps removed), its snapshots kept for a window",
			Admin: authz.Allow, Meta: fwd},
		{Method: MethodHostReinstate, Destructive: true, Doc: "bring a decommissioned host back within its rollback window",
			Admin: authz.Allow, Meta: fwd},
	}
}

// serveHost runs the host methods; ok is false for other methods.
func (h *Server) serveHost(ctx context.Context, peer transport.Peer, method string, body []byte) (out, fwd any, err error, ok bool) {
	switch method {
	case MethodHostDependencies, MethodHostRunRequest, MethodHostDecommission, MethodHostReinstate:
	default:
		return nil, nil, nil, false
	}
	ha, isHost := h.svc.(meta.HostAdmin)
	if !isHost {
		return nil, nil, &transport.Error{Code: transport.UnknownMethod, Msg: fmt.Sprintf("metarpc: %s: not served here", method)}, true
	}
	switch method {
	case MethodHostDependencies:
		out, fwd, err = serveOp(h, ctx, peer, body, func(ctx context.Context, host string) (any, error) { return ha.HostDependencies(ctx, host) })
	case MethodHostRunRequest:
		out, fwd, err = serveOp(h, ctx, peer, body, func(ctx context.Context, host string) (any, error) {
			at, err := ha.RequestHostRun(ctx, host)
			return hostRunAt{At: at}, err
		})
	case MethodHostDecommission:
		out, fwd, err = serveOp(h, ctx, peer, body, func(ctx context.Context, d meta.HostDecommission) (any, error) {
			return ha.DecommissionHost(ctx, d)
		})
	case MethodHostReinstate:
		out, fwd, err = serveOp(h, ctx, peer, body, func(ctx context.Context, host string) (any, error) { return ha.ReinstateHost(ctx, host) })
	}
	return out, fwd, err, true
}

// HostDependencies implements meta.HostAdmin.
func (cl *Client) HostDependencies(ctx context.Context, host string) (meta.HostDependencies, error) {
	var d meta.HostDependencies
	err := cl.call(ctx, MethodHostDependencies, opsReq[string]{Arg: host}, &d)
	return d, err
}

// RequestHostRun implements meta.HostAdmin.
func (cl *Client) RequestHostRun(ctx context.Context, host string) (time.Time, error) {
	var r hostRunAt
	err := cl.call(ctx, MethodHostRunRequest, opsReq[string]{Arg: host}, &r)
	return r.At, err
}

// DecommissionHost implements meta.HostAdmin.
func (cl *Client) DecommissionHost(ctx context.Context, d meta.HostDecommission) (meta.Agent, error) {
	var a meta.Agent
	err := cl.call(ctx, MethodHostDecommission, opsReq[meta.HostDecommission]{Arg: d}, &a)
	return a, err
}

// ReinstateHost implements meta.HostAdmin.
func (cl *Client) ReinstateHost(ctx context.Context, host string) (meta.Agent, error) {
	var a meta.Agent
	err := cl.call(ctx, MethodHostReinstate, opsReq[string]{Arg: host}, &a)
	return a, err
}
