package node

import (
	"context"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/metarpc"
	"github.com/cofferhq/coffer/transport"
)

// maxAuditInFlight bounds the reports (refusals, scrub starts) a node sends to the audit
// log at once; a peer that floods requests beyond it is still answered, and the excess is
// only logged on this node (so requests cannot be turned into unbounded Raft writes).
const maxAuditInFlight = 256

// auditRefusal records, in the background, a request this node refused for its peer's
// role (a shard delete from a non-node, a restore operator writing) or its revoked
// certificate, in the meta group's audit log. It gives up after 10 s or when the node
// closes; the caller has been refused either way.
func (n *Node) auditRefusal(ctx context.Context, peer transport.Peer, method, reason string) {
	n.reportAudit(ctx, peer, meta.AuditEntry{Action: method, Reason: reason}, false)
}

// auditAction records, in the background, an action this node performed at its peer's
// request (a deep scrub started) in the meta group's audit log, within the same bounds
// as auditRefusal.
func (n *Node) auditAction(ctx context.Context, peer transport.Peer, e meta.AuditEntry) {
	n.reportAudit(ctx, peer, e, true)
}

// reportAudit sends e, with peer's principal, through RecordNodeAction (ok) or
// RecordRefusal in the background: at most maxAuditInFlight at once, for at most 10 s,
// never after the node closes (ctx is the node's).
func (n *Node) reportAudit(ctx context.Context, peer transport.Peer, e meta.AuditEntry, ok bool) {
	p := metarpc.PrincipalOf(peer)
	e.Principal, e.Role = p.Name, p.Role
	if ctx.Err() != nil {
		return // closing
	}
	if !ok {
		n.counters.auditRefusals.Add(1)
	}
	select {
	case n.auditSlots <- struct{}{}:
	default:
		n.counters.auditDropped.Add(1)
		n.log.Warn("too many audit reports in flight to the audit log; this one is only logged here", "peer", peer.Principal, "action", e.Action, "reason", e.Reason, "ok", ok)
		return
	}
	record := n.metaC.RecordRefusal
	if ok {
		record = n.metaC.RecordNodeAction
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer func() { <-n.auditSlots }()
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := record(cctx, e); err != nil && ctx.Err() == nil {
			n.log.Warn("cannot record in the audit log", "peer", peer.Principal, "action", e.Action, "ok", ok, "err", err)
		}
	}()
}
