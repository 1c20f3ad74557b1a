package metarpc

import (
	"context"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/transport"
)

// PrincipalOf maps a verified peer to the principal the meta server authorizes: admin
// certificates to meta.RoleAdmin, agent certificates to meta.RoleBackupAgent,
// restore-operator certificates to meta.RoleRestoreOperator, node certificates to
// meta.RoleNode; vault scopes come from the certificate. Any other peer gets a principal
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
	}
	if p.Role == meta.RoleBackupAgent || p.Role == meta.RoleRestoreOperator {
		for _, v := range peer.Vaults {
			p.Vaults = append(p.Vaults, meta.VaultID(v))
		}
	}
	return p
}

// authenticate returns ctx carrying the request's principal and records it in *as, so
// that a follower forwarding the request passes on the original caller. A principal
// named in the request is honoured only from a node (a follower forwarding); from
// anyone else it is ignored and the peer's own certificate counts.
func (h *Server) authenticate(ctx context.Context, peer transport.Peer, as **meta.Principal) context.Context {
	p := PrincipalOf(peer)
	if *as != nil && peer.Role.IsNode() {
		p = **as
	}
	*as = &p
	return meta.WithPrincipal(ctx, p)
}
