package segstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/storetest"
)

// segmentBytes sums the sizes of the segment files in dir, as the filesystem sees them
// (a file a running compaction removes meanwhile counts as 0).
func segmentBytes(t *testing.T, dir string) int64 {
	t.Helper()
	nums, err := listSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, num := range nums {
		fi, err := os.Stat(filepath.Join(dir, segName(num)))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

func mustCompact(t *testing.T, s *Store) CompactResult {
	t.Helper()
	res, err := s.Compact(context.Background())
	if err != nil {
		t.Fatalf("Compact: %v", err)
	}
	return res
}

// putDeleteNinety puts n shards in batches and deletes 9 of every 10; it returns the
// kept and the deleted shards.
func putDeleteNinety(t *testing.T, s *Store, n, size int) (kept, deleted []chunkstore.Shard) {
	t.Helper()
	var batch []chunkstore.Shard
	for i := range n {
		sh := mkShard(i, uint8(i%6), size+i%97)
		if i%10 == 0 {
			kept = append(kept, sh)
		} else {
			deleted = append(deleted, sh)
		}
		if batch = append(batch, sh); len(batch) == 8 {
			mustPut(t, s, batch...)
			batch = batch[:0]
		}
	}
	mustPut(t, s, batch...)
	var keys []chunkstore.ShardKey
	for _, sh := range deleted {
		if keys = append(keys, sh.Key); len(keys) == 50 {
			mustDelete(t, s, keys...)
			keys = keys[:0]
		}
	}
	mustDelete(t, s, keys...)
	return kept, deleted
}

func expectLayout(t *testing.T, s *Store, kept, deleted []chunkstore.Shard) {
	t.Helper()
	for _, sh := range kept {
		expectShard(t, s, sh)
	}
	for _, sh := range deleted {
		expectMissing(t, s, sh.Key)
	}
	var want int64
	for _, sh := range kept {
		want += int64(len(sh.Data))
	}
	if st := stats(t, s); st.Shards != int64(len(kept)) || st.Bytes != want {
		t.Errorf("stats = %+v, want %d shards of %d bytes", st, len(kept), want)
	}
}

func TestCompactReclaimsSpace(t *testing.T) {
	dir := t.TempDir()
	opts := Options{NoSync: true, SegmentSize: 64 << 10, DisableAutoCompact: true}
	s := mustOpen(t, dir, opts)
	kept, deleted := putDeleteNinety(t, s, 1500, 1000)
	before := segmentBytes(t, dir)
	segsBefore, _ := s.Segments()

	res := mustCompact(t, s)
	if tot := s.CompactTotals(); tot != (CompactTotals{Runs: 1, Segments: int64(res.Segments), Copied: res.Copied, Reclaimed: res.Reclaimed}) {
		t.Errorf("CompactTotals after one Compact = %+v, result %+v", tot, res)
	}
	after := segmentBytes(t, dir)
	segsAfter, _ := s.Segments()
	drop := 1 - float64(after)/float64(before)
	t.Logf("segment files: %d bytes in %d files -> %d bytes in %d files (%.1f%% reclaimed); %+v",
		before, len(segsBefore), after, len(segsAfter), 100*drop, res)
	if drop < 0.80 {
		t.Errorf("compaction reclaimed %.1f%% of segment bytes, want at least 80%%", 100*drop)
	}
	// The files shrank by what the result says, less the headers of segments the copies
	// rolled into.
	if got, want := before-after, res.Reclaimed-res.Copied; got > want || got < want-fileHeaderSize*int64(len(segsAfter)) {
		t.Errorf("result says %d bytes freed, the files shrank by %d", want, got)
	}
	expectLayout(t, s, kept, deleted)
	// A second compaction finds nothing to do, except the segment that was current
	// during the first (never compacted then) if the copies rolled the writer off it
	// and left it below the threshold; a third finds nothing.
	wasCur := segsBefore[len(segsBefore)-1].Num
	var curLive int64
	for _, sg := range segsAfter {
		if sg.Num == wasCur {
			curLive = sg.LiveBytes
		}
	}
	if res := mustCompact(t, s); res.Segments > 1 || res.Copied > curLive {
		t.Errorf("second Compact = %+v, want at most segment %d (%d live bytes) compacted", res, wasCur, curLive)
	}
	if res := mustCompact(t, s); res.Segments != 0 || res.Copied != 0 {
		t.Errorf("third Compact = %+v, want nothing done", res)
	}
	mustClose(t, s)

	s = mustOpen(t, dir, opts)
	expectLayout(t, s, kept, deleted)
	mustClose(t, s)
	// The segments alone still say the same: no deleted shard comes back.
	if err := os.RemoveAll(filepath.Join(dir, "index")); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, dir, opts)
	defer mustClose(t, s)
	expectLayout(t, s, kept, deleted)
}

// A delete record in a compacted segment must survive while an older segment still holds
// the put it cancels, and a key stored again after such a delete must still end up
// stored with its new data when the index is rebuilt from the segments.
func TestCompactKeepsDeletesOlderPutsNeed(t *testing.T) {
	dir := t.TempDir()
	opts := Options{NoSync: true, SegmentSize: MinSegmentSize, DisableAutoCompact: true}
	s := mustOpen(t, dir, opts)
	k, j, filler := mkShard(1, 0, 1000), mkShard(2, 0, 300), mkShard(3, 0, 2000)
	mustPut(t, s, k, j, filler) // segment 1: stays mostly live
	g := mkShard(4, 0, 3000)
	mustPut(t, s, g)
	mustDelete(t, s, k.Key, j.Key) // segment 2: g, then the deletes of k and j
	h := mkShard(5, 0, 3000)
	mustPut(t, s, h) // segment 3
	mustDelete(t, s, g.Key)
	kNew := mkShard(1, 0, 500)
	kNew.Data[0] ^= 0xff // k written again, with other bytes
	mustPut(t, s, kNew)
	segs, _ := s.Segments()
	if len(segs) != 3 {
		t.Fatalf("setup: %d segments, want 3: %+v", len(segs), segs)
	}

	res := mustCompact(t, s)
	if res.Segments != 1 {
		t.Fatalf("Compact = %+v, want segment 2 removed", res)
	}
	kept, gone := []chunkstore.Shard{filler, h, kNew}, []chunkstore.Shard{j, g}
	expectLayout(t, s, kept, gone)
	mustClose(t, s)
	if err := os.RemoveAll(filepath.Join(dir, "index")); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, dir, opts)
	defer mustClose(t, s)
	expectLayout(t, s, kept, gone)
}

// A reader that holds a segment keeps reading it after compaction removes it; the file
// is closed when the reader lets go, and new lookups find the copies.
func TestCompactWaitsForReaders(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{NoSync: true, SegmentSize: MinSegmentSize, DisableAutoCompact: true})
	defer mustClose(t, s)
	keep, drop := mkShard(1, 0, 1000), mkShard(2, 0, 2000)
	mustPut(t, s, keep, drop)
	mustPut(t, s, mkShard(3, 0, 3000)) // rolls to segment 2, so segment 1 is not current
	mustDelete(t, s, drop.Key)
	loc, err := s.lookup(keep.Key, nil)
	if err != nil {
		t.Fatal(err)
	}
	held := s.acquireSegment(loc.seg)
	if held == nil || loc.seg != 1 {
		t.Fatalf("setup: shard in segment %d", loc.seg)
	}
	if res := mustCompact(t, s); res.Segments != 1 {
		t.Fatalf("Compact = %+v, want segment 1 removed", res)
	}
	if s.segment(1) != nil {
		t.Fatal("segment 1 still registered after compaction")
	}
	if _, err := os.Stat(held.path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("segment file after compaction: %v, want removed", err)
	}
	b := make([]byte, loc.dataLen)
	if err := readFull(held.f, b, loc.dataOff()); err != nil {
		t.Fatalf("reading a held segment after its removal: %v", err)
	}
	if string(b) != string(keep.Data) {
		t.Fatal("held segment returned other bytes")
	}
	held.release()
	if err := readFull(held.f, b, loc.dataOff()); !errors.Is(err, os.ErrClosed) {
		t.Errorf("read after the last release = %v, want the file closed", err)
	}
	expectShard(t, s, keep) // through the index, from the copy
}

// An injected failure stops compaction after a victim's copies are appended and indexed
// but before the index is synced and the file removed: what a crash there leaves on
// disk. With the unsynced index batches lost as well, replay must still find everything.
func TestCompactInterruptedLosesNothing(t *testing.T) {
	for _, lostIndex := range []bool{false, true} {
		name := map[bool]string{false: "index kept", true: "unsynced index batches lost"}[lostIndex]
		t.Run(name, func(t *testing.T) {
			dir, saved := t.TempDir(), t.TempDir()
			opts := Options{NoSync: true, SegmentSize: 16 << 10, DisableAutoCompact: true}
			s := mustOpen(t, dir, opts)
			kept, deleted := putDeleteNinety(t, s, 400, 700)
			mustClose(t, s)
			copyDir(t, filepath.Join(dir, "index"), saved)

			failing := opts
			failing.beforeRemove = func(num uint32) error { return errors.New("injected crash") }
			s = mustOpen(t, dir, failing)
			if _, err := s.Compact(context.Background()); err == nil {
				t.Fatal("Compact succeeded despite the injected failure")
			}
			expectLayout(t, s, kept, deleted)
			mustClose(t, s)
			if lostIndex {
				if err := os.RemoveAll(filepath.Join(dir, "index")); err != nil {
					t.Fatal(err)
				}
				copyDir(t, saved, filepath.Join(dir, "index"))
			}

			s = mustOpen(t, dir, opts)
			expectLayout(t, s, kept, deleted)
			before := segmentBytes(t, dir)
			res := mustCompact(t, s)
			if res.Segments == 0 || segmentBytes(t, dir) >= before {
				t.Errorf("compaction after the interruption = %+v, %d -> %d bytes", res, before, segmentBytes(t, dir))
			}
			expectLayout(t, s, kept, deleted)
			mustClose(t, s)
			if err := os.RemoveAll(filepath.Join(dir, "index")); err != nil {
				t.Fatal(err)
			}
			s = mustOpen(t, dir, opts)
			defer mustClose(t, s)
			expectLayout(t, s, kept, deleted)
		})
	}
}

// Readers race compactions (and the deletes that feed them); every read of a live shard
// must succeed with the right bytes.
func TestCompactConcurrentReaders(t *testing.T) {
	s := openTest(t, Options{NoSync: true, SegmentSize: 8 << 10, DisableAutoCompact: true})
	ctx := context.Background()
	var live, doomed []chunkstore.Shard
	for i := range 240 {
		sh := mkShard(i, 0, 300+i%50)
		if i%4 == 0 {
			live = append(live, sh)
		} else {
			doomed = append(doomed, sh)
		}
		mustPut(t, s, sh)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make([]error, 3)
	reads := make([]int, len(errs))
	for r := range errs {
		wg.Go(func() {
			for i := r; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				want := live[i%len(live)]
				got, err := s.GetShard(ctx, want.Key)
				if err == nil && string(got.Data) != string(want.Data) {
					err = errors.New("wrong bytes for " + keyStr(want.Key))
				}
				if err != nil {
					errs[r] = err
					return
				}
				reads[r]++
			}
		})
	}
	var compacted CompactResult
	for len(doomed) > 0 {
		n := min(20, len(doomed))
		var keys []chunkstore.ShardKey
		for _, sh := range doomed[:n] {
			keys = append(keys, sh.Key)
		}
		doomed = doomed[n:]
		mustDelete(t, s, keys...)
		res := mustCompact(t, s)
		compacted.Segments += res.Segments
	}
	close(stop)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if compacted.Segments == 0 {
		t.Fatal("no segment was compacted")
	}
	t.Logf("%d segments compacted under %v reads", compacted.Segments, reads)
	for _, sh := range live {
		expectShard(t, s, sh)
	}
}

// With automatic compaction on, deletes alone get the space back.
func TestAutoCompactAfterDeletes(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{NoSync: true, SegmentSize: 16 << 10})
	defer mustClose(t, s)
	kept, deleted := putDeleteNinety(t, s, 400, 700)
	full := int64(400 * 800)
	waitFor(t, func() bool { return segmentBytes(t, dir) < full/4 })
	// The compactor may still be running; Compact waits for it.
	mustCompact(t, s)
	expectLayout(t, s, kept, deleted)
}

func TestCompactThresholdValidated(t *testing.T) {
	for _, th := range []float64{-0.5, 1.01} {
		if _, err := Open(t.TempDir(), Options{CompactThreshold: th}); err == nil {
			t.Errorf("Open accepted CompactThreshold %v", th)
		}
	}
}

// A victim with a damaged live record cannot be removed: compaction keeps it (the shard
// still reads as corrupt, for repair to see) and does not rescan it until a rebuild.
func TestCompactKeepsDamagedSegment(t *testing.T) {
	s := openTest(t, Options{NoSync: true, SegmentSize: MinSegmentSize, DisableAutoCompact: true})
	a, b := mkShard(1, 0, 1000), mkShard(2, 0, 2000)
	mustPut(t, s, a, b)
	mustPut(t, s, mkShard(3, 0, 3000)) // rolls to segment 2
	mustDelete(t, s, b.Key)
	path, off, _, err := s.Locate(a.Key)
	if err != nil {
		t.Fatal(err)
	}
	flipByte(t, path, off+10)

	res := mustCompact(t, s)
	if res.Segments != 0 {
		t.Fatalf("Compact removed a segment holding a damaged live record: %+v", res)
	}
	if _, err := s.GetShard(context.Background(), a.Key); !errors.Is(err, chunkstore.ErrCorrupt) {
		t.Fatalf("GetShard of the damaged shard = %v, want ErrCorrupt", err)
	}
	if res := mustCompact(t, s); res.Copied != 0 || res.Segments != 0 {
		t.Errorf("second Compact = %+v, want the kept segment left alone", res)
	}
	// A rebuild drops the damaged record from the index; then the segment goes.
	if err := s.RebuildIndex(context.Background()); err != nil {
		t.Fatal(err)
	}
	expectMissing(t, s, a.Key)
	if res := mustCompact(t, s); res.Segments != 1 {
		t.Errorf("Compact after the rebuild = %+v, want segment 1 removed", res)
	}
}

// TestCompactModel runs seeded random puts (first write wins; a repeated put still
// touches), deletes, touches, sweeps, clock steps, compactions, reopens and rebuilds from
// the segments against a model, checking the store after every compaction and recovery:
// compaction must never make a rebuild bring back a deleted or swept shard, lose a live
// one or return stale bytes, and touch times must follow the model (a rebuild counts
// every stored chunk as written at the rebuild).
func TestCompactModel(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 42))
			dir := t.TempDir()
			clk := storetest.NewClock(gcEpoch())
			opts := Options{NoSync: true, SegmentSize: MinSegmentSize, DisableAutoCompact: true,
				CompactThreshold: 0.3 + 0.6*r.Float64(), Now: clk.Now}
			s := mustOpen(t, dir, opts)
			defer func() { mustClose(t, s) }()
			ctx := context.Background()
			const keys = 24
			key := func(k int) chunkstore.ShardKey { return chunkstore.ShardKey{ID: tid(k)} }
			model := make(map[int]chunkstore.Shard)
			touched := make(map[int]time.Time) // for keys in model
			version := 0
			check := func(when string) {
				t.Helper()
				cutoff := clk.Now().Add(-time.Minute)
				wantCands := map[chunk.ID]bool{}
				for k := range keys {
					want, ok := model[k]
					got, err := s.GetShard(ctx, key(k))
					switch {
					case !ok && !errors.Is(err, chunkstore.ErrNotFound):
						t.Fatalf("%s: key %d: GetShard = %v, want not found", when, k, err)
					case ok && err != nil:
						t.Fatalf("%s: key %d: %v", when, k, err)
					case ok && !bytes.Equal(got.Data, want.Data):
						t.Fatalf("%s: key %d: stale bytes", when, k)
					}
					if ok && touched[k].Before(cutoff) {
						wantCands[tid(k)] = true
					}
				}
				if st := stats(t, s); st.Shards != int64(len(model)) {
					t.Fatalf("%s: %d shards, model has %d", when, st.Shards, len(model))
				}
				got := candidateIDs(t, s, cutoff)
				if len(got) != len(wantCands) {
					t.Fatalf("%s: %d GC candidates, model has %d", when, len(got), len(wantCands))
				}
				for _, id := range got {
					if !wantCands[id] {
						t.Fatalf("%s: chunk %s is a GC candidate, the model says not", when, id.Str())
					}
				}
			}
			for op := range 300 {
				k := r.IntN(keys)
				now := clk.Now()
				switch p := r.IntN(100); {
				case p < 35:
					version++
					sh := mkShard(k, 0, 200+r.IntN(900))
					sh.Data[0], sh.Data[1] = byte(version), byte(version>>8)
					mustPut(t, s, sh)
					if _, ok := model[k]; !ok {
						model[k] = sh
					}
					touched[k] = now
				case p < 55:
					mustDelete(t, s, key(k))
					delete(model, k)
					delete(touched, k)
				case p < 63:
					got, err := s.TouchShards(ctx, []chunkstore.ShardKey{key(k)})
					if err != nil {
						t.Fatal(err)
					}
					_, ok := model[k]
					if got[0] != ok {
						t.Fatalf("op %d: TouchShards(%d) = %v, model has it: %v", op, k, got[0], ok)
					}
					if ok {
						touched[k] = now
					}
				case p < 71:
					cutoff := now.Add(-time.Duration(r.IntN(4)) * time.Minute)
					var ids []chunk.ID
					var want chunkstore.SweepResult
					seen := map[int]bool{}
					for range 1 + r.IntN(8) {
						k := r.IntN(keys)
						ids = append(ids, tid(k))
						if seen[k] {
							continue
						}
						seen[k] = true
						if sh, ok := model[k]; ok {
							if touched[k].Before(cutoff) {
								want.Chunks++
								want.Shards++
								want.Bytes += int64(len(sh.Data))
								delete(model, k)
								delete(touched, k)
							} else {
								want.Spared++
							}
						}
					}
					if got := mustSweepIDs(t, s, cutoff, ids...); got != want {
						t.Fatalf("op %d: sweep = %+v, model says %+v", op, got, want)
					}
				case p < 78:
					clk.Advance(time.Minute)
				case p < 88:
					mustCompact(t, s)
					check(fmt.Sprintf("op %d: after compact", op))
				case p < 94:
					mustClose(t, s)
					clk.Advance(time.Minute)
					s = mustOpen(t, dir, opts)
					check(fmt.Sprintf("op %d: after reopen", op))
				default:
					mustClose(t, s)
					if err := os.RemoveAll(filepath.Join(dir, "index")); err != nil {
						t.Fatal(err)
					}
					at := clk.Advance(time.Minute)
					s = mustOpen(t, dir, opts)
					for k := range touched {
						touched[k] = at
					}
					check(fmt.Sprintf("op %d: after rebuild", op))
				}
			}
			mustCompact(t, s)
			mustClose(t, s)
			if err := os.RemoveAll(filepath.Join(dir, "index")); err != nil {
				t.Fatal(err)
			}
			at := clk.Advance(time.Minute)
			for k := range touched {
				touched[k] = at
			}
			s = mustOpen(t, dir, opts)
			check("final rebuild")
		})
	}
}
