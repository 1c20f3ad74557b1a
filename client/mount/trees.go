package mount

import (
	"container/list"
	"context"
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

	mu      sync.Mutex
	byID    map[chunk.ID]*list.Element // of *cachedTree
	lru     *list.List                 // most recent first
	nodes   int
	loading map[chunk.ID]*treeLoad // loads in flight
}

// treeLoad is a load of one tree in flight; done is closed when t and err are set.
type treeLoad struct {
	done chan struct{}
	t    *tree.Tree
	err  error
}

type cachedTree struct {
	id chunk.ID
	t  *tree.Tree
}

func newTreeCache(maxNodes int) *treeCache {
	return &treeCache{max: maxNodes, byID: map[chunk.ID]*list.Element{}, lru: list.New(), loading: map[chunk.ID]*treeLoad{}}
}

// load returns tree id from the cache, by waiting for a load in flight, or by calling
// fetch (and caching what it returns). A failed load is not cached.
func (c *treeCache) load(ctx context.Context, id chunk.ID, fetch func() (*tree.Tree, error)) (*tree.Tree, error) {
	c.mu.Lock()
	if el, ok := c.byID[id]; ok {
		c.lru.MoveToFront(el)
		c.mu.Unlock()
		return el.Value.(*cachedTree).t, nil
	}
	if l, ok := c.loading[id]; ok {
		c.mu.Unlock()
		select {
		case <-l.done:
			if l.err == nil {
				return l.t, nil
			}
			return fetch() // NB: its error is the one to report, not another load's
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	l := &treeLoad{done: make(chan struct{})}
	c.loading[id] = l
	c.mu.Unlock()
	t, err := fetch()
	c.end(id, l, t, err)
	return t, err
}

// begin registers loads of those of ids that are neither cached nor loading, and
// returns them: the caller loads them and calls end for each.
func (c *treeCache) begin(ids []chunk.ID) ([]chunk.ID, []*treeLoad) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var mine []chunk.ID
	var loads []*treeLoad
	for _, id := range ids {
		_, cached := c.byID[id]
		_, loading := c.loading[id]
		if cached || loading {
			continue
		}
		l := &treeLoad{done: make(chan struct{})}
		c.loading[id] = l
		mine, loads = append(mine, id), append(loads, l)
	}
	return mine, loads
}

// end records the outcome of load l of tree id (begun by load or begin) and wakes its
// waiters; a tree is cached, an error is not.
func (c *treeCache) end(id chunk.ID, l *treeLoad, t *tree.Tree, err error) {
	l.t, l.err = t, err
	c.mu.Lock()
	delete(c.loading, id)
	c.mu.Unlock()
	close(l.done)
	if err == nil {
		c.put(id, t)
	}
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
