package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cofferhq/coffer/chunkstore/chunkrpc"
	"github.com/cofferhq/coffer/chunkstore/gcnode"
	"github.com/cofferhq/coffer/chunkstore/gcorder"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/placement"
	"github.com/cofferhq/coffer/transport"
)

// Garbage-collection orders arrive through node: meta and chunkstore share only the order
// vocabulary (chunkstore/gcorder), and node joins them here. The meta leader reaches chunk
// nodes through GC peers; a chunk node checks each order against the leader's GC status.

// The GC peers node hands the meta server are meta's GCPeer (compile-time checks).
var (
	_ meta.GCPeer = (*chunkrpc.GCClient)(nil)
	_ meta.GCPeer = (*gcnode.LocalPeer)(nil)
)

// gcPeer is the meta server's GCPeer for chunk node nd: a chunkrpc client on this node's
// endpoint (its meta certificate is what the chunk node checks).
func (n *Node) gcPeer(nd placement.Node) meta.GCPeer {
	return chunkrpc.NewGCClient(n.ep, nd.Addr)
}

// newGCNode returns this chunk node's side of garbage collection: orders are checked
// against the meta leader's GC status (gcorder.Check), and refusals are audited under
// ctx, the node's context (the report outlives the refused call).
func (n *Node) newGCNode(ctx context.Context) (*gcnode.Node, error) {
	return gcnode.New(gcnode.Config{
		Store:     n.shards,
		Now:       time.Now, // the clock segstore stamps touches with
		Authorize: n.authorizeGCOrder,
		Refused: func(_ context.Context, from, op string, epoch uint64, err error) {
			if errors.Is(err, gcorder.ErrDenied) {
				n.auditRefusal(ctx, transport.Peer{Principal: from, Role: transport.RoleNode}, "gc."+op, err.Error())
			}
		},
		Logger: n.log,
	})
}

// authorizeGCOrder asks the meta leader for its GC status and checks the order against
// it. A status it cannot get wraps gcorder.ErrUnavailable.
func (n *Node) authorizeGCOrder(ctx context.Context, from, op string, epoch uint64) error {
	st, err := n.metaC.GCStatus(ctx)
	if err != nil {
		return fmt.Errorf("%w: ask the meta leader for the GC state: %v", gcorder.ErrUnavailable, err)
	}
	return gcorder.Check(st.Order(), from, op, epoch)
}
