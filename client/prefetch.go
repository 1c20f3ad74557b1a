package client

import (
	"context"
	"sync"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/client/tree"
)

// treePrefetch loads trees ahead of a depth-first walk: when a directory's tree is
// loaded, its subdirectories' trees are requested at once (at most limit in flight), so
// the walk does not wait one round trip per directory. Each tree is handed out once.
type treePrefetch struct {
	a   *Agent
	sem chan struct{}
	wg  sync.WaitGroup

	mu      sync.Mutex
	pending map[chunk.ID]*treeFuture
}

type treeFuture struct {
	done chan struct{}
	t    *tree.Tree
	err  error
}

func newTreePrefetch(a *Agent, limit int) *treePrefetch {
	return &treePrefetch{a: a, sem: make(chan struct{}, max(1, limit)), pending: map[chunk.ID]*treeFuture{}}
}

// start requests id in the background unless it is already requested. It returns at
// once; the fetch gives up when ctx ends.
func (p *treePrefetch) start(ctx context.Context, id chunk.ID) {
	p.mu.Lock()
	if _, ok := p.pending[id]; ok {
		p.mu.Unlock()
		return
	}
	f := &treeFuture{done: make(chan struct{})}
	p.pending[id] = f
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(f.done)
		select {
		case p.sem <- struct{}{}:
		case <-ctx.Done():
			f.err = ctx.Err()
			return
		}
		f.t, f.err = p.a.loadTree(ctx, id)
		<-p.sem
	}()
}

// get returns tree id: the prefetched result when there is one (then forgotten), else
// a direct load.
func (p *treePrefetch) get(ctx context.Context, id chunk.ID) (*tree.Tree, error) {
	p.mu.Lock()
	f, ok := p.pending[id]
	delete(p.pending, id)
	p.mu.Unlock()
	if !ok {
		return p.a.loadTree(ctx, id)
	}
	select {
	case <-f.done:
		return f.t, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// wait blocks until every background fetch has returned.
func (p *treePrefetch) wait() { p.wg.Wait() }
