package client

import (
	"container/list"
	"context"
	"sync"

	"github.com/cofferhq/coffer/chunkstore/chunk"
)

// chunkCache holds recently read plaintext chunks during one restore and coalesces
// concurrent reads of the same chunk, so content that repeats (a file made of one
// block, zero-filled regions, copies of the same file) is fetched and decrypted once.
// Chunks are shared read-only between their users. Safe for concurrent use.
type chunkCache struct {
	max int64 // bytes kept at most (in finished entries)

	mu      sync.Mutex
	entries map[chunk.ID]*cacheEntry
	lru     *list.List // of chunk.ID, most recent first; finished entries only
	bytes   int64
}

type cacheEntry struct {
	done chan struct{}
	data []byte
	err  error
	elem *list.Element // nil while the read is in flight
}

func newChunkCache(max int64) *chunkCache {
	return &chunkCache{max: max, entries: map[chunk.ID]*cacheEntry{}, lru: list.New()}
}

// get returns chunk id, from the cache, by waiting for a read already in flight, or by
// calling read. A failed read is not cached: the next get tries again.
func (c *chunkCache) get(ctx context.Context, id chunk.ID, read func() ([]byte, error)) ([]byte, error) {
	e, mine := c.begin(id)
	if mine {
		data, err := read()
		c.finish(id, e, data, err)
		return data, err
	}
	data, err := c.wait(ctx, e)
	if err != nil && ctx.Err() == nil {
		return read()
	}
	return data, err
}

// begin returns the entry of id and whether the caller is to read it: then it must call
// finish with the outcome, and the entry's other users wait for it.
func (c *chunkCache) begin(id chunk.ID) (*cacheEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[id]; ok {
		if e.elem != nil {
			c.lru.MoveToFront(e.elem)
		}
		return e, false
	}
	e := &cacheEntry{done: make(chan struct{})}
	c.entries[id] = e
	return e, true
}

// wait returns the outcome of entry e's read, once it is finished.
func (c *chunkCache) wait(ctx context.Context, e *cacheEntry) ([]byte, error) {
	select {
	case <-e.done:
		return e.data, e.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// finish records the outcome of the read of entry e (begun by begin) and wakes its
// waiters. A failed read is not cached.
func (c *chunkCache) finish(id chunk.ID, e *cacheEntry, data []byte, err error) {
	e.data, e.err = data, err
	close(e.done)

	c.mu.Lock()
	defer c.mu.Unlock()
	if e.err != nil || int64(len(e.data)) > c.max {
		delete(c.entries, id)
		return
	}
	e.elem = c.lru.PushFront(id)
	c.bytes += int64(len(e.data))
	for c.bytes > c.max {
		last := c.lru.Back()
		lid := last.Value.(chunk.ID)
		c.lru.Remove(last)
		c.bytes -= int64(len(c.entries[lid].data))
		delete(c.entries, lid)
	}
}
