package mount

import (
	"container/list"
	"sync"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/client/tree"
)

// treeCache keeps decoded trees, least recently used dropped first, up to a number of
// directory entries in all. Trees are shared read-only. Safe for concurrent use.
//
// It is shared by the mount's snapshots (one vault): FS.tree obtains a snapshot's
// reader before it looks here, so a tree cached for one snapshot is shown only in a
// snapshot the mount may read and that references it.
type treeCache struct {
	max int

	mu    sync.Mutex
	byID  map[chunk.ID]*list.Element // of *cachedTree
	lru   *list.List                 // most recent first
	nodes int
}

type cachedTree struct {
	id chunk.ID
	t  *tree.Tree
}

func newTreeCache(maxNodes int) *treeCache {
	return &treeCache{max: maxNodes, byID: map[chunk.ID]*list.Element{}, lru: list.New()}
}

func (c *treeCache) get(id chunk.ID) *tree.Tree {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byID[id]
	if !ok {
		return nil
	}
	c.lru.MoveToFront(el)
	return el.Value.(*cachedTree).t
}

// put files t under id; a tree larger than the bound is not kept.
func (c *treeCache) put(id chunk.ID, t *tree.Tree) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.byID[id]; ok || len(t.Nodes) > c.max {
		return
	}
	c.byID[id] = c.lru.PushFront(&cachedTree{id: id, t: t})
	c.nodes += len(t.Nodes)
	for c.nodes > c.max {
		last := c.lru.Back()
		ct := last.Value.(*cachedTree)
		c.lru.Remove(last)
		delete(c.byID, ct.id)
		c.nodes -= len(ct.t.Nodes)
	}
}
