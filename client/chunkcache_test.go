package client

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cofferhq/coffer/chunkstore/chunk"
)

func TestChunkCacheCoalescesAndEvicts(t *testing.T) {
	ctx := context.Background()
	c := newChunkCache(3 << 10)
	var reads atomic.Int32
	gate := make(chan struct{})
	readA := func() ([]byte, error) {
		reads.Add(1)
		<-gate
		return make([]byte, 1<<10), nil
	}
	a := chunk.ID{1}
	// Eight concurrent users of one chunk: one read.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if d, err := c.get(ctx, a, readA); err != nil || len(d) != 1<<10 {
				t.Errorf("get: %d bytes, %v", len(d), err)
			}
		})
	}
	for reads.Load() == 0 { // until the first user is reading; the others wait on it
		runtime.Gosched()
	}
	close(gate)
	wg.Wait()
	if n := reads.Load(); n != 1 {
		t.Fatalf("8 concurrent gets of one chunk read it %d times", n)
	}
	// Fill past the budget: the least recently used chunk goes.
	mk := func() ([]byte, error) { reads.Add(1); return make([]byte, 1<<10), nil }
	for i := byte(2); i <= 4; i++ {
		if _, err := c.get(ctx, chunk.ID{i}, mk); err != nil {
			t.Fatal(err)
		}
	}
	before := reads.Load()
	if _, err := c.get(ctx, a, mk); err != nil { // evicted: read again
		t.Fatal(err)
	}
	if _, err := c.get(ctx, chunk.ID{4}, mk); err != nil { // still cached
		t.Fatal(err)
	}
	if got := reads.Load() - before; got != 1 {
		t.Fatalf("%d reads after eviction, want 1 (only the evicted chunk)", got)
	}
	if c.bytes > c.max {
		t.Fatalf("cache holds %d bytes, budget %d", c.bytes, c.max)
	}
	// Errors are not cached.
	boom := errors.New("boom")
	if _, err := c.get(ctx, chunk.ID{9}, func() ([]byte, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("failed read: %v", err)
	}
	if d, err := c.get(ctx, chunk.ID{9}, mk); err != nil || len(d) == 0 {
		t.Fatalf("retry after a failed read: %v", err)
	}
}
