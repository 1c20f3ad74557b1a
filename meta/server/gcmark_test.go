package server

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/reflist"
	"github.com/cofferhq/coffer/meta"
)

// countingGets counts the chunk reads the leader makes.
type countingGets struct {
	meta.CommitChunks
	mu sync.Mutex
	n  map[chunk.ID]int
}

func (c *countingGets) Get(ctx context.Context, id chunk.ID) ([]byte, error) {
	c.mu.Lock()
	c.n[id]++
	c.mu.Unlock()
	return c.CommitChunks.Get(ctx, id)
}

func (c *countingGets) reads(id chunk.ID) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[id]
}

// TestGCMarkReadsEachReferenceListOnce: snapshots that share reference-list chunks
// (content-defined, so a snapshot shares most with its parent) cost one read of each per
// marking, and a snapshot that lists another's reference-list chunk as one of its own
// references (an agent may list any ID) does not stop that chunk's IDs from being
// marked: the attacker's snapshot is marked first, and every chunk of the victim's stays
// live.
func TestGCMarkReadsEachReferenceListOnce(t *testing.T) {
	var counter *countingGets
	c := newCluster(t, 1, func(cfg *Config) {
		counter = &countingGets{CommitChunks: cfg.Chunks, n: map[chunk.ID]int{}}
		cfg.Chunks = counter
	})
	ctx := ctxT(t)
	l := c.srv[c.leader()]
	if _, err := l.CreateVault(ctx, newVault("v")); err != nil {
		t.Fatal(err)
	}
	victim := storedSnapshot(t, c.chunks, "v", 5, 0) // stored, committed last
	victimRef := victim.Refs[0]
	victimIDs := listIDs(t, c.chunks, victim.Refs)

	// The attacker's snapshot lists its own tree and the victim's reference-list chunk.
	attacker := storedSnapshot(t, c.chunks, "v", 0, 0)
	list := reflist.Encode([]chunk.ID{attacker.Tree, victimRef})
	for _, r := range list {
		if err := c.chunks.Put(ctx, []chunkstore.Chunk{chunkstore.Chunk(r)}); err != nil {
			t.Fatal(err)
		}
	}
	attacker.Refs = nil
	for _, r := range list {
		attacker.Refs = append(attacker.Refs, r.ID)
	}
	if _, err := l.CommitSnapshot(ctx, attacker); err != nil {
		t.Fatal(err)
	}
	if _, err := l.CommitSnapshot(ctx, victim); err != nil {
		t.Fatal(err)
	}
	sibling := victim // the same references, another snapshot
	sibling.ID, sibling.Start = randID(t), time.Now()
	if _, err := l.CommitSnapshot(ctx, sibling); err != nil {
		t.Fatal(err)
	}

	before := counter.reads(victimRef)
	live := map[chunk.ID]struct{}{}
	var rep meta.GCReport
	if err := l.mark(ctx, live, map[meta.SnapshotID]struct{}{}, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Snapshots != 3 {
		t.Fatalf("marked %d snapshots, want 3", rep.Snapshots)
	}
	for _, id := range victimIDs {
		if _, ok := live[id]; !ok {
			t.Fatalf("chunk %s of the victim's reference list is not marked live", id.Str())
		}
	}
	if got := counter.reads(victimRef) - before; got != 1 {
		t.Fatalf("the shared reference-list chunk was read %d times by one marking, want 1", got)
	}
}
