package chunkrpc

import (
	"context"
	"fmt"
	"testing"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/grant"
	"github.com/cofferhq/coffer/chunkstore/memstore"
	"github.com/cofferhq/coffer/chunkstore/reflist"
)

// TestGrantCacheBoundedByIDs: the grant gate keeps the reference lists of at most
// grantCacheSize snapshots and at most maxIDs reference IDs in all, whatever the size of
// the snapshots restored; a snapshot larger than the bound is served but not kept.
func TestGrantCacheBoundedByIDs(t *testing.T) {
	ctx := context.Background()
	store := memstore.NewChunks()
	gg := &grantGate{lists: map[grantListKey][][]chunk.ID{}, maxIDs: 1000}
	snapshot := func(i, n int) grant.Grant {
		ids := make([]chunk.ID, n)
		for j := range ids {
			ids[j] = chunk.ID{byte(i), byte(i >> 8), byte(j), byte(j >> 8), 1}
		}
		g := grant.Grant{Vault: "v", Snapshot: chunk.ID{byte(i), byte(i >> 8), 2}}
		var cs []chunkstore.Chunk
		for _, c := range reflist.Encode(ids) {
			g.Refs = append(g.Refs, c.ID)
			cs = append(cs, chunkstore.Chunk{ID: c.ID, Data: c.Data})
		}
		if err := store.Put(ctx, cs); err != nil {
			t.Fatal(err)
		}
		return g
	}
	check := func(when string) {
		t.Helper()
		total := 0
		for _, l := range gg.lists {
			for _, ids := range l {
				total += len(ids)
			}
		}
		if total != gg.ids || total > gg.maxIDs || len(gg.lists) > grantCacheSize {
			t.Fatalf("%s: %d snapshots with %d IDs cached (counted %d), bound %d snapshots, %d IDs",
				when, len(gg.lists), total, gg.ids, grantCacheSize, gg.maxIDs)
		}
	}
	idsIn := func(lists [][]chunk.ID) int {
		n := 0
		for _, l := range lists {
			n += len(l)
		}
		return n
	}
	for i := range 40 {
		g := snapshot(i, 300)
		lists, err := gg.refLists(ctx, store, g)
		if err != nil || idsIn(lists) != 300 {
			t.Fatalf("snapshot %d: %d lists of %d IDs, %v", i, len(lists), idsIn(lists), err)
		}
		check(fmt.Sprintf("after snapshot %d", i))
	}
	big := snapshot(100, 1500)
	lists, err := gg.refLists(ctx, store, big)
	if err != nil || idsIn(lists) != 1500 {
		t.Fatalf("a snapshot over the bound: %d lists of %d IDs, %v", len(lists), idsIn(lists), err)
	}
	if _, ok := gg.lists[grantListKeyOf(big)]; ok {
		t.Fatal("a snapshot over the bound was cached")
	}
	check("after a snapshot over the bound")
}
