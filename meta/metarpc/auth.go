package metarpc

import (
	"context"
	"fmt"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/wire"
)

// Authority decides which peers act with a meta server's authority: forward requests
// (fwd), name the principal they act for (as), and set the cluster map. meta/server.Server
// implements it: a meta certificate (transport.RoleMeta) of a server in the current Raft
// configuration.
type Authority interface {
	// CheckMetaPeer returns nil when peer has meta authority, else an error naming the
	// rule it breaks.
	CheckMetaPeer(peer transport.Peer) error
}

// metaAuthority is h.auth.CheckMetaPeer; without an Authority no peer has it.
func (h *Server) metaAuthority(peer transport.Peer) error {
	if h.auth == nil {
		return fmt.Errorf("%w: metarpc: this server grants no peer meta authority", meta.ErrDenied)
	}
	return h.auth.CheckMetaPeer(peer)
}

// delegation is what every request body may carry besides its own fields: the marks of a
// follower forwarding it.
type delegation struct {
	Fwd bool            `cbor:"fwd,omitempty"`
	As  *meta.Principal `cbor:"as,omitempty"`
}

// delegationRefused is in the message of every checkDelegation refusal; a follower whose
// forwarded request gets it knows the leader no longer counts it in the group (forward).
const delegationRefused = "may not forward requests or act for another principal"

// checkDelegation refuses a request that is marked forwarded or names a principal unless
// its peer has meta authority. It runs before any method's handler, so no method can
// forget it.
func (h *Server) checkDelegation(peer transport.Peer, method string, body []byte) error {
	denied := h.metaAuthority(peer)
	if denied == nil || len(body) == 0 { // an empty body names nothing (and is no request)
		return nil
	}
	var d delegation
	if err := wire.Unmarshal(body, &d); err != nil {
		return &transport.Error{Code: transport.Invalid, Msg: fmt.Sprintf("metarpc: %s: bad request: %v", method, err)}
	}
	if !d.Fwd && d.As == nil {
		return nil
	}
	return &transport.Error{Code: transport.PermissionDenied, Msg: fmt.Sprintf(
		"metarpc: %s: %s %q %s: only a meta server in the current Raft configuration may (%v)",
		method, peer.Role, peer.Principal, delegationRefused, denied)}
}

// PrincipalOf maps a verified peer to the principal the meta server authorizes: admin
// certificates to meta.RoleAdmin, agent certificates to meta.RoleBackupAgent,
// restore-operator certificates to meta.RoleRestoreOperator, replication certificates to
// meta.RoleReplication, node certificates to meta.RoleNode; vault scopes come from the certificate. Any other peer gets a principal
// with no role, which may do nothing.
func PrincipalOf(peer transport.Peer) meta.Principal {
	p := meta.Principal{Name: peer.Principal}
	switch peer.Role {
	case transport.RoleAdmin:
		p.Role = meta.RoleAdmin
	case transport.RoleAgent:
		p.Role = meta.RoleBackupAgent
	case transport.RoleRestore:
		p.Role = meta.RoleRestoreOperator
	case transport.RoleNode, transport.RoleMeta:
		p.Role = meta.RoleNode
	case transport.RoleReplication:
		p.Role = meta.RoleReplication
	}
	if p.Role == meta.RoleBackupAgent || p.Role == meta.RoleRestoreOperator || p.Role == meta.RoleReplication {
		for _, v := range peer.Vaults {
			p.Vaults = append(p.Vaults, meta.VaultID(v))
		}
	}
	return p
}

// authenticate returns ctx carrying the request's principal and records it in *as, so
// that a follower forwarding the request passes on the original caller. A principal
// named in the request is honoured only from a peer with meta authority (a follower
// forwarding; checkDelegation has refused it from anyone else); otherwise the peer's own
// certificate counts.
func (h *Server) authenticate(ctx context.Context, peer transport.Peer, as **meta.Principal) context.Context {
	p := PrincipalOf(peer)
	if *as != nil && h.metaAuthority(peer) == nil {
		p = **as
	}
	*as = &p
	return meta.WithPrincipal(ctx, p)
}
