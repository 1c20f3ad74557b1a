package memstore

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
)

var _ chunkstore.Store = (*Chunks)(nil)

// Chunks is a map-backed chunkstore.Store. The zero value is an empty store. It is safe
// for concurrent use; data is copied in and out. It never returns ErrCorrupt or
// ErrUnavailable.
type Chunks struct {
	mu struct {
		sync.RWMutex
		m map[chunk.ID][]byte
	}
}

// NewChunks returns an empty chunk store.
func NewChunks() *Chunks { return new(Chunks) }

// Put stores copies of the chunks. An ID already stored (or earlier in the batch) keeps
// its first value. A zero ID, empty data or data above chunkstore.MaxChunkSize fails the
// whole batch with chunkstore.ErrInvalid before anything is stored.
func (c *Chunks) Put(ctx context.Context, chunks []chunkstore.Chunk) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memstore: put: %w", err)
	}
	for i := range chunks {
		if err := chunks[i].Validate(); err != nil {
			return fmt.Errorf("memstore: put: %w", err)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.m == nil {
		c.mu.m = make(map[chunk.ID][]byte)
	}
	for _, ch := range chunks {
		if _, ok := c.mu.m[ch.ID]; !ok {
			c.mu.m[ch.ID] = slices.Clone(ch.Data)
		}
	}
	return nil
}

// Get returns a copy of the chunk, or an error wrapping chunkstore.ErrNotFound.
func (c *Chunks) Get(ctx context.Context, id chunk.ID) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memstore: get %s: %w", id.Str(), err)
	}
	c.mu.RLock()
	d, ok := c.mu.m[id]
	c.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("memstore: get %s: %w", id.Str(), chunkstore.ErrNotFound)
	}
	return slices.Clone(d), nil
}

// Has reports for each id whether it is stored; the result has len(ids) entries.
func (c *Chunks) Has(ctx context.Context, ids []chunk.ID) ([]bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memstore: has: %w", err)
	}
	out := make([]bool, len(ids))
	c.mu.RLock()
	defer c.mu.RUnlock()
	for i, id := range ids {
		_, out[i] = c.mu.m[id]
	}
	return out, nil
}
