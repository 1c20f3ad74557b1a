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
	c.mu.Lock()
	if e, ok := c.entries[id]; ok {
		if e.elem != nil {
			c.lru.MoveToFront(e.elem)
		}
		c.mu.Unlock()
		select {
		case <-e.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if e.err != nil {
			return read()
		}
		return e.data, nil
	}
	e := &cacheEntry{done: make(chan struct{})}
	c.entries[id] = e
	c.mu.Unlock()

	e.data, e.err = read()
	close(e.done)

	c.mu.Lock()
	defer c.mu.Unlock()
	if e.err != nil || int64(len(e.data)) > c.max {
		delete(c.entries, id)
		return e.data, e.err
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
	return e.data, nil
}
