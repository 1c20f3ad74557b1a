package segstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
)

func TestReopenKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	opts := Options{DisableAutoCompact: true, SegmentSize: MinSegmentSize} // sync on
	s := mustOpen(t, dir, opts)
	var shards []chunkstore.Shard
	for i := range 12 {
		sh := mkShard(i, uint8(i%6), 700+i*37)
		shards = append(shards, sh)
		mustPut(t, s, sh)
	}
	mustDelete(t, s, shards[3].Key)
	before := takeSnapshot(t, s)
	if len(before.segments) < 2 {
		t.Fatalf("expected several segments with SegmentSize %d, got %d", MinSegmentSize, len(before.segments))
	}
	mustClose(t, s)

	s = mustOpen(t, dir, opts)
	defer mustClose(t, s)
	if after := takeSnapshot(t, s); !after.equal(before) {
		t.Fatalf("after reopen:\n%+v\nwant\n%+v", after, before)
	}
	for i, sh := range shards {
		if i == 3 {
			expectMissing(t, s, sh.Key)
			continue
		}
		expectShard(t, s, sh)
	}
	// The writer continues after the last segment.
	extra := mkShard(100, 0, 300)
	mustPut(t, s, extra)
	expectShard(t, s, extra)
}

func TestSegmentsRollAndLiveBytes(t *testing.T) {
	s := openTest(t, Options{DisableAutoCompact: true, NoSync: true, SegmentSize: MinSegmentSize})
	var shards []chunkstore.Shard
	var want int64
	for i := range 10 {
		sh := mkShard(i, 0, 1500)
		shards = append(shards, sh)
		want += recordLen(len(sh.Meta.Writer), len(sh.Data))
	}
	mustPut(t, s, shards[:5]...)
	mustPut(t, s, shards[5:]...)
	for i := range 10 {
		mustPut(t, s, mkShard(i, 1, 1500)) // separate groups, so rolls happen between them
		want += recordLen(len("agent/test"), 1500)
	}
	segs, err := s.Segments()
	if err != nil {
		t.Fatal(err)
	}
	if len(segs) < 3 {
		t.Fatalf("got %d segments, want several", len(segs))
	}
	var live int64
	for i, seg := range segs {
		live += seg.LiveBytes
		if seg.Num != uint32(i+1) || seg.Path != filepath.Join(s.dir, segName(seg.Num)) {
			t.Errorf("segment %d: %+v", i, seg)
		}
		if fileSize(t, seg.Path) != seg.Size {
			t.Errorf("segment %d: Size %d, file has %d bytes", seg.Num, seg.Size, fileSize(t, seg.Path))
		}
		// A segment exceeds SegmentSize only by the one group that did not fit.
		if seg.Size > MinSegmentSize && i < len(segs)-1 && seg.LiveBytes > 2*MinSegmentSize {
			t.Errorf("segment %d grew to %d bytes", seg.Num, seg.Size)
		}
	}
	if live != want {
		t.Errorf("live bytes = %d, want %d", live, want)
	}
	if st := stats(t, s); st.Segments != len(segs) || st.Capacity <= 0 {
		t.Errorf("stats = %+v, want %d segments and a positive capacity", st, len(segs))
	}
	mustDelete(t, s, shards[0].Key, shards[1].Key)
	segs, _ = s.Segments()
	live = 0
	for _, seg := range segs {
		live += seg.LiveBytes
	}
	if wantAfter := want - 2*recordLen(len("agent/test"), 1500); live != wantAfter {
		t.Errorf("live bytes after delete = %d, want %d", live, wantAfter)
	}
}

func TestRebuildWhenIndexMissing(t *testing.T) {
	for _, how := range []string{"removed", "emptied"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			opts := Options{DisableAutoCompact: true, NoSync: true, SegmentSize: MinSegmentSize}
			s := mustOpen(t, dir, opts)
			var shards []chunkstore.Shard
			for i := range 20 {
				sh := mkShard(i, uint8(i%3), 200+i*50)
				shards = append(shards, sh)
			}
			mustPut(t, s, shards[:10]...)
			mustPut(t, s, shards[10:]...)
			mustPut(t, s, mkShard(0, 0, 999)) // a duplicate: must stay a duplicate
			mustDelete(t, s, shards[4].Key, shards[15].Key)
			mustPut(t, s, shards[4]) // re-put after delete
			before := takeSnapshot(t, s)
			mustClose(t, s)

			idx := filepath.Join(dir, "index")
			if err := os.RemoveAll(idx); err != nil {
				t.Fatal(err)
			}
			if how == "emptied" {
				if err := os.Mkdir(idx, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			s = mustOpen(t, dir, opts)
			defer mustClose(t, s)
			if after := takeSnapshot(t, s); !after.equal(before) {
				t.Fatalf("rebuilt index differs:\n%+v\nwant\n%+v", after, before)
			}
			for i, sh := range shards {
				if i == 15 {
					expectMissing(t, s, sh.Key)
					continue
				}
				expectShard(t, s, sh)
			}
		})
	}
}

func TestRebuildIndexOnline(t *testing.T) {
	s := openTest(t, Options{DisableAutoCompact: true, NoSync: true, SegmentSize: MinSegmentSize})
	var shards []chunkstore.Shard
	for i := range 15 {
		shards = append(shards, mkShard(i, 1, 900))
	}
	mustPut(t, s, shards...)
	mustDelete(t, s, shards[2].Key)
	before := takeSnapshot(t, s)
	if err := s.RebuildIndex(context.Background()); err != nil {
		t.Fatalf("RebuildIndex: %v", err)
	}
	if after := takeSnapshot(t, s); !after.equal(before) {
		t.Fatalf("after RebuildIndex:\n%+v\nwant\n%+v", after, before)
	}
	expectShard(t, s, shards[0])
	mustPut(t, s, mkShard(50, 0, 10))
	expectShard(t, s, mkShard(50, 0, 10))
}

func TestRebuildIndexInterrupted(t *testing.T) {
	dir := t.TempDir()
	opts := Options{DisableAutoCompact: true, NoSync: true}
	s := mustOpen(t, dir, opts)
	shards := []chunkstore.Shard{mkShard(1, 0, 100), mkShard(2, 0, 100)}
	mustPut(t, s, shards...)

	// Hand the writer a rebuild whose context has already ended (RebuildIndex itself may
	// return before sending when ctx is done, which would test nothing).
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req := &request{kind: kindRebuild, ctx: ctx, done: make(chan error, 1)}
	s.reqs <- req
	if err := <-req.done; !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted rebuild = %v, want context.Canceled", err)
	}
	// The index is incomplete: lookups and writes refuse rather than answer wrongly.
	if _, err := s.GetShard(context.Background(), shards[0].Key); err == nil || errors.Is(err, chunkstore.ErrNotFound) {
		t.Fatalf("GetShard on an incomplete index = %v, want an incomplete-index error", err)
	}
	if _, err := s.HasShards(context.Background(), []chunkstore.ShardKey{shards[0].Key}); err == nil {
		t.Fatal("HasShards on an incomplete index succeeded")
	}
	if err := s.PutShards(context.Background(), []chunkstore.Shard{mkShard(3, 0, 10)}); err == nil {
		t.Fatal("PutShards on an incomplete index succeeded")
	}
	// Reopening resumes the replay.
	mustClose(t, s)
	s = mustOpen(t, dir, opts)
	for _, sh := range shards {
		expectShard(t, s, sh)
	}
	// And so does a second RebuildIndex on a live store.
	req = &request{kind: kindRebuild, ctx: ctx, done: make(chan error, 1)}
	s.reqs <- req
	<-req.done
	if err := s.RebuildIndex(context.Background()); err != nil {
		t.Fatalf("RebuildIndex: %v", err)
	}
	for _, sh := range shards {
		expectShard(t, s, sh)
	}
	if st := stats(t, s); st.Shards != 2 {
		t.Errorf("shards = %d, want 2", st.Shards)
	}
	mustClose(t, s)
}

func TestReplayAfterCheckpoint(t *testing.T) {
	// Simulates a crash that lost the latest unsynced index batches: the index is put
	// back to an older state, and Open must replay the segments past its checkpoint.
	dir := t.TempDir()
	saved := t.TempDir()
	opts := Options{DisableAutoCompact: true, NoSync: true, SegmentSize: MinSegmentSize}
	a, b, c := mkShard(1, 0, 3000), mkShard(2, 0, 3000), mkShard(3, 0, 3000)
	s := mustOpen(t, dir, opts)
	mustPut(t, s, a, b)
	mustClose(t, s)
	copyDir(t, filepath.Join(dir, "index"), saved)

	s = mustOpen(t, dir, opts)
	mustPut(t, s, c)
	mustDelete(t, s, a.Key)
	mustPut(t, s, mkShard(3, 0, 10)) // duplicate of c
	want := takeSnapshot(t, s)
	mustClose(t, s)

	if err := os.RemoveAll(filepath.Join(dir, "index")); err != nil {
		t.Fatal(err)
	}
	copyDir(t, saved, filepath.Join(dir, "index"))
	s = mustOpen(t, dir, opts)
	defer mustClose(t, s)
	if got := takeSnapshot(t, s); !got.equal(want) {
		t.Fatalf("after replay:\n%+v\nwant\n%+v", got, want)
	}
	expectMissing(t, s, a.Key)
	expectShard(t, s, b)
	expectShard(t, s, c)
}

func TestTornTailTruncated(t *testing.T) {
	for _, tail := range []string{"partial record", "garbage"} {
		t.Run(tail, func(t *testing.T) {
			dir := t.TempDir()
			opts := Options{DisableAutoCompact: true} // sync on
			s := mustOpen(t, dir, opts)
			var shards []chunkstore.Shard
			for i := range 5 {
				shards = append(shards, mkShard(i, 0, 500))
				mustPut(t, s, shards[i])
			}
			mustClose(t, s)
			seg := filepath.Join(dir, segName(1))
			size := fileSize(t, seg)
			var junk []byte
			if tail == "partial record" {
				rec := appendPut(nil, &chunkstore.Shard{Key: mkShard(9, 0, 1).Key, Meta: shards[0].Meta, Data: make([]byte, 400)}, 0)
				junk = rec[:len(rec)/2] // a crash mid-write
			} else {
				junk = []byte(strings.Repeat("\x00not a record\xff", 20))
			}
			appendFile(t, seg, junk)

			s = mustOpen(t, dir, opts)
			for _, sh := range shards {
				expectShard(t, s, sh)
			}
			if got := fileSize(t, seg); got != size {
				t.Errorf("segment is %d bytes after recovery, want the torn tail cut back to %d", got, size)
			}
			if st := stats(t, s); st.Shards != 5 {
				t.Errorf("shards = %d, want 5", st.Shards)
			}
			more := mkShard(10, 0, 300)
			mustPut(t, s, more)
			mustClose(t, s)
			s = mustOpen(t, dir, opts)
			defer mustClose(t, s)
			expectShard(t, s, more)
			expectShard(t, s, shards[4])
		})
	}
}

func TestShortSegmentHeaderRepaired(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{DisableAutoCompact: true, NoSync: true})
	a := mkShard(1, 0, 100)
	mustPut(t, s, a)
	mustClose(t, s)
	// A crash right after creating segment 2, before its header was written.
	if err := os.WriteFile(filepath.Join(dir, segName(2)), []byte("CF"), 0o644); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, dir, Options{DisableAutoCompact: true, NoSync: true})
	defer mustClose(t, s)
	expectShard(t, s, a)
	b := mkShard(2, 0, 100)
	mustPut(t, s, b)
	expectShard(t, s, b)
	if got := fileSize(t, filepath.Join(dir, segName(2))); got != fileHeaderSize+recordLen(len(b.Meta.Writer), len(b.Data)) {
		t.Errorf("segment 2 is %d bytes", got)
	}
}

func TestBadSegmentHeaderRefused(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{DisableAutoCompact: true, NoSync: true})
	mustPut(t, s, mkShard(1, 0, 100))
	mustClose(t, s)
	flipByte(t, filepath.Join(dir, segName(1)), 0)
	if s, err := Open(dir, Options{DisableAutoCompact: true, NoSync: true}); err == nil {
		s.Close()
		t.Fatal("Open accepted a segment with a bad magic")
	} else if !strings.Contains(err.Error(), segName(1)) {
		t.Errorf("error %q does not name the segment", err)
	}
}

func TestDamagedRecordSkippedOnRebuild(t *testing.T) {
	dir := t.TempDir()
	opts := Options{DisableAutoCompact: true, NoSync: true}
	s := mustOpen(t, dir, opts)
	a, b, c := mkShard(1, 0, 800), mkShard(2, 0, 800), mkShard(3, 0, 800)
	mustPut(t, s, a)
	mustPut(t, s, b)
	mustPut(t, s, c)
	path, off, _, err := s.Locate(b.Key)
	if err != nil {
		t.Fatal(err)
	}
	mustClose(t, s)
	size := fileSize(t, path)
	flipByte(t, path, off+10)
	if err := os.RemoveAll(filepath.Join(dir, "index")); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, dir, opts)
	defer mustClose(t, s)
	expectShard(t, s, a)
	expectMissing(t, s, b.Key) // damaged: not indexed, so repair will restore it
	expectShard(t, s, c)       // valid records after the damage are kept
	if got := fileSize(t, path); got != size {
		t.Errorf("segment size changed from %d to %d: damage mid-segment must not truncate", size, got)
	}
	if st := stats(t, s); st.Shards != 2 {
		t.Errorf("shards = %d, want 2", st.Shards)
	}
}

func TestLocateBitFlipIsCorrupt(t *testing.T) {
	s := openTest(t, Options{DisableAutoCompact: true, NoSync: true})
	shards := []chunkstore.Shard{mkShard(1, 0, 1000), mkShard(2, 3, 1000), mkShard(3, 5, 1000)}
	mustPut(t, s, shards...)
	path, off, n, err := s.Locate(shards[1].Key)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(shards[1].Data)) {
		t.Fatalf("Locate length = %d, want %d", n, len(shards[1].Data))
	}
	// Locate points at the data bytes themselves.
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, n)
	_, err = f.ReadAt(got, off)
	f.Close()
	if err != nil || string(got) != string(shards[1].Data) {
		t.Fatalf("bytes at the located range differ from the shard data (err %v)", err)
	}

	flipByte(t, path, off+n/2)
	_, err = s.GetShard(context.Background(), shards[1].Key)
	if !errors.Is(err, chunkstore.ErrCorrupt) {
		t.Fatalf("GetShard after a bit flip = %v, want ErrCorrupt", err)
	}
	for _, want := range []string{keyStr(shards[1].Key), "segment 1", "offset"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	expectShard(t, s, shards[0])
	expectShard(t, s, shards[2])
	// HasShards consults the index only.
	if has, err := s.HasShards(context.Background(), []chunkstore.ShardKey{shards[1].Key}); err != nil || !has[0] {
		t.Errorf("HasShards = %v, %v", has, err)
	}
	if _, _, _, err := s.Locate(mkShard(9, 0, 1).Key); !errors.Is(err, chunkstore.ErrNotFound) {
		t.Errorf("Locate(missing) = %v, want ErrNotFound", err)
	}
}

func TestHeaderDamageIsCorrupt(t *testing.T) {
	s := openTest(t, Options{DisableAutoCompact: true, NoSync: true})
	a, b := mkShard(1, 0, 100), mkShard(2, 0, 100)
	mustPut(t, s, a, b)
	path, off, _, err := s.Locate(a.Key)
	if err != nil {
		t.Fatal(err)
	}
	flipByte(t, path, off-int64(len(a.Meta.Writer))-recHeaderSize+45) // inside ChunkLen
	if _, err := s.GetShard(context.Background(), a.Key); !errors.Is(err, chunkstore.ErrCorrupt) {
		t.Fatalf("GetShard with a damaged header = %v, want ErrCorrupt", err)
	}
	expectShard(t, s, b)
}

func TestWriteFailureNotAcknowledged(t *testing.T) {
	for _, fault := range []string{"write", "sync"} {
		t.Run(fault, func(t *testing.T) {
			dir := t.TempDir()
			var f faults
			opts := Options{DisableAutoCompact: true, openFile: f.opener()}
			s := mustOpen(t, dir, opts)
			a, b := mkShard(1, 0, 2000), mkShard(2, 0, 2000)
			mustPut(t, s, a)
			seg := filepath.Join(dir, segName(1))
			size := fileSize(t, seg)

			if fault == "write" {
				f.failWrite.Store(true)
			} else {
				f.failSync.Store(true)
			}
			err := s.PutShards(context.Background(), []chunkstore.Shard{b})
			wantErr := syscall.ENOSPC
			if fault == "sync" {
				wantErr = syscall.EIO
			}
			if !errors.Is(err, wantErr) {
				t.Fatalf("PutShards with a failing %s = %v, want %v", fault, err, wantErr)
			}
			if fault == "write" {
				// A full disk is its own kind, named in the message.
				if !errors.Is(err, chunkstore.ErrNoSpace) || !strings.Contains(err.Error(), "disk full") {
					t.Fatalf("PutShards on a full disk = %v, want chunkstore.ErrNoSpace saying \"disk full\"", err)
				}
			} else if errors.Is(err, chunkstore.ErrNoSpace) {
				t.Fatalf("PutShards with a failing fsync (EIO) = %v, must not be ErrNoSpace", err)
			}
			if has, _ := s.HasShards(context.Background(), []chunkstore.ShardKey{b.Key}); has[0] {
				t.Fatal("a failed put was indexed")
			}
			if got := fileSize(t, seg); got != size {
				t.Errorf("segment is %d bytes after a failed append, want it rolled back to %d", got, size)
			}
			// Deletes fail the same way and leave the index alone.
			if err := s.DeleteShards(context.Background(), []chunkstore.ShardKey{a.Key}); err == nil {
				t.Fatal("DeleteShards succeeded with a failing disk")
			} else if fault == "write" && !errors.Is(err, chunkstore.ErrNoSpace) {
				t.Fatalf("DeleteShards on a full disk = %v, want chunkstore.ErrNoSpace", err)
			}
			expectShard(t, s, a)

			f.failWrite.Store(false)
			f.failSync.Store(false)
			mustPut(t, s, b) // a retry succeeds
			expectShard(t, s, b)
			mustClose(t, s)

			s = mustOpen(t, dir, Options{DisableAutoCompact: true})
			defer mustClose(t, s)
			expectShard(t, s, a)
			expectShard(t, s, b)
			if st := stats(t, s); st.Shards != 2 {
				t.Errorf("shards = %d, want 2", st.Shards)
			}
			if got, want := fileSize(t, seg), size+recordLen(len(b.Meta.Writer), len(b.Data)); got != want {
				t.Errorf("segment is %d bytes, want %d (no leftovers of the failed attempts)", got, want)
			}
		})
	}
}

func TestFailedSyncFailsWholeGroup(t *testing.T) {
	var f faults
	s := openTest(t, Options{DisableAutoCompact: true, openFile: f.opener()})
	gate := make(chan bool)
	f.syncGate.Store(&gate)
	base := f.syncs.Load() // Open fsyncs the new segment's header

	first := make(chan error, 1)
	go func() { first <- s.PutShards(context.Background(), []chunkstore.Shard{mkShard(1, 0, 100)}) }()
	// Wait until the writer is inside the first group's fsync.
	waitFor(t, func() bool { return f.syncs.Load() == base+1 })
	later := make(chan error, 3)
	for i := range 3 {
		go func() { later <- s.PutShards(context.Background(), []chunkstore.Shard{mkShard(10+i, 0, 100)}) }()
	}
	// Wait until all three are queued behind it, so they form the next group.
	waitFor(t, func() bool { return len(s.reqs) == 3 })
	gate <- false // the first group succeeds
	if err := <-first; err != nil {
		t.Fatalf("first put: %v", err)
	}
	gate <- true // the second group's single fsync fails...
	close(gate)  // ...and later syncs (the rollback's) succeed
	// All three callers fail: had any of them been in a group of its own, its fsync
	// would have read the closed gate and succeeded.
	for range 3 {
		if err := <-later; !errors.Is(err, syscall.EIO) {
			t.Errorf("put in the failed group = %v, want EIO", err)
		}
	}
	f.syncGate.Store(nil)
	has, err := s.HasShards(context.Background(), []chunkstore.ShardKey{mkShard(1, 0, 1).Key, mkShard(10, 0, 1).Key, mkShard(11, 0, 1).Key, mkShard(12, 0, 1).Key})
	if err != nil {
		t.Fatal(err)
	}
	if !has[0] || has[1] || has[2] || has[3] {
		t.Errorf("HasShards = %v, want only the first group's shard", has)
	}
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached before the deadline")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestClosed(t *testing.T) {
	s := mustOpen(t, t.TempDir(), Options{DisableAutoCompact: true, NoSync: true})
	key := mkShard(1, 0, 10).Key
	mustPut(t, s, mkShard(1, 0, 10))
	mustClose(t, s)
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	ctx := context.Background()
	checks := map[string]error{
		"PutShards":    s.PutShards(ctx, []chunkstore.Shard{mkShard(2, 0, 10)}),
		"DeleteShards": s.DeleteShards(ctx, []chunkstore.ShardKey{key}),
		"HasShards":    func() error { _, err := s.HasShards(ctx, []chunkstore.ShardKey{key}); return err }(),
		"Stats":        func() error { _, err := s.Stats(ctx); return err }(),
		"Enumerate":    s.EnumerateShards(ctx, nil, func(chunkstore.ShardInfo) error { return nil }),
		"RebuildIndex": s.RebuildIndex(ctx),
		"TouchShards":  func() error { _, err := s.TouchShards(ctx, []chunkstore.ShardKey{key}); return err }(),
		"GCCandidates": s.GCCandidates(ctx, nil, time.Now(), func(chunk.ID, int64) error { return nil }),
		"SweepChunks":  func() error { _, err := s.SweepChunks(ctx, []chunk.ID{key.ID}, time.Now()); return err }(),
		"Compact":      func() error { _, err := s.Compact(ctx); return err }(),
	}
	_, checks["GetShard"] = s.GetShard(ctx, key)
	for name, err := range checks {
		if !errors.Is(err, chunkstore.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
}

func TestInvalidInput(t *testing.T) {
	s := openTest(t, Options{DisableAutoCompact: true, NoSync: true})
	long := mkShard(1, 0, 10)
	long.Meta.Writer = strings.Repeat("w", chunkstore.MaxWriterLen+1)
	zeroK := mkShard(2, 0, 10)
	zeroK.Meta.K, zeroK.Meta.M = 0, 3
	zeroID := mkShard(3, 0, 10)
	zeroID.Key.ID = [32]byte{}
	for name, sh := range map[string]chunkstore.Shard{"long writer": long, "K=0": zeroK, "zero ID": zeroID} {
		if err := s.PutShards(context.Background(), []chunkstore.Shard{mkShard(9, 0, 10), sh}); !errors.Is(err, chunkstore.ErrInvalid) {
			t.Errorf("%s: PutShards = %v, want ErrInvalid", name, err)
		}
	}
	if st := stats(t, s); st.Shards != 0 {
		t.Errorf("rejected batches stored %d shards", st.Shards)
	}
	if segs, _ := s.Segments(); segs[0].Size != fileHeaderSize {
		t.Errorf("rejected batches wrote %d bytes", segs[0].Size-fileHeaderSize)
	}
}

func TestOptionsValidated(t *testing.T) {
	for _, o := range []Options{{SegmentSize: MinSegmentSize - 1}, {SegmentSize: -1}, {CacheSize: -1}, {MemTableSize: -1}} {
		dir := t.TempDir()
		if s, err := Open(dir, o); err == nil {
			s.Close()
			t.Errorf("Open(%+v) succeeded", o)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("Open(%+v) failed but created %d entries", o, len(ents))
		}
	}
}

func TestCanceledContext(t *testing.T) {
	s := openTest(t, Options{DisableAutoCompact: true, NoSync: true})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.PutShards(ctx, []chunkstore.Shard{mkShard(1, 0, 10)}); !errors.Is(err, context.Canceled) {
		t.Errorf("PutShards = %v, want context.Canceled", err)
	}
	if _, err := s.GetShard(ctx, mkShard(1, 0, 10).Key); !errors.Is(err, context.Canceled) {
		t.Errorf("GetShard = %v, want context.Canceled", err)
	}
	if st := stats(t, s); st.Shards != 0 {
		t.Errorf("a canceled put stored %d shards", st.Shards)
	}
}

func TestGetShardAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	s := openTest(t, Options{DisableAutoCompact: true, NoSync: true})
	sh := mkShard(1, 0, 4096)
	mustPut(t, s, sh)
	ctx := context.Background()
	allocs := testing.AllocsPerRun(50, func() {
		if _, err := s.GetShard(ctx, sh.Key); err != nil {
			t.Fatal(err)
		}
	})
	// The data buffer, the writer string and one inside Pebble's Get; nothing else.
	if allocs > 3 {
		t.Errorf("GetShard allocates %.1f times per call, want at most 3", allocs)
	}
}

// Reads, writes and enumerations running alongside RebuildIndex neither fail nor see a
// half-built index: lookups wait for the rebuild and writes queue behind it.
func TestRebuildIndexConcurrentWithTraffic(t *testing.T) {
	s := openTest(t, Options{DisableAutoCompact: true, NoSync: true, SegmentSize: MinSegmentSize})
	var base []chunkstore.Shard
	for i := range 30 {
		base = append(base, mkShard(i, 0, 600))
	}
	mustPut(t, s, base...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				sh := base[(i*7+w)%len(base)]
				got, err := s.GetShard(context.Background(), sh.Key)
				if err != nil || !bytes.Equal(got.Data, sh.Data) {
					errs <- fmt.Errorf("reader %d: GetShard(%s): %v", w, keyStr(sh.Key), err)
					return
				}
				n := 0
				if err := s.EnumerateShards(context.Background(), nil, func(chunkstore.ShardInfo) error { n++; return nil }); err != nil || n < len(base) {
					errs <- fmt.Errorf("reader %d: enumerated %d shards: %v", w, n, err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			if err := s.PutShards(context.Background(), []chunkstore.Shard{mkShard(1000+i, 1, 300)}); err != nil {
				errs <- fmt.Errorf("writer: %v", err)
				return
			}
		}
	})
	for range 3 {
		if err := s.RebuildIndex(context.Background()); err != nil {
			t.Fatalf("RebuildIndex: %v", err)
		}
	}
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	before := takeSnapshot(t, s)
	if err := s.RebuildIndex(context.Background()); err != nil {
		t.Fatal(err)
	}
	if after := takeSnapshot(t, s); !after.equal(before) {
		t.Fatalf("a quiet rebuild changed the index:\n%+v\nwant\n%+v", after, before)
	}
}

// Duplicates interleaved with new shards in one batch: only the new ones are appended,
// each at the offset its index entry records.
func TestSkippedDuplicatesKeepOffsets(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{DisableAutoCompact: true, NoSync: true})
	a, b, c := mkShard(1, 0, 500), mkShard(2, 0, 700), mkShard(3, 0, 900)
	mustPut(t, s, a)
	dupA := mkShard(1, 0, 123)
	mustPut(t, s, dupA, b, dupA, dupA, c, b)
	for _, sh := range []chunkstore.Shard{a, b, c} {
		expectShard(t, s, sh)
	}
	want := fileHeaderSize + recordLen(len(a.Meta.Writer), 500) + recordLen(len(b.Meta.Writer), 700) + recordLen(len(c.Meta.Writer), 900)
	if got := fileSize(t, filepath.Join(dir, segName(1))); got != want {
		t.Errorf("segment is %d bytes, want %d (duplicates must not be appended)", got, want)
	}
	before := takeSnapshot(t, s)
	if err := s.RebuildIndex(context.Background()); err != nil {
		t.Fatal(err)
	}
	if after := takeSnapshot(t, s); !after.equal(before) {
		t.Fatalf("rebuild differs:\n%+v\nwant\n%+v", after, before)
	}
	mustClose(t, s)
}
