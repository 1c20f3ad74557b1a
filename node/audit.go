package node

import (
	"context"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/metarpc"
	"github.com/cofferhq/coffer/transport"
)

// auditRefusal records, in the background, a request this node's chunk server refused
// for its peer's role (a shard delete from a non-node, a restore operator writing) in the
// meta group's audit log. It gives up after 10 s or when the node closes; the caller has
// been refused either way.
func (n *Node) auditRefusal(ctx context.Context, peer transport.Peer, method, reason string) {
	p := metarpc.PrincipalOf(peer)
	e := meta.AuditEntry{Principal: p.Name, Role: p.Role, Action: method, Reason: reason}
	if ctx.Err() != nil {
		return // closing
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := n.metaC.RecordRefusal(cctx, e); err != nil && ctx.Err() == nil {
			n.log.Warn("cannot record a refused request in the audit log", "peer", peer.Principal, "method", method, "err", err)
		}
	}()
}
