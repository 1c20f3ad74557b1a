package metarpc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/wire"
)

// Server serves the meta.* methods. Safe for concurrent use.
type Server struct {
	svc  meta.Service
	c    transport.Caller
	auth Authority // nil: no peer has meta authority
	// refused, when set, hears of each request refused for want of meta authority (OnRefused).
	refused func(peer transport.Peer, method, reason string)
}

// OnRefused sets fn to be called (synchronously, keep it short) for each request refused
// because its peer lacks meta authority: a forwarded request or a delegated principal
// (as) from anyone else, a cluster-map write from a non-admin. The node records them in
// the audit log. Call before serving.
func (h *Server) OnRefused(fn func(peer transport.Peer, method, reason string)) { h.refused = fn }

// refuse reports err to the OnRefused hook and returns it.
func (h *Server) refuse(peer transport.Peer, method string, err error) error {
	if h.refused != nil {
		h.refused(peer, method, err.Error())
	}
	return err
}

var _ transport.Handler = (*Server)(nil)

// NewServer returns a handler serving svc. c is used to forward requests a follower
// cannot answer to the leader. auth says which peers have meta authority (a forwarding
// follower: see Authority); with a nil auth no peer has it.
func NewServer(svc meta.Service, c transport.Caller, auth Authority) *Server {
	return &Server{svc: svc, c: c, auth: auth}
}

// raftStatusForwardTimeout bounds a follower's request for the leader's Raft view (the
// leader probes each other server for up to a second).
const raftStatusForwardTimeout = 3 * time.Second

// ServeRPC implements transport.Handler. Errors are *transport.Error with the code of the
// meta sentinel they match. On a follower (a *meta.NotLeaderError naming a leader) a
// request not yet forwarded is sent once to the leader and its answer returned;
// otherwise the caller gets NotLeader. A request marked forwarded or naming a principal
// (as) is refused PermissionDenied unless its peer has meta authority (Authority);
// SetClusterMap needs an admin or a peer with meta authority.
func (h *Server) ServeRPC(ctx context.Context, peer transport.Peer, method string, body []byte) ([]byte, error) {
	if peer.Anonymous() && method != MethodEnroll && method != MethodJoinNode {
		return nil, &transport.Error{Code: transport.Unauthenticated, Msg: fmt.Sprintf("metarpc: %s: a caller without a certificate may only enroll or join", method)}
	}
	if err := h.checkDelegation(peer, method, body); err != nil {
		if transport.CodeOf(err) == transport.PermissionDenied {
			h.refuse(peer, method, err)
		}
		return nil, err
	}
	ctx = withRequestTOTP(ctx, body)
	out, fwd, err := h.serve(ctx, peer, method, body)
	if err == nil {
		return wireMarshal(out)
	}
	var nl *meta.NotLeaderError
	if errors.As(err, &nl) && nl.LeaderAddr != "" && fwd != nil {
		return h.forward(ctx, nl.LeaderAddr, method, fwd)
	}
	return nil, toWire(err)
}

func wireMarshal(v any) ([]byte, error) {
	b, err := wire.Marshal(v)
	if err != nil {
		return nil, &transport.Error{Code: transport.Internal, Msg: fmt.Sprintf("metarpc: encode reply: %v", err)}
	}
	return b, nil
}

// toWire gives err the code of the meta sentinel it matches.
func toWire(err error) error {
	var te *transport.Error
	if errors.As(err, &te) {
		return err
	}
	return &transport.Error{Code: Errors.Code(err), Msg: err.Error()}
}

// forward sends the request (already marked forwarded, with the caller's TOTP code when
// it gave one) to the leader once.
func (h *Server) forward(ctx context.Context, leader, method string, req any) ([]byte, error) {
	req, err := withTOTP(ctx, req) // the caller's code goes on to the leader
	if err != nil {
		return nil, toWire(fmt.Errorf("%w: metarpc: forward %s: %v", meta.ErrInvalid, method, err))
	}
	body, err := wire.Marshal(req)
	if err != nil {
		return nil, toWire(fmt.Errorf("%w: metarpc: forward %s: %v", meta.ErrInvalid, method, err))
	}
	out, err := h.c.Call(ctx, leader, method, body)
	if err != nil {
		var te *transport.Error
		if errors.As(err, &te) {
			if te.Code == transport.PermissionDenied && strings.Contains(te.Msg, delegationRefused) {
				// This server was removed from the group (meta remove) and does not know
				// it yet: the caller is not refused, this server is; it should ask another.
				return nil, &transport.Error{Code: transport.Unavailable,
					Msg: fmt.Sprintf("metarpc: forward %s: the leader %s no longer counts this server as a meta server (removed from the group?): %s", method, leader, te.Msg)}
			}
			return nil, te // the leader's own answer, NotLeader included
		}
		return nil, &transport.Error{Code: transport.Unavailable, Msg: fmt.Sprintf("metarpc: forward %s to leader %s: %v", method, leader, err)}
	}
	return out, nil
}

func decode(body []byte, v any) error {
	if err := wire.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%w: metarpc: bad request: %v", meta.ErrInvalid, err)
	}
	return nil
}

// serve runs one method. fwd is the request marked forwarded, or nil when it must not be
// forwarded (already forwarded, or answered locally).
func (h *Server) serve(ctx context.Context, peer transport.Peer, method string, body []byte) (out any, fwd any, err error) {
	if out, fwd, ok, err := h.serveRetention(ctx, peer, method, body); ok {
		return out, fwd, err
	}
	if out, fwd, ok, err := h.serveEnroll(ctx, peer, method, body); ok {
		return out, fwd, err
	}
	if out, fwd, ok, err := h.serveKeys(ctx, peer, method, body); ok {
		return out, fwd, err
	}
	if out, fwd, ok, err := h.serveJobs(ctx, peer, method, body); ok {
		return out, fwd, err
	}
	if out, fwd, ok, err := h.serveCerts(ctx, peer, method, body); ok {
		return out, fwd, err
	}
	if out, fwd, ok, err := h.serveApproval(ctx, peer, method, body); ok {
		return out, fwd, err
	}
	switch method {
	case MethodCreateVault:
		var r createVaultReq
		if err := decode(body, &r); err != nil {
			return nil, nil, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		v, err := h.svc.CreateVault(ctx, r.Vault)
		return v, markFwd(&r, &r.Fwd), err
	case MethodGetVault:
		var r getVaultReq
		if err := decode(body, &r); err != nil {
			return nil, nil, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		v, err := h.svc.GetVault(ctx, r.ID)
		return v, markFwd(&r, &r.Fwd), err
	case MethodListVaults:
		var r listVaultsReq
		if err := decode(body, &r); err != nil {
			return nil, nil, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		vs, err := h.svc.ListVaults(ctx)
		return vaultList{Vaults: vs}, markFwd(&r, &r.Fwd), err
	case MethodCommitSnapshot:
		var r commitSnapshotReq
		if err := decode(body, &r); err != nil {
			return nil, nil, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		s, err := h.svc.CommitSnapshot(ctx, r.Snapshot)
		return s, markFwd(&r, &r.Fwd), err
	case MethodListSnapshots:
		var r listSnapshotsReq
		if err := decode(body, &r); err != nil {
			return nil, nil, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		ss, err := h.svc.ListSnapshots(ctx, r.Vault)
		return snapshotList{Snapshots: ss}, markFwd(&r, &r.Fwd), err
	case MethodGetSnapshot:
		var r getSnapshotReq
		if err := decode(body, &r); err != nil {
			return nil, nil, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		s, err := h.svc.GetSnapshot(ctx, r.Vault, r.ID)
		return s, markFwd(&r, &r.Fwd), err
	case MethodClusterMap:
		var r clusterMapReq
		if err := decode(body, &r); err != nil {
			return nil, nil, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		m, err := h.svc.ClusterMap(ctx)
		return m, markFwd(&r, &r.Fwd), err
	case MethodSetClusterMap:
		if peer.Role != transport.RoleAdmin {
			if err := h.metaAuthority(peer); err != nil {
				return nil, nil, h.refuse(peer, method, &transport.Error{Code: transport.PermissionDenied,
					Msg: fmt.Sprintf("metarpc: %s: peer %q with role %q may not set the cluster map (admin or a meta server in the current Raft configuration only): %v", method, peer.Principal, peer.Role, err)})
			}
		}
		var r setClusterMapReq
		if err := decode(body, &r); err != nil {
			return nil, nil, err
		}
		ctx := h.authenticate(ctx, peer, &r.As)
		err := h.svc.SetClusterMap(ctx, r.Map)
		return empty{}, markFwd(&r, &r.Fwd), err
	case MethodRaftStatus:
		if err := topologyReader(peer, method); err != nil {
			return nil, nil, err
		}
		var r raftStatusReq
		if err := decode(body, &r); err != nil {
			return nil, nil, err
		}
		rs, err := h.svc.RaftStatus(ctx)
		if err != nil || r.Local || r.Fwd || rs.LeaderAddr == "" || rs.Leader == rs.Self {
			return rs, nil, err
		}
		// A follower cannot tell whether the other followers are reachable: the leader
		// can (it probes them). When the leader does not answer, this view is the best
		// there is, and it names the follower that gave it.
		fctx, cancel := context.WithTimeout(ctx, raftStatusForwardTimeout)
		defer cancel()
		var lrs meta.RaftStatus
		if err := wire.Call(fctx, h.c, rs.LeaderAddr, MethodRaftStatus, raftStatusReq{Fwd: true}, &lrs); err == nil {
			return lrs, nil, nil
		}
		return rs, nil, nil
	}
	if out, fwd, err, ok := h.serveAdmin(ctx, peer, method, body); ok {
		return out, fwd, err
	}
	if out, fwd, err, ok := h.serveGC(ctx, peer, method, body); ok {
		return out, fwd, err
	}
	if out, fwd, err, ok := h.serveOps(ctx, peer, method, body); ok {
		return out, fwd, err
	}
	if out, fwd, err, ok := h.serveHost(ctx, peer, method, body); ok {
		return out, fwd, err
	}
	if out, fwd, err, ok := h.serveReplication(ctx, peer, method, body); ok {
		return out, fwd, err
	}
	if out, fwd, err, ok := h.serveMembership(ctx, peer, method, body); ok {
		return out, fwd, err
	}
	return nil, nil, &transport.Error{Code: transport.UnknownMethod, Msg: fmt.Sprintf("metarpc: unknown method %q", method)}
}

// topologyReader refuses a peer that may not read the cluster's topology (Raft and PG
// state): only admins and nodes may.
func topologyReader(peer transport.Peer, method string) error {
	if peer.Role.IsNode() || peer.Role == transport.RoleAdmin {
		return nil
	}
	return &transport.Error{Code: transport.PermissionDenied,
		Msg: fmt.Sprintf("metarpc: %s: %s %q may not read the cluster topology (node or admin only)", method, peer.Role, peer.Principal)}
}

// markFwd returns req marked forwarded, or nil when it already was.
func markFwd(req any, flag *bool) any {
	if *flag {
		return nil
	}
	*flag = true
	return req
}
