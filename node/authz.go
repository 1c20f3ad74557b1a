package node

import (
	"github.com/cofferhq/coffer/chunkstore/chunkrpc"
	"github.com/cofferhq/coffer/meta/metarpc"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/authz"
	"github.com/cofferhq/coffer/transport/raftlayer"
)

// methodStatus is the node's own status report (`coffer admin status`).
const methodStatus = "node.Status"

// authzRules is the table of the node's own methods and of the Raft stream protocol.
func authzRules() []authz.Rule {
	topology := authz.Rule{Admin: authz.Allow, Node: authz.Allow, Meta: authz.Allow}
	status, health := topology, topology
	status.Method, status.Doc = methodStatus, "this node's status: roles, members, shard figures, repair, Raft (admin status)"
	health.Method, health.Doc = methodPGHealth, "the PG health reports of the PGs this node leads (admin pgs, decommission checks)"
	return []authz.Rule{
		status, health,
		{Method: methodScrub, Audit: scrubAction, Doc: "start a deep scrub pass now (admin scrub start)", Admin: authz.Allow, Meta: authz.Allow},
		{Method: authz.StreamMethod(raftlayer.ALPN), Destructive: true, Doc: "the meta group's Raft stream (AppendEntries, votes, InstallSnapshot)",
			Meta: authz.If("a server in the current Raft configuration")},
	}
}

// AuthzTable returns the authorization table every node enforces: the meta.*, shard.*,
// chunk.*, gc.* and node.* methods and the Raft stream protocol. docs/security.md prints
// it (see TestSecurityDoc).
func AuthzTable() *authz.Table {
	return authz.MustTable(metarpc.AuthzRules(), chunkrpc.AuthzRules(), authzRules())
}

// authorize checks the request against the authorization table at the level of the
// peer's role (handlers check the conditions). A refused call of an audited method
// (destructive, or one whose every use is audited) is recorded in the audit log.
func (n *Node) authorize(peer transport.Peer, method string) error {
	r, err := n.authz.Check(peer, method)
	if err == nil {
		return nil
	}
	n.log.Debug("request refused by the authorization table", "peer", peer.Principal, "role", peer.Role, "method", method, "addr", peer.Addr)
	if r.Audited() {
		n.auditRefusal(n.ctx, peer, r.AuditAction(), err.Error())
	}
	return err
}
