package snapshot

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/memstore"
	"github.com/cofferhq/coffer/client/crypt"
	"github.com/cofferhq/coffer/client/tree"
)

// batchCounter is a store with batched reads that counts its calls.
type batchCounter struct {
	chunkstore.Store
	gets, batches atomic.Int64
}

func (b *batchCounter) Get(ctx context.Context, id chunk.ID) ([]byte, error) {
	b.gets.Add(1)
	return b.Store.Get(ctx, id)
}

func (b *batchCounter) GetMany(ctx context.Context, ids []chunk.ID) []chunkstore.GetResult {
	b.batches.Add(1)
	return chunkstore.GetMany(ctx, b.Store, ids)
}

// TestTreesLoadMany: trees not in the cache come from one batched read (no read per
// tree), in the order asked, each opened and checked against its ID; a tree stored
// under another's ID fails with crypt.ErrCorrupt naming it, a missing one with the
// store's error; a store without batched reads is read tree by tree.
func TestTreesLoadMany(t *testing.T) {
	ctx := context.Background()
	keys := testKeys()
	store := &batchCounter{Store: memstore.NewChunks()}
	var ids []chunk.ID
	for i := range 10 {
		name := strings.Repeat("x", i+1)
		ids = append(ids, storeTree(t, store, keys, &tree.Tree{Nodes: []tree.Node{{Name: name, Type: tree.TypeFile}}}))
	}
	trees := New(store, keys)
	got, sizes, err := trees.LoadMany(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	for i, tr := range got {
		if len(tr.Nodes) != 1 || len(tr.Nodes[0].Name) != i+1 || sizes[i] == 0 {
			t.Fatalf("tree %d: %+v (%d bytes)", i, tr, sizes[i])
		}
	}
	if g, b := store.gets.Load(), store.batches.Load(); g != 0 || b != 1 {
		t.Fatalf("%d single reads and %d batched reads for 10 trees, want 0 and 1", g, b)
	}

	// A chunk stored under the ID of a tree it is not: refused, naming that ID.
	sealed, err := store.Store.Get(ctx, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	var forged chunk.ID
	forged[0] = 0xee
	if err := store.Store.Put(ctx, []chunkstore.Chunk{{ID: forged, Data: sealed}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := trees.LoadMany(ctx, []chunk.ID{ids[1], forged}); !errors.Is(err, crypt.ErrCorrupt) || !strings.Contains(err.Error(), forged.Str()) {
		t.Fatalf("forged tree: %v, want ErrCorrupt naming %s", err, forged.Str())
	}
	var missing chunk.ID
	missing[0] = 0xdd
	if _, _, err := trees.LoadMany(ctx, []chunk.ID{missing, ids[2]}); !errors.Is(err, chunkstore.ErrNotFound) || !strings.Contains(err.Error(), missing.Str()) {
		t.Fatalf("missing tree: %v, want ErrNotFound naming %s", err, missing.Str())
	}

	// Without batched reads: one Get per tree, the same trees.
	plain := &getCounter{Store: store.Store}
	got2, _, err := New(plain, keys).LoadMany(ctx, ids[:3])
	if err != nil || plain.gets.Load() != 3 || got2[2].Nodes[0].Name != "xxx" {
		t.Fatalf("unbatched store: %v, %d reads", err, plain.gets.Load())
	}
}
