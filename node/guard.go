package node

import (
	"context"
	"errors"
	"fmt"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/placement"
)

// guardDelete vets a shard.Delete from another node (chunkrpc.Server.GuardDeletes).
// Repair is the only caller: it drops a stray copy from a node that does not own the
// shard under the current map, and a damaged copy before writing the good one. A shard
// this node owns and holds intact is never deleted this way; garbage collection goes
// through sweep orders from the meta leader instead.
func (n *Node) guardDelete(ctx context.Context, keys []chunkstore.ShardKey) error {
	self := placement.NodeID(n.cfg.ID)
	refreshed := false
	for _, k := range keys {
		owned, err := n.owns(self, k)
		if err == nil && owned && !refreshed {
			// The caller (repair on another node) may have a newer map than ours, in
			// which this node no longer owns the shard: fetch the current one first.
			refreshed = true
			if m, merr := n.metaC.ClusterMap(ctx); merr == nil {
				if cur := n.cmap.Load(); cur == nil || cur.Epoch < m.Epoch {
					n.cmap.Store(&m)
				}
				owned, err = n.owns(self, k)
			}
		}
		if err != nil {
			return fmt.Errorf("%w: shard %s/%d: cannot place it: %v", chunkstore.ErrUnavailable, k.ID.Str(), k.Index, err)
		}
		if !owned {
			continue // a stray copy: not this node's to keep
		}
		_, err = n.shards.GetShard(ctx, k)
		switch {
		case errors.Is(err, chunkstore.ErrCorrupt), errors.Is(err, chunkstore.ErrNotFound):
			continue // damaged (repair rewrites it) or already gone
		case err != nil:
			return fmt.Errorf("%w: shard %s/%d: %v", chunkstore.ErrUnavailable, k.ID.Str(), k.Index, err)
		}
		return fmt.Errorf("shard %s/%d: this node owns it and holds it intact; shards are deleted only as stray or damaged copies (repair) or by a garbage-collection sweep order from the meta leader", k.ID.Str(), k.Index)
	}
	return nil
}

// owns reports whether node self owns shard k under this node's current map.
func (n *Node) owns(self placement.NodeID, k chunkstore.ShardKey) (bool, error) {
	owners, err := n.chunks.Locate(k.ID)
	if err != nil {
		return false, err
	}
	return int(k.Index) < len(owners) && owners[k.Index].ID == self, nil
}
