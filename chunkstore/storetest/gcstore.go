package storetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
)

// Clock is a manual clock for stores under test: Now returns the current instant and
// Advance moves it forward. It is safe for concurrent use.
type Clock struct{ ns atomic.Int64 }

// NewClock returns a clock that reads start until advanced.
func NewClock(start time.Time) *Clock {
	c := new(Clock)
	c.ns.Store(start.UnixNano())
	return c
}

// Now returns the clock's current instant.
func (c *Clock) Now() time.Time { return time.Unix(0, c.ns.Load()).UTC() }

// Advance moves the clock forward by d and returns the new instant.
func (c *Clock) Advance(d time.Duration) time.Time {
	return time.Unix(0, c.ns.Add(int64(d))).UTC()
}

// gcEpoch is the instant at which RunGCStore's clocks start.
func gcEpoch() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }

// RunGCStore runs the chunkstore.GCStore conformance suite. open must return a fresh,
// empty store that reads its touch times from now (a Clock that starts at 2026-01-01 UTC); it
// registers any cleanup with t.Cleanup.
func RunGCStore(t *testing.T, open func(t *testing.T, now func() time.Time) chunkstore.GCStore) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(*testing.T, chunkstore.GCStore, *Clock)
	}{
		{"TouchAnswersLikeHas", testTouchAnswersLikeHas},
		{"TouchManyAnswersLikeHas", testTouchManyAnswersLikeHas},
		{"CandidatesByTime", testCandidatesByTime},
		{"CandidatesAfter", testCandidatesAfter},
		{"CandidatesStops", testCandidatesStops},
		{"TouchSpares", testTouchSpares},
		{"WriteSpares", testWriteSpares},
		{"CutoffBoundary", testCutoffBoundary},
		{"SweepUnknownIsNoop", testSweepUnknownIsNoop},
		{"SweepListedTwice", testSweepListedTwice},
		{"DeletedChunkIsNoCandidate", testDeletedChunkIsNoCandidate},
		{"SweptChunkCanReturn", testSweptChunkCanReturn},
		{"InvalidArguments", testGCInvalid},
		{"CanceledContext", testGCCanceled},
		{"ConcurrentTouchAndSweep", testConcurrentTouchAndSweep},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := NewClock(gcEpoch())
			tc.fn(t, open(t, clk.Now), clk)
		})
	}
}

// gcChunk returns the shards of test chunk n: indices 0..count-1 with varying sizes.
func gcChunk(n, count int) []chunkstore.Shard {
	out := make([]chunkstore.Shard, count)
	for i := range count {
		out[i] = testShard(n, uint8(i), sizeFor(n*13+i), 0)
	}
	return out
}

func shardBytes(shards []chunkstore.Shard) int64 {
	var n int64
	for _, sh := range shards {
		n += int64(len(sh.Data))
	}
	return n
}

func keysOf(shards []chunkstore.Shard) []chunkstore.ShardKey {
	keys := make([]chunkstore.ShardKey, len(shards))
	for i, sh := range shards {
		keys[i] = sh.Key
	}
	return keys
}

type candidate struct {
	id    chunk.ID
	bytes int64
}

func (c candidate) String() string { return fmt.Sprintf("%s:%d", c.id.Str(), c.bytes) }

func candidates(t *testing.T, s chunkstore.GCStore, after *chunk.ID, cutoff time.Time) []candidate {
	t.Helper()
	var out []candidate
	if err := s.GCCandidates(context.Background(), after, cutoff, func(id chunk.ID, bytes int64) error {
		out = append(out, candidate{id, bytes})
		return nil
	}); err != nil {
		t.Fatalf("GCCandidates(cutoff %v): %v", cutoff, err)
	}
	return out
}

// wantCandidates returns the candidates for the given chunks, sorted by ID.
func wantCandidates(chunks ...[]chunkstore.Shard) []candidate {
	var out []candidate
	for _, c := range chunks {
		out = append(out, candidate{c[0].Key.ID, shardBytes(c)})
	}
	slices.SortFunc(out, func(a, b candidate) int {
		switch {
		case a.id.Less(b.id):
			return -1
		case b.id.Less(a.id):
			return 1
		}
		return 0
	})
	return out
}

func checkCandidates(t *testing.T, what string, got, want []candidate) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s: candidates %v, want %v", what, got, want)
	}
}

func mustTouch(t *testing.T, s chunkstore.GCStore, keys ...chunkstore.ShardKey) []bool {
	t.Helper()
	got, err := s.TouchShards(context.Background(), keys)
	if err != nil {
		t.Fatalf("TouchShards: %v", err)
	}
	if len(got) != len(keys) {
		t.Fatalf("TouchShards returned %d results for %d keys", len(got), len(keys))
	}
	return got
}

func mustSweep(t *testing.T, s chunkstore.GCStore, cutoff time.Time, ids ...chunk.ID) chunkstore.SweepResult {
	t.Helper()
	res, err := s.SweepChunks(context.Background(), ids, cutoff)
	if err != nil {
		t.Fatalf("SweepChunks(%d ids, cutoff %v): %v", len(ids), cutoff, err)
	}
	return res
}

func checkSweep(t *testing.T, what string, got, want chunkstore.SweepResult) {
	t.Helper()
	if got != want {
		t.Errorf("%s: sweep result %+v, want %+v", what, got, want)
	}
}

// checkPresent checks that every shard reads back intact.
func checkPresent(t *testing.T, s chunkstore.GCStore, shards []chunkstore.Shard) {
	t.Helper()
	for _, sh := range shards {
		checkShard(t, mustGet(t, s, sh.Key), sh)
	}
}

// checkGone checks that no shard of the list is stored.
func checkGone(t *testing.T, s chunkstore.GCStore, shards []chunkstore.Shard) {
	t.Helper()
	for i, has := range mustHas(t, s, keysOf(shards)...) {
		if has {
			t.Errorf("shard %s/%d still stored", shards[i].Key.ID.Str(), shards[i].Key.Index)
		}
	}
	for _, sh := range shards {
		if _, err := s.GetShard(context.Background(), sh.Key); !errors.Is(err, chunkstore.ErrNotFound) {
			t.Errorf("GetShard(%s/%d) = %v, want ErrNotFound", sh.Key.ID.Str(), sh.Key.Index, err)
		}
	}
}

func testTouchAnswersLikeHas(t *testing.T, s chunkstore.GCStore, _ *Clock) {
	a, b := testShard(1, 0, 10, 0), testShard(2, 1, 20, 0)
	putShards(t, s, a, b)
	missing := chunkstore.ShardKey{ID: testID(3), Index: 0}
	otherIndex := chunkstore.ShardKey{ID: a.Key.ID, Index: 1}
	keys := []chunkstore.ShardKey{missing, b.Key, otherIndex, a.Key, b.Key, missing}
	want := []bool{false, true, false, true, true, false}
	if got := mustTouch(t, s, keys...); !slices.Equal(got, want) {
		t.Errorf("TouchShards = %v, want %v", got, want)
	}
	if got := mustTouch(t, s); len(got) != 0 {
		t.Errorf("TouchShards(no keys) = %v, want empty", got)
	}
	if st := mustStats(t, s); st.Shards != 2 {
		t.Errorf("after touches stats = %+v, want 2 shards", st)
	}
}

// testTouchManyAnswersLikeHas: a touch of many keys in one call (stored and absent, out
// of order, repeated), as a commit check sends, answers as HasShards does and stamps
// exactly the chunks of the stored keys.
func testTouchManyAnswersLikeHas(t *testing.T, s chunkstore.GCStore, clk *Clock) {
	t0 := clk.Now()
	var stored [][]chunkstore.Shard
	for n := 1; n <= 60; n++ {
		c := gcChunk(n, 1+n%3)
		stored = append(stored, c)
		putShards(t, s, c...)
	}
	clk.Advance(time.Hour)
	var keys []chunkstore.ShardKey
	var touched, untouched [][]chunkstore.Shard
	for n, c := range stored {
		if n%3 == 0 {
			untouched = append(untouched, c)
			continue
		}
		touched = append(touched, c)
		keys = append(keys, c[len(c)-1].Key, chunkstore.ShardKey{ID: c[0].Key.ID, Index: 5}) // stored, and absent
	}
	for n := 100; n < 120; n++ {
		keys = append(keys, chunkstore.ShardKey{ID: testID(n), Index: uint8(n % 6)})
	}
	keys = append(keys, keys[3], keys[0])
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	want, err := s.HasShards(context.Background(), keys)
	if err != nil {
		t.Fatal(err)
	}
	if got := mustTouch(t, s, keys...); !slices.Equal(got, want) {
		t.Fatalf("TouchShards of %d keys = %v, HasShards = %v", len(keys), got, want)
	}
	checkCandidates(t, "after touching two chunks of three", candidates(t, s, nil, t0.Add(30*time.Minute)), wantCandidates(untouched...))
	if len(touched) == 0 {
		t.Fatal("nothing touched")
	}
}

func testCandidatesByTime(t *testing.T, s chunkstore.GCStore, clk *Clock) {
	t0 := clk.Now()
	old := [][]chunkstore.Shard{gcChunk(1, 1), gcChunk(2, 3), gcChunk(3, 2)}
	for _, c := range old {
		putShards(t, s, c...)
	}
	t1 := clk.Advance(time.Hour)
	young := [][]chunkstore.Shard{gcChunk(4, 2), gcChunk(5, 1)}
	putShards(t, s, append(young[0], young[1]...)...)

	checkCandidates(t, "cutoff t0", candidates(t, s, nil, t0), nil)
	checkCandidates(t, "cutoff between", candidates(t, s, nil, t0.Add(30*time.Minute)), wantCandidates(old...))
	checkCandidates(t, "cutoff t1", candidates(t, s, nil, t1), wantCandidates(old...))
	checkCandidates(t, "cutoff after t1", candidates(t, s, nil, t1.Add(time.Nanosecond)), wantCandidates(append(old, young...)...))
}

func testCandidatesAfter(t *testing.T, s chunkstore.GCStore, clk *Clock) {
	var all [][]chunkstore.Shard
	for n := 1; n <= 8; n++ {
		c := gcChunk(n, 1+n%3)
		all = append(all, c)
		putShards(t, s, c...)
	}
	cutoff := clk.Advance(time.Minute)
	want := wantCandidates(all...)
	checkCandidates(t, "after nil", candidates(t, s, nil, cutoff), want)
	for _, cut := range []int{0, 3, len(want) - 1} {
		after := want[cut].id
		checkCandidates(t, fmt.Sprintf("after #%d", cut), candidates(t, s, &after, cutoff), want[cut+1:])
	}
	var zero chunk.ID // below every stored ID
	checkCandidates(t, "after zero ID", candidates(t, s, &zero, cutoff), want)
}

func testCandidatesStops(t *testing.T, s chunkstore.GCStore, clk *Clock) {
	for n := 1; n <= 6; n++ {
		putShards(t, s, gcChunk(n, 2)...)
	}
	cutoff := clk.Advance(time.Minute)
	errStop := errors.New("storetest: stop here")
	calls := 0
	err := s.GCCandidates(context.Background(), nil, cutoff, func(chunk.ID, int64) error {
		calls++
		if calls == 3 {
			return errStop
		}
		return nil
	})
	if !errors.Is(err, errStop) {
		t.Errorf("GCCandidates error = %v, want the callback's error", err)
	}
	if calls != 3 {
		t.Errorf("callback ran %d times after returning an error on call 3", calls)
	}
}

func testTouchSpares(t *testing.T, s chunkstore.GCStore, clk *Clock) {
	t0 := clk.Now()
	a, b, c := gcChunk(1, 3), gcChunk(2, 3), gcChunk(3, 1)
	putShards(t, s, append(append(a, b...), c...)...)
	clk.Advance(time.Hour)
	// Touching one shard of a spares all of a. Touching a key of c that is not stored
	// touches nothing, nor does touching a chunk that is not here at all.
	absent := chunkstore.ShardKey{ID: testID(99)}
	cOther := chunkstore.ShardKey{ID: c[0].Key.ID, Index: 2}
	if got := mustTouch(t, s, a[1].Key, cOther, absent); !slices.Equal(got, []bool{true, false, false}) {
		t.Fatalf("TouchShards = %v, want [true false false]", got)
	}
	cutoff := t0.Add(30 * time.Minute)
	checkCandidates(t, "after touch", candidates(t, s, nil, cutoff), wantCandidates(b, c))

	res := mustSweep(t, s, cutoff, a[0].Key.ID, b[0].Key.ID, c[0].Key.ID, absent.ID)
	checkSweep(t, "sweep", res, chunkstore.SweepResult{
		Chunks: 2, Shards: int64(len(b) + len(c)), Bytes: shardBytes(b) + shardBytes(c), Spared: 1,
	})
	checkPresent(t, s, a)
	checkGone(t, s, b)
	checkGone(t, s, c)
	if st := mustStats(t, s); st.Shards != int64(len(a)) || st.Bytes != shardBytes(a) {
		t.Errorf("stats after sweep = %+v, want %d shards of %d bytes", st, len(a), shardBytes(a))
	}
	checkCandidates(t, "after sweep", candidates(t, s, nil, cutoff), nil)
}

func testWriteSpares(t *testing.T, s chunkstore.GCStore, clk *Clock) {
	t0 := clk.Now()
	a0, b0 := testShard(1, 0, 100, 1), testShard(2, 0, 100, 1)
	c := gcChunk(3, 2)
	putShards(t, s, a0, b0)
	putShards(t, s, c...)
	clk.Advance(time.Hour)
	a1 := testShard(1, 1, 150, 1)      // a new shard of chunk 1
	b0again := testShard(2, 0, 300, 2) // a second write of a stored key: first write wins, still a touch
	putShards(t, s, a1, b0again)
	cutoff := t0.Add(30 * time.Minute)
	checkCandidates(t, "after writes", candidates(t, s, nil, cutoff), wantCandidates(c))
	res := mustSweep(t, s, cutoff, a0.Key.ID, b0.Key.ID, c[0].Key.ID)
	checkSweep(t, "sweep", res, chunkstore.SweepResult{Chunks: 1, Shards: 2, Bytes: shardBytes(c), Spared: 2})
	checkPresent(t, s, []chunkstore.Shard{a0, a1, b0})
	checkGone(t, s, c)
}

func testCutoffBoundary(t *testing.T, s chunkstore.GCStore, clk *Clock) {
	a := gcChunk(1, 2)
	putShards(t, s, a...)
	t1 := clk.Advance(time.Hour)
	b := gcChunk(2, 2)
	putShards(t, s, b...)
	// Last touched exactly at the cutoff is not "before" it.
	checkCandidates(t, "cutoff t1", candidates(t, s, nil, t1), wantCandidates(a))
	res := mustSweep(t, s, t1, a[0].Key.ID, b[0].Key.ID)
	checkSweep(t, "sweep at t1", res, chunkstore.SweepResult{Chunks: 1, Shards: 2, Bytes: shardBytes(a), Spared: 1})
	checkGone(t, s, a)
	checkPresent(t, s, b)
	justAfter := t1.Add(time.Nanosecond)
	checkCandidates(t, "cutoff t1+1ns", candidates(t, s, nil, justAfter), wantCandidates(b))
	res = mustSweep(t, s, justAfter, b[0].Key.ID)
	checkSweep(t, "sweep at t1+1ns", res, chunkstore.SweepResult{Chunks: 1, Shards: 2, Bytes: shardBytes(b)})
	checkGone(t, s, b)
}

func testSweepUnknownIsNoop(t *testing.T, s chunkstore.GCStore, clk *Clock) {
	a := gcChunk(1, 3)
	putShards(t, s, a...)
	far := clk.Now().Add(1000 * time.Hour)
	before := mustStats(t, s)
	checkSweep(t, "unknown ids", mustSweep(t, s, far, testID(50), testID(51)), chunkstore.SweepResult{})
	checkSweep(t, "no ids", mustSweep(t, s, far), chunkstore.SweepResult{})
	if after := mustStats(t, s); after.Shards != before.Shards || after.Bytes != before.Bytes {
		t.Errorf("stats after sweeping unknown ids = %+v, want %+v", after, before)
	}
	checkPresent(t, s, a)
}

func testSweepListedTwice(t *testing.T, s chunkstore.GCStore, clk *Clock) {
	a, b := gcChunk(1, 3), gcChunk(2, 1)
	putShards(t, s, append(a, b...)...)
	t1 := clk.Advance(time.Hour)
	mustTouch(t, s, b[0].Key)
	res := mustSweep(t, s, t1, a[0].Key.ID, b[0].Key.ID, a[0].Key.ID, b[0].Key.ID)
	checkSweep(t, "sweep", res, chunkstore.SweepResult{Chunks: 1, Shards: 3, Bytes: shardBytes(a), Spared: 1})
	checkGone(t, s, a)
	checkPresent(t, s, b)
}

func testDeletedChunkIsNoCandidate(t *testing.T, s chunkstore.GCStore, clk *Clock) {
	t0 := clk.Now()
	a, b := gcChunk(1, 2), gcChunk(2, 2)
	putShards(t, s, append(a, b...)...)
	if err := s.DeleteShards(context.Background(), keysOf(a)); err != nil {
		t.Fatalf("DeleteShards: %v", err)
	}
	if err := s.DeleteShards(context.Background(), keysOf(b[:1])); err != nil {
		t.Fatalf("DeleteShards: %v", err)
	}
	cutoff := clk.Advance(time.Hour)
	checkCandidates(t, "after deletes", candidates(t, s, nil, cutoff), wantCandidates(b[1:]))
	// A shard of the deleted chunk written later is a fresh write.
	putShards(t, s, a[0])
	checkCandidates(t, "after re-put", candidates(t, s, nil, t0.Add(30*time.Minute)), wantCandidates(b[1:]))
}

func testSweptChunkCanReturn(t *testing.T, s chunkstore.GCStore, clk *Clock) {
	a := gcChunk(1, 2)
	putShards(t, s, a...)
	t1 := clk.Advance(time.Hour)
	checkSweep(t, "sweep", mustSweep(t, s, t1, a[0].Key.ID), chunkstore.SweepResult{Chunks: 1, Shards: 2, Bytes: shardBytes(a)})
	if got := mustTouch(t, s, keysOf(a)...); !slices.Equal(got, []bool{false, false}) {
		t.Errorf("TouchShards after sweep = %v, want [false false]", got)
	}
	putShards(t, s, a[1]) // written again at t1: a new life, not swept at cutoff t1
	checkCandidates(t, "after re-put", candidates(t, s, nil, t1), nil)
	checkSweep(t, "second sweep", mustSweep(t, s, t1, a[0].Key.ID), chunkstore.SweepResult{Spared: 1})
	checkPresent(t, s, a[1:])
}

func testGCInvalid(t *testing.T, s chunkstore.GCStore, clk *Clock) {
	ctx := context.Background()
	a := gcChunk(1, 2)
	putShards(t, s, a...)
	far := clk.Now().Add(time.Hour)
	if _, err := s.SweepChunks(ctx, []chunk.ID{a[0].Key.ID}, time.Time{}); !errors.Is(err, chunkstore.ErrInvalid) {
		t.Errorf("SweepChunks with a zero cutoff = %v, want ErrInvalid", err)
	}
	if _, err := s.SweepChunks(ctx, []chunk.ID{a[0].Key.ID, {}}, far); !errors.Is(err, chunkstore.ErrInvalid) {
		t.Errorf("SweepChunks with a zero ID = %v, want ErrInvalid", err)
	}
	err := s.GCCandidates(ctx, nil, time.Time{}, func(chunk.ID, int64) error { return nil })
	if !errors.Is(err, chunkstore.ErrInvalid) {
		t.Errorf("GCCandidates with a zero cutoff = %v, want ErrInvalid", err)
	}
	checkPresent(t, s, a) // the rejected sweeps deleted nothing
}

func testGCCanceled(t *testing.T, s chunkstore.GCStore, clk *Clock) {
	a := gcChunk(1, 2)
	putShards(t, s, a...)
	far := clk.Now().Add(time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.TouchShards(ctx, keysOf(a)); !errors.Is(err, context.Canceled) {
		t.Errorf("TouchShards with a canceled context = %v, want context.Canceled", err)
	}
	if _, err := s.SweepChunks(ctx, []chunk.ID{a[0].Key.ID}, far); !errors.Is(err, context.Canceled) {
		t.Errorf("SweepChunks with a canceled context = %v, want context.Canceled", err)
	}
	err := s.GCCandidates(ctx, nil, far, func(chunk.ID, int64) error { return nil })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("GCCandidates with a canceled context = %v, want context.Canceled", err)
	}
	checkPresent(t, s, a)
}

// testConcurrentTouchAndSweep races touches and duplicate puts against sweeps of the same
// chunks. Every chunk was written at t0 and the clock then stands at t1 = cutoff, so a
// touch or write that wins the race spares its chunk and one that loses finds it gone:
//   - a touch that reported its key stored means the whole chunk survived;
//   - a touch that reported it missing means the whole chunk was swept;
//   - a re-put chunk is either whole (put first) or holds only the re-put shard (swept
//     first, then written anew), never a mixture.
func testConcurrentTouchAndSweep(t *testing.T, s chunkstore.GCStore, clk *Clock) {
	const (
		touched   = 48 // chunks 0..touched-1 are touched
		reput     = 16 // chunks touched..touched+reput-1 get shard 0 written again
		perChunk  = 3
		touchers  = 4
		sweepers  = 2
		sweepSize = 5
	)
	ctx := context.Background()
	chunks := make([][]chunkstore.Shard, touched+reput)
	ids := make([]chunk.ID, len(chunks))
	for i := range chunks {
		chunks[i] = gcChunk(100+i, perChunk)
		ids[i] = chunks[i][0].Key.ID
		putShards(t, s, chunks[i]...)
	}
	cutoff := clk.Advance(time.Hour)

	start := make(chan struct{})
	var wg sync.WaitGroup
	found := make([]bool, touched)
	results := make([]chunkstore.SweepResult, sweepers)
	errs := make([]error, touchers+sweepers+1)
	for w := range touchers {
		wg.Go(func() {
			<-start
			for i := w; i < touched; i += touchers {
				got, err := s.TouchShards(ctx, []chunkstore.ShardKey{chunks[i][i%perChunk].Key})
				if err != nil {
					errs[w] = err
					return
				}
				found[i] = got[0]
			}
		})
	}
	for w := range sweepers {
		wg.Go(func() {
			<-start
			order := slices.Clone(ids)
			if w%2 == 1 {
				slices.Reverse(order)
			}
			for len(order) > 0 {
				n := min(sweepSize, len(order))
				res, err := s.SweepChunks(ctx, order[:n], cutoff)
				if err != nil {
					errs[touchers+w] = err
					return
				}
				results[w].Chunks += res.Chunks
				results[w].Shards += res.Shards
				order = order[n:]
			}
		})
	}
	wg.Go(func() {
		<-start
		for i := touched; i < touched+reput; i++ {
			again := testShard(100+i, 0, 50, 7) // differs from the stored shard 0
			if err := s.PutShards(ctx, []chunkstore.Shard{again}); err != nil {
				errs[touchers+sweepers] = err
				return
			}
		}
	})
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}

	swept := 0
	for i := range touched {
		has := mustHas(t, s, keysOf(chunks[i])...)
		switch {
		case found[i] && slices.Contains(has, false):
			t.Errorf("chunk %d: touch found it but the sweep took shards: %v", i, has)
		case !found[i] && slices.Contains(has, true):
			t.Errorf("chunk %d: touch found it gone but shards remain: %v", i, has)
		case !found[i]:
			swept++
		}
	}
	for i := touched; i < touched+reput; i++ {
		has := mustHas(t, s, keysOf(chunks[i])...)
		switch {
		case slices.Equal(has, []bool{true, true, true}):
			checkPresent(t, s, chunks[i]) // the put came first: first write kept
		case slices.Equal(has, []bool{true, false, false}):
			swept++
			checkShard(t, mustGet(t, s, chunks[i][0].Key), testShard(100+i, 0, 50, 7))
		default:
			t.Errorf("re-put chunk %d: shards present %v, want all or only shard 0", i, has)
		}
	}
	var total chunkstore.SweepResult
	for _, r := range results {
		total.Chunks += r.Chunks
		total.Shards += r.Shards
	}
	if total.Chunks != int64(swept) || total.Shards != int64(swept*perChunk) {
		t.Errorf("sweeps report %d chunks, %d shards; the store lost %d chunks of %d shards", total.Chunks, total.Shards, swept, perChunk)
	}
}
