package segstore

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/storetest"
)

func gcEpoch() time.Time { return time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC) }

// gcChunkShards returns count shards of test chunk n.
func gcChunkShards(n, count int) []chunkstore.Shard {
	out := make([]chunkstore.Shard, count)
	for i := range out {
		out[i] = mkShard(n, uint8(i), 500+37*i+n)
	}
	return out
}

func candidateIDs(t *testing.T, s *Store, cutoff time.Time) []chunk.ID {
	t.Helper()
	var ids []chunk.ID
	if err := s.GCCandidates(context.Background(), nil, cutoff, func(id chunk.ID, _ int64) error {
		ids = append(ids, id)
		return nil
	}); err != nil {
		t.Fatalf("GCCandidates: %v", err)
	}
	return ids
}

func mustSweepIDs(t *testing.T, s *Store, cutoff time.Time, ids ...chunk.ID) chunkstore.SweepResult {
	t.Helper()
	res, err := s.SweepChunks(context.Background(), ids, cutoff)
	if err != nil {
		t.Fatalf("SweepChunks: %v", err)
	}
	return res
}

func touchEntry(t *testing.T, s *Store, id chunk.ID) (time.Time, bool) {
	t.Helper()
	v, closer, err := s.db.Get(appendTouchKey(nil, id))
	if errors.Is(err, pebble.ErrNotFound) {
		return time.Time{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	ns, err := parseNanos(v)
	if err != nil {
		t.Fatal(err)
	}
	return time.Unix(0, ns).UTC(), true
}

func TestTouchTimesSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	clk := storetest.NewClock(gcEpoch())
	opts := Options{Now: clk.Now, SegmentSize: MinSegmentSize} // sync on
	t0 := clk.Now()
	a, b := gcChunkShards(1, 3), gcChunkShards(2, 2)
	s := mustOpen(t, dir, opts)
	mustPut(t, s, append(a, b...)...)
	t1 := clk.Advance(time.Hour)
	if got, err := s.TouchShards(context.Background(), []chunkstore.ShardKey{a[2].Key}); err != nil || !got[0] {
		t.Fatalf("TouchShards = %v, %v", got, err)
	}
	mustClose(t, s)

	clk.Advance(time.Hour)
	s = mustOpen(t, dir, opts)
	if at, ok := touchEntry(t, s, a[0].Key.ID); !ok || !at.Equal(t1) {
		t.Errorf("touch entry of a after reopen = %v, %v; want %v", at, ok, t1)
	}
	cutoff := t0.Add(30 * time.Minute)
	if got := candidateIDs(t, s, cutoff); !slices.Equal(got, []chunk.ID{b[0].Key.ID}) {
		t.Fatalf("candidates after reopen = %v, want only b", got)
	}
	res := mustSweepIDs(t, s, cutoff, a[0].Key.ID, b[0].Key.ID)
	if res.Chunks != 1 || res.Shards != 2 || res.Spared != 1 {
		t.Fatalf("sweep = %+v, want b swept and a spared", res)
	}
	if _, ok := touchEntry(t, s, b[0].Key.ID); ok {
		t.Error("b's touch entry survived its sweep")
	}
	mustClose(t, s)

	// The sweep is durable, and a rebuild from the segments does not bring b back.
	for _, rebuild := range []bool{false, true} {
		if rebuild {
			if err := os.RemoveAll(filepath.Join(dir, "index")); err != nil {
				t.Fatal(err)
			}
		}
		s = mustOpen(t, dir, opts)
		for _, sh := range a {
			expectShard(t, s, sh)
		}
		for _, sh := range b {
			expectMissing(t, s, sh.Key)
		}
		mustClose(t, s)
	}
}

// After a rebuild, touch times are gone; every chunk must count as written at the
// rebuild, so no sweep with an earlier cutoff takes it.
func TestRebuildSparesEverythingBeforeIt(t *testing.T) {
	for _, how := range []string{"RebuildIndex", "index dir lost"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			clk := storetest.NewClock(gcEpoch())
			opts := Options{Now: clk.Now, NoSync: true}
			t0 := clk.Now()
			a := gcChunkShards(1, 2)
			s := mustOpen(t, dir, opts)
			mustPut(t, s, a...)
			t1 := clk.Advance(time.Hour)
			if how == "RebuildIndex" {
				if err := s.RebuildIndex(context.Background()); err != nil {
					t.Fatal(err)
				}
			} else {
				mustClose(t, s)
				if err := os.RemoveAll(filepath.Join(dir, "index")); err != nil {
					t.Fatal(err)
				}
				s = mustOpen(t, dir, opts)
			}
			defer mustClose(t, s)
			clk.Advance(time.Hour)
			for _, cutoff := range []time.Time{t0.Add(time.Nanosecond), t0.Add(30 * time.Minute), t1} {
				if got := candidateIDs(t, s, cutoff); len(got) != 0 {
					t.Errorf("cutoff %v: candidates %v after a rebuild at %v", cutoff, got, t1)
				}
				if res := mustSweepIDs(t, s, cutoff, a[0].Key.ID); res.Chunks != 0 || res.Spared != 1 {
					t.Errorf("cutoff %v: sweep %+v after a rebuild at %v, want spared", cutoff, res, t1)
				}
			}
			for _, sh := range a {
				expectShard(t, s, sh)
			}
			// A cutoff after the rebuild may take it.
			if res := mustSweepIDs(t, s, t1.Add(time.Nanosecond), a[0].Key.ID); res.Chunks != 1 {
				t.Errorf("sweep after the rebuild time = %+v, want the chunk swept", res)
			}
		})
	}
}

// Index batches are committed without sync, so a crash can lose the touch entries of
// puts whose records replay re-indexes at Open. Replay must stamp them with the open
// time, not leave them at the (older) floor.
func TestReplayStampsOpenTime(t *testing.T) {
	dir, saved := t.TempDir(), t.TempDir()
	clk := storetest.NewClock(gcEpoch())
	opts := Options{Now: clk.Now, NoSync: true}
	a, b := gcChunkShards(1, 1), gcChunkShards(2, 2)
	s := mustOpen(t, dir, opts)
	mustPut(t, s, a...)
	mustClose(t, s)
	copyDir(t, filepath.Join(dir, "index"), saved)

	t1 := clk.Advance(time.Hour)
	s = mustOpen(t, dir, opts)
	mustPut(t, s, b...) // written at t1; its index batch is "lost" below
	mustClose(t, s)
	if err := os.RemoveAll(filepath.Join(dir, "index")); err != nil {
		t.Fatal(err)
	}
	copyDir(t, saved, filepath.Join(dir, "index"))

	t2 := clk.Advance(time.Hour)
	s = mustOpen(t, dir, opts)
	defer mustClose(t, s)
	if at, ok := touchEntry(t, s, b[0].Key.ID); !ok || !at.Equal(t2) {
		t.Errorf("replayed chunk's touch entry = %v, %v; want the open time %v", at, ok, t2)
	}
	// a (written at t0, index intact) is a candidate; b is not, even at a cutoff past its
	// real write time.
	if got := candidateIDs(t, s, t1.Add(time.Minute)); !slices.Equal(got, []chunk.ID{a[0].Key.ID}) {
		t.Errorf("candidates = %v, want only a", got)
	}
	for _, sh := range b {
		expectShard(t, s, sh)
	}
}

// An index written before touch times existed (version 1) is upgraded in place, and every
// chunk in it counts as written at the upgrade.
func TestUpgradeFromIndexVersion1(t *testing.T) {
	dir := t.TempDir()
	clk := storetest.NewClock(gcEpoch())
	opts := Options{Now: clk.Now, NoSync: true}
	t0 := clk.Now()
	a := gcChunkShards(1, 2)
	s := mustOpen(t, dir, opts)
	mustPut(t, s, a...)
	mustClose(t, s)

	// Turn the index into a version 1 index: no touch keys, no floor.
	db, err := pebble.Open(filepath.Join(dir, "index"), &pebble.Options{FormatMajorVersion: pebble.FormatNewest})
	if err != nil {
		t.Fatal(err)
	}
	b := db.NewBatch()
	if err := errors.Join(
		b.DeleteRange(touchLower, touchUpper, nil),
		b.Delete(keyTouchFloor, nil),
		b.Set(keyVersion, binary.BigEndian.AppendUint32(nil, 1), nil),
		b.Commit(pebble.Sync),
		b.Close(),
		db.Close(),
	); err != nil {
		t.Fatal(err)
	}

	t1 := clk.Advance(time.Hour)
	s = mustOpen(t, dir, opts)
	if got := candidateIDs(t, s, t0.Add(30*time.Minute)); len(got) != 0 {
		t.Errorf("candidates right after the upgrade = %v, want none", got)
	}
	if got := candidateIDs(t, s, t1.Add(time.Nanosecond)); len(got) != 1 {
		t.Errorf("candidates with a cutoff past the upgrade = %v, want a", got)
	}
	mustClose(t, s)
	// The upgrade is persisted: a second open keeps the floor and the version.
	clk.Advance(time.Hour)
	s = mustOpen(t, dir, opts)
	defer mustClose(t, s)
	if got := candidateIDs(t, s, t1.Add(time.Nanosecond)); len(got) != 1 {
		t.Errorf("candidates after reopening the upgraded index = %v, want a", got)
	}
	ver, _, err := s.metaValue(keyVersion)
	if err != nil || binary.BigEndian.Uint32(ver) != indexVersion {
		t.Errorf("index version after upgrade = %x, %v; want %d", ver, err, indexVersion)
	}
}

// A sweep that spans several writer steps (more than sweepBatch IDs) adds up its results.
func TestSweepLongList(t *testing.T) {
	clk := storetest.NewClock(gcEpoch())
	s := openTest(t, Options{Now: clk.Now, NoSync: true})
	var ids []chunk.ID
	var keep []chunkstore.Shard
	for n := range 3 * sweepBatch / 2 {
		sh := mkShard(n, 0, 16)
		ids = append(ids, sh.Key.ID)
		if n%100 == 0 {
			keep = append(keep, sh)
		}
		mustPut(t, s, sh)
	}
	cutoff := clk.Advance(time.Hour)
	var touch []chunkstore.ShardKey
	for _, sh := range keep {
		touch = append(touch, sh.Key)
	}
	if _, err := s.TouchShards(context.Background(), touch); err != nil {
		t.Fatal(err)
	}
	res := mustSweepIDs(t, s, cutoff, ids...)
	want := chunkstore.SweepResult{Chunks: int64(len(ids) - len(keep)), Shards: int64(len(ids) - len(keep)), Bytes: 16 * int64(len(ids)-len(keep)), Spared: int64(len(keep))}
	if res != want {
		t.Errorf("sweep = %+v, want %+v", res, want)
	}
	if st := stats(t, s); st.Shards != int64(len(keep)) {
		t.Errorf("stats after sweep = %+v, want %d shards", st, len(keep))
	}
	for _, sh := range keep {
		expectShard(t, s, sh)
	}
}

// TestTouchManyLooksUpInOrder: a touch of more keys than touchIterMin, with keys the key
// filter lets through but the index does not hold (here: no filter at all), answers as
// HasShards does and stamps only the chunks of stored keys, also for stored keys that
// are read back from flushed tables rather than the memtable.
func TestTouchManyLooksUpInOrder(t *testing.T) {
	clk := storetest.NewClock(gcEpoch())
	s := mustOpen(t, t.TempDir(), Options{Now: clk.Now, NoSync: true})
	defer mustClose(t, s)
	s.filter = nil // every key reaches the index lookups
	var keys []chunkstore.ShardKey
	var stored, absent []chunk.ID
	for n := 1; n <= 3*touchIterMin; n++ {
		shards := gcChunkShards(n, 2)
		if n%4 == 0 {
			absent = append(absent, shards[0].Key.ID)
		} else {
			mustPut(t, s, shards...)
			stored = append(stored, shards[0].Key.ID)
		}
		keys = append(keys, shards[1].Key, chunkstore.ShardKey{ID: shards[0].Key.ID, Index: 4})
	}
	if err := s.db.Flush(); err != nil {
		t.Fatal(err)
	}
	t1 := clk.Advance(time.Hour)
	slices.Reverse(keys)
	want, err := s.HasShards(context.Background(), keys)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.TouchShards(context.Background(), keys)
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("TouchShards = %v, %v; HasShards = %v", got, err, want)
	}
	for _, id := range stored {
		if at, ok := touchEntry(t, s, id); !ok || !at.Equal(t1) {
			t.Errorf("touch entry of stored chunk %s = %v, %v; want %v", id.Str(), at, ok, t1)
		}
	}
	for _, id := range absent {
		if at, ok := touchEntry(t, s, id); ok {
			t.Errorf("absent chunk %s has a touch entry (%v)", id.Str(), at)
		}
	}
}
