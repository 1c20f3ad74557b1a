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
// shard under the current map, a damaged copy before writing the good one, and what a
// failed put left of a stripe (repair.dropPartial). A shard this node owns and holds
// intact is deleted this way only in the last case, and only when this node finds, by
// asking every node of the map itself, that fewer than K positions of the stripe exist
// anywhere (abandonedStripe); garbage collection goes through sweep orders from the meta
// leader instead.
//
// Why the third case is safe against a lying caller: a stripe with fewer than K
// positions reads nowhere, so deleting it loses nothing readable; and a node that lies
// about its own shards (to make the count short) could make the stripe unreadable by
// deleting those shards itself, so the count gives it no power it did not have.
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
		if n.abandonedStripe(ctx, k) {
			continue // what a failed put left: short of K shards on every node
		}
		return fmt.Errorf("shard %s/%d: this node owns it and holds it intact; shards are deleted only as stray or damaged copies, as the remains of a stripe short of K shards on every node (repair), or by a garbage-collection sweep order from the meta leader", k.ID.Str(), k.Index)
	}
	return nil
}

// abandonedStripe reports whether k's stripe is short of K positions on every node of
// the current map: every node that is not decommissioned answered (none down, none
// failing) and fewer than K distinct positions are held in all. Any doubt says no.
func (n *Node) abandonedStripe(ctx context.Context, k chunkstore.ShardKey) bool {
	m := n.cmap.Load()
	if m == nil || n.peers == nil {
		return false
	}
	sh, err := n.shards.GetShard(ctx, k)
	if err != nil {
		return false
	}
	want := int(sh.Meta.K)
	total := want + int(sh.Meta.M)
	if want == 0 || total > 256 {
		return false
	}
	keys := make([]chunkstore.ShardKey, total)
	for i := range keys {
		keys[i] = chunkstore.ShardKey{ID: k.ID, Index: uint8(i)}
	}
	held := make([]bool, total)
	for _, nd := range m.Nodes {
		if nd.State == placement.StateDecommissioned {
			continue
		}
		if nd.State == placement.StateDown {
			return false
		}
		has, err := n.peers.store(nd).HasShards(ctx, keys)
		if err != nil || len(has) != total {
			return false
		}
		for i, ok := range has {
			held[i] = held[i] || ok
		}
	}
	count := 0
	for _, ok := range held {
		if ok {
			count++
		}
	}
	return count < want
}

// owns reports whether node self owns shard k under this node's current map.
func (n *Node) owns(self placement.NodeID, k chunkstore.ShardKey) (bool, error) {
	owners, err := n.chunks.Locate(k.ID)
	if err != nil {
		return false, err
	}
	return int(k.Index) < len(owners) && owners[k.Index].ID == self, nil
}
