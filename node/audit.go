package node

import (
	"context"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/metarpc"
	"github.com/cofferhq/coffer/transport"
)

// maxAuditInFlight bounds the refusal reports a node sends to the audit log at once; a
// peer that floods refused requests beyond it is still refused, and the excess is only
// logged on this node (so refusals cannot be turned into unbounded Raft writes).
const maxAuditInFlight = 256

// auditRefusal records, in the background, a request this node refused for its peer's
// role (a shard delete from a non-node, a restore operator writing) or its revoked
// certificate, in the meta group's audit log. It gives up after 10 s or when the node
// closes; the caller has been refused either way.
func (n *Node) auditRefusal(ctx context.Context, peer transport.Peer, method, reason string) {
	p := metarpc.PrincipalOf(peer)
	e := meta.AuditEntry{Principal: p.Name, Role: p.Role, Action: method, Reason: reason}
	if ctx.Err() != nil {
		return // closing
	}
	select {
	case n.auditSlots <- struct{}{}:
	default:
		n.log.Warn("too many refusals in flight to the audit log; this one is only logged here", "peer", peer.Principal, "method", method, "reason", reason)
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer func() { <-n.auditSlots }()
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := n.metaC.RecordRefusal(cctx, e); err != nil && ctx.Err() == nil {
			n.log.Warn("cannot record a refused request in the audit log", "peer", peer.Principal, "method", method, "err", err)
		}
	}()
}
