package metarpc

import (
	"context"
	"fmt"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/authz"
)

// Replication job methods (meta.ReplicationService; issue 19, part 2), on the TARGET
// cluster. Requests are opsReq.
const (
	MethodReplicationAdd    = "meta.ReplicationAdd"
	MethodReplicationList   = "meta.ReplicationList"
	MethodReplicationRemove = "meta.ReplicationRemove"
	MethodReplicationRun    = "meta.ReplicationRun"
)

// replicationList is the answer of MethodReplicationList.
type replicationList struct {
	Jobs []meta.Replication `cbor:"jobs"`
}

var _ meta.ReplicationService = (*Client)(nil)

// replicationRules is the authorization table of the replication job methods.
func replicationRules() []authz.Rule {
	fwd := authz.If("forwarding a caller's request (checked as that caller)")
	return []authz.Rule{
		{Method: MethodReplicationAdd, Audit: "replication add", Doc: "create a replication job: a vault of another cluster copied here, with the job's certificate and key on that cluster",
			Admin: authz.Allow, Meta: fwd},
		{Method: MethodReplicationList, Doc: "the replication jobs and their progress (never their credentials)",
			Admin: authz.Allow, Meta: fwd},
		{Method: MethodReplicationRemove, Destructive: true, Doc: "delete a replication job (its replica vault and snapshots stay)",
			Admin: authz.Allow, Meta: fwd},
		{Method: MethodReplicationRun, Audit: "replication run", Doc: "ask the meta leader to run a replication job now",
			Admin: authz.Allow, Meta: fwd},
	}
}

// serveReplication runs the replication methods; ok is false for other methods.
func (h *Server) serveReplication(ctx context.Context, peer transport.Peer, method string, body []byte) (out, fwd any, err error, ok bool) {
	switch method {
	case MethodReplicationAdd, MethodReplicationList, MethodReplicationRemove, MethodReplicationRun:
	default:
		return nil, nil, nil, false
	}
	rs, isRS := h.svc.(meta.ReplicationService)
	if !isRS {
		return nil, nil, &transport.Error{Code: transport.UnknownMethod, Msg: fmt.Sprintf("metarpc: %s: not served here", method)}, true
	}
	switch method {
	case MethodReplicationAdd:
		out, fwd, err = serveOp(h, ctx, peer, body, func(ctx context.Context, r meta.Replication) (any, error) { return rs.AddReplication(ctx, r) })
	case MethodReplicationList:
		out, fwd, err = serveOp(h, ctx, peer, body, func(ctx context.Context, _ struct{}) (any, error) {
			jobs, err := rs.ListReplications(ctx)
			return replicationList{Jobs: jobs}, err
		})
	case MethodReplicationRemove:
		out, fwd, err = serveOp(h, ctx, peer, body, func(ctx context.Context, name string) (any, error) {
			return struct{}{}, rs.RemoveReplication(ctx, name)
		})
	case MethodReplicationRun:
		out, fwd, err = serveOp(h, ctx, peer, body, func(ctx context.Context, name string) (any, error) { return rs.RunReplication(ctx, name) })
	}
	return out, fwd, err, true
}

// AddReplication implements meta.ReplicationService.
func (cl *Client) AddReplication(ctx context.Context, r meta.Replication) (meta.Replication, error) {
	var out meta.Replication
	err := cl.call(ctx, MethodReplicationAdd, opsReq[meta.Replication]{Arg: r}, &out)
	return out, err
}

// ListReplications implements meta.ReplicationService.
func (cl *Client) ListReplications(ctx context.Context) ([]meta.Replication, error) {
	var out replicationList
	err := cl.call(ctx, MethodReplicationList, opsReq[struct{}]{}, &out)
	return out.Jobs, err
}

// RemoveReplication implements meta.ReplicationService.
func (cl *Client) RemoveReplication(ctx context.Context, name string) error {
	var out struct{}
	return cl.call(ctx, MethodReplicationRemove, opsReq[string]{Arg: name}, &out)
}

// RunReplication implements meta.ReplicationService.
func (cl *Client) RunReplication(ctx context.Context, name string) (meta.Replication, error) {
	var out meta.Replication
	err := cl.call(ctx, MethodReplicationRun, opsReq[string]{Arg: name}, &out)
	return out, err
}
