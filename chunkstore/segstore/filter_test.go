package segstore

import (
	"context"
	"sync"
	"testing"

	"github.com/cofferhq/coffer/chunkstore"
)

func TestKeyFilterNoFalseNegatives(t *testing.T) {
	const n = 100_000
	f := newKeyFilter(n)
	for i := range n {
		f.add(chunkstore.ShardKey{ID: tid(i), Index: uint8(i % 6)})
	}
	for i := range n {
		if k := (chunkstore.ShardKey{ID: tid(i), Index: uint8(i % 6)}); !f.mayContain(k) {
			t.Fatalf("added key %d (%s) reported absent", i, keyStr(k))
		}
	}
	// Absent keys: other IDs, and the other indexes of added IDs.
	falsePos := 0
	for i := range n {
		if f.mayContain(chunkstore.ShardKey{ID: tid(n + i), Index: uint8(i % 6)}) {
			falsePos++
		}
		if f.mayContain(chunkstore.ShardKey{ID: tid(i), Index: uint8(i%6 + 1)}) {
			falsePos++
		}
	}
	if rate := float64(falsePos) / (2 * n); rate > 0.03 {
		t.Fatalf("false positive rate %.4f, want at most 0.03 at the sized load", rate)
	}
}

// TestFilterFollowsTheIndex: the key filter must never hide a stored key, whichever way
// the key reached the index (a put, a replay at Open, a RebuildIndex, a compaction copy),
// and absent or deleted keys must still read as absent.
func TestFilterFollowsTheIndex(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{DisableAutoCompact: true, SegmentSize: 64 << 10})
	var stored []chunkstore.Shard
	for i := range 40 {
		sh := mkShard(i, uint8(i%6), 4<<10)
		mustPut(t, s, sh)
		stored = append(stored, sh)
	}
	check := func(when string, s *Store, deleted map[int]bool) {
		t.Helper()
		keys := make([]chunkstore.ShardKey, 0, 2*len(stored))
		for _, sh := range stored {
			keys = append(keys, sh.Key, chunkstore.ShardKey{ID: sh.Key.ID, Index: sh.Key.Index + 1})
		}
		has, err := s.HasShards(ctx, keys)
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		for i := range stored {
			if want := !deleted[i]; has[2*i] != want {
				t.Fatalf("%s: HasShards(%s) = %v, want %v", when, keyStr(keys[2*i]), has[2*i], want)
			}
			if has[2*i+1] {
				t.Fatalf("%s: HasShards(%s) = true for a key never stored", when, keyStr(keys[2*i+1]))
			}
			if deleted[i] {
				expectMissing(t, s, stored[i].Key)
			} else {
				expectShard(t, s, stored[i])
			}
		}
	}
	check("after puts", s, nil)
	deleted := map[int]bool{}
	for i := range 30 {
		deleted[i] = true
		mustDelete(t, s, stored[i].Key)
	}
	check("after deletes", s, deleted)
	if _, err := s.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	check("after compaction", s, deleted)
	if err := s.RebuildIndex(ctx); err != nil {
		t.Fatal(err)
	}
	check("after RebuildIndex", s, deleted)
	mustClose(t, s)
	s = mustOpen(t, dir, Options{DisableAutoCompact: true, SegmentSize: 64 << 10})
	defer mustClose(t, s)
	check("after reopening", s, deleted)
	// A put of a deleted key is a new write (its bits are still set: the index decides).
	mustPut(t, s, stored[0])
	delete(deleted, 0)
	check("after putting a deleted key again", s, deleted)
}

// TestFilterPutThenHasConcurrent: a shard whose PutShards returned is visible to every
// later HasShards, TouchShards and GetShard while other goroutines keep writing.
func TestFilterPutThenHasConcurrent(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t, t.TempDir(), Options{NoSync: true})
	defer mustClose(t, s)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 50 {
				sh := mkShard(w*1000+i, uint8(i%6), 256)
				if err := s.PutShards(ctx, []chunkstore.Shard{sh}); err != nil {
					t.Error(err)
					return
				}
				has, err := s.HasShards(ctx, []chunkstore.ShardKey{sh.Key})
				if err != nil || !has[0] {
					t.Errorf("HasShards(%s) right after its put = %v, %v", keyStr(sh.Key), has, err)
					return
				}
				if got, err := s.TouchShards(ctx, []chunkstore.ShardKey{sh.Key}); err != nil || !got[0] {
					t.Errorf("TouchShards(%s) right after its put = %v, %v", keyStr(sh.Key), got, err)
					return
				}
				if _, err := s.GetShard(ctx, sh.Key); err != nil {
					t.Errorf("GetShard(%s) right after its put: %v", keyStr(sh.Key), err)
					return
				}
			}
		})
	}
	wg.Wait()
}
