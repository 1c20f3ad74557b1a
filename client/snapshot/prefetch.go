package snapshot

import (
	"context"
	"sync"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/client/tree"
)

// Prefetch loads trees ahead of a depth-first walk: when a directory's tree is loaded,
// the walker Starts its subdirectories' trees at once (at most limit in flight), so the
// walk does not wait one round trip per directory. Each tree is handed out once. Its
// methods are safe for concurrent use; Wait must be called before the walk returns.
type Prefetch struct {
	trees *Trees
	sem   chan struct{}
	wg    sync.WaitGroup

	mu      sync.Mutex
	pending map[chunk.ID]*treeFuture
}

type treeFuture struct {
	done chan struct{}
	t    *tree.Tree
	err  error
}

// Prefetch returns a prefetcher loading through s with at most limit (at least 1)
// trees in flight.
func (s *Trees) Prefetch(limit int) *Prefetch {
	return &Prefetch{trees: s, sem: make(chan struct{}, max(1, limit)), pending: map[chunk.ID]*treeFuture{}}
}

// Start requests id in the background unless it is already requested. It returns at
// once; the fetch gives up when ctx ends.
func (p *Prefetch) Start(ctx context.Context, id chunk.ID) {
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
		f.t, f.err = p.trees.Load(ctx, id)
		<-p.sem
	}()
}

// Get returns tree id: the prefetched result when there is one (then forgotten), else
// a direct load.
func (p *Prefetch) Get(ctx context.Context, id chunk.ID) (*tree.Tree, error) {
	p.mu.Lock()
	f, ok := p.pending[id]
	delete(p.pending, id)
	p.mu.Unlock()
	if !ok {
		return p.trees.Load(ctx, id)
	}
	select {
	case <-f.done:
		return f.t, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Wait blocks until every background fetch has returned.
func (p *Prefetch) Wait() { p.wg.Wait() }
