package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/cofferhq/coffer/chunkstore"
)

// RunShardStore runs the chunkstore.ShardStore conformance suite. open must return a fresh,
// empty store for each call.
func RunShardStore(t *testing.T, open func(t *testing.T) chunkstore.ShardStore) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(*testing.T, chunkstore.ShardStore)
	}{
		{"RoundTrip", testShardRoundTrip},
		{"FirstWriteWins", testShardFirstWriteWins},
		{"FirstWriteWinsWithinBatch", testShardFirstWriteWinsWithinBatch},
		{"HasShardsOrder", testHasShardsOrder},
		{"GetMissing", testGetMissing},
		{"Delete", testShardDelete},
		{"PutAfterDelete", testPutAfterDelete},
		{"Enumerate", testEnumerate},
		{"EnumerateAfter", testEnumerateAfter},
		{"EnumerateStops", testEnumerateStops},
		{"Stats", testShardStats},
		{"ConcurrentPuts", testConcurrentPuts},
		{"CallerOwnsSlices", testShardCallerOwns},
		{"InvalidEmptyData", testInvalidEmptyData},
		{"InvalidShards", testInvalidShards},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
	runPGLister(t, open)
}

func putShards(t *testing.T, s chunkstore.ShardStore, shards ...chunkstore.Shard) {
	t.Helper()
	if err := s.PutShards(context.Background(), shards); err != nil {
		t.Fatalf("PutShards(%d shards): %v", len(shards), err)
	}
}

func mustGet(t *testing.T, s chunkstore.ShardStore, key chunkstore.ShardKey) chunkstore.Shard {
	t.Helper()
	got, err := s.GetShard(context.Background(), key)
	if err != nil {
		t.Fatalf("GetShard(%s/%d): %v", key.ID.Str(), key.Index, err)
	}
	return got
}

func checkShard(t *testing.T, got, want chunkstore.Shard) {
	t.Helper()
	if got.Key != want.Key {
		t.Errorf("key = %s/%d, want %s/%d", got.Key.ID.Str(), got.Key.Index, want.Key.ID.Str(), want.Key.Index)
	}
	if got.Meta != want.Meta {
		t.Errorf("shard %s/%d: meta = %+v, want %+v", want.Key.ID.Str(), want.Key.Index, got.Meta, want.Meta)
	}
	if !bytes.Equal(got.Data, want.Data) {
		t.Errorf("shard %s/%d: data differs (%d bytes, want %d)", want.Key.ID.Str(), want.Key.Index, len(got.Data), len(want.Data))
	}
}

func mustHas(t *testing.T, s chunkstore.ShardStore, keys ...chunkstore.ShardKey) []bool {
	t.Helper()
	got, err := s.HasShards(context.Background(), keys)
	if err != nil {
		t.Fatalf("HasShards: %v", err)
	}
	if len(got) != len(keys) {
		t.Fatalf("HasShards returned %d results for %d keys", len(got), len(keys))
	}
	return got
}

func mustStats(t *testing.T, s chunkstore.ShardStore) chunkstore.ShardStats {
	t.Helper()
	st, err := s.Stats(context.Background())
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	return st
}

func enumerateAll(t *testing.T, s chunkstore.ShardStore, after *chunkstore.ShardKey) []chunkstore.ShardInfo {
	t.Helper()
	var out []chunkstore.ShardInfo
	if err := s.EnumerateShards(context.Background(), after, func(info chunkstore.ShardInfo) error {
		out = append(out, info)
		return nil
	}); err != nil {
		t.Fatalf("EnumerateShards: %v", err)
	}
	return out
}

func testShardRoundTrip(t *testing.T, s chunkstore.ShardStore) {
	want := []chunkstore.Shard{testShard(1, 0, 1, 0), testShard(1, 5, 1000, 0), testShard(2, 3, 4096, 0)}
	want[2].Meta = chunkstore.ShardMeta{K: 10, M: 4, ChunkLen: 1 << 20, ChunkCRC: 0xdeadbeef, Writer: ""}
	putShards(t, s, want...)
	for _, w := range want {
		checkShard(t, mustGet(t, s, w.Key), w)
	}
}

func testShardFirstWriteWins(t *testing.T, s chunkstore.ShardStore) {
	first := testShard(7, 2, 500, 1)
	second := testShard(7, 2, 700, 2)
	second.Meta.Writer = "agent/intruder"
	putShards(t, s, first)
	putShards(t, s, second) // must succeed and change nothing
	checkShard(t, mustGet(t, s, first.Key), first)
	if st := mustStats(t, s); st.Shards != 1 || st.Bytes != int64(len(first.Data)) {
		t.Errorf("stats after duplicate put = %+v, want 1 shard of %d bytes", st, len(first.Data))
	}
}

func testShardFirstWriteWinsWithinBatch(t *testing.T, s chunkstore.ShardStore) {
	first := testShard(8, 1, 300, 1)
	second := testShard(8, 1, 900, 2)
	other := testShard(9, 0, 10, 0)
	putShards(t, s, first, other, second)
	checkShard(t, mustGet(t, s, first.Key), first)
	checkShard(t, mustGet(t, s, other.Key), other)
	if st := mustStats(t, s); st.Shards != 2 {
		t.Errorf("stats shards = %d, want 2", st.Shards)
	}
}

func testHasShardsOrder(t *testing.T, s chunkstore.ShardStore) {
	a, b := testShard(1, 0, 10, 0), testShard(2, 1, 20, 0)
	putShards(t, s, a, b)
	missing := chunkstore.ShardKey{ID: testID(3), Index: 0}
	sameIDOtherIndex := chunkstore.ShardKey{ID: a.Key.ID, Index: 1}
	keys := []chunkstore.ShardKey{missing, b.Key, sameIDOtherIndex, a.Key, b.Key, missing}
	got := mustHas(t, s, keys...)
	want := []bool{false, true, false, true, true, false}
	if !slices.Equal(got, want) {
		t.Errorf("HasShards = %v, want %v", got, want)
	}
	if got := mustHas(t, s); len(got) != 0 {
		t.Errorf("HasShards(no keys) = %v, want empty", got)
	}
}

func testGetMissing(t *testing.T, s chunkstore.ShardStore) {
	putShards(t, s, testShard(1, 0, 10, 0))
	for _, key := range []chunkstore.ShardKey{{ID: testID(2)}, {ID: testID(1), Index: 1}} {
		_, err := s.GetShard(context.Background(), key)
		if !errors.Is(err, chunkstore.ErrNotFound) {
			t.Errorf("GetShard(%s/%d) error = %v, want ErrNotFound", key.ID.Str(), key.Index, err)
		}
	}
}

func testShardDelete(t *testing.T, s chunkstore.ShardStore) {
	ctx := context.Background()
	a, b := testShard(1, 0, 100, 0), testShard(2, 0, 200, 0)
	putShards(t, s, a, b)
	missing := chunkstore.ShardKey{ID: testID(3)}
	if err := s.DeleteShards(ctx, []chunkstore.ShardKey{a.Key, missing}); err != nil {
		t.Fatalf("DeleteShards: %v", err)
	}
	if _, err := s.GetShard(ctx, a.Key); !errors.Is(err, chunkstore.ErrNotFound) {
		t.Errorf("GetShard after delete: %v, want ErrNotFound", err)
	}
	checkShard(t, mustGet(t, s, b.Key), b)
	if got := mustHas(t, s, a.Key, b.Key); !slices.Equal(got, []bool{false, true}) {
		t.Errorf("HasShards after delete = %v, want [false true]", got)
	}
	// Deleting again, or deleting nothing, is fine.
	if err := s.DeleteShards(ctx, []chunkstore.ShardKey{a.Key, missing}); err != nil {
		t.Errorf("second DeleteShards: %v", err)
	}
	if err := s.DeleteShards(ctx, nil); err != nil {
		t.Errorf("DeleteShards(nil): %v", err)
	}
	if infos := enumerateAll(t, s, nil); len(infos) != 1 || infos[0].Key != b.Key {
		t.Errorf("enumerate after delete = %v, want only %s/%d", infos, b.Key.ID.Str(), b.Key.Index)
	}
}

func testPutAfterDelete(t *testing.T, s chunkstore.ShardStore) {
	ctx := context.Background()
	first, second := testShard(4, 1, 100, 1), testShard(4, 1, 150, 2)
	putShards(t, s, first)
	if err := s.DeleteShards(ctx, []chunkstore.ShardKey{first.Key}); err != nil {
		t.Fatalf("DeleteShards: %v", err)
	}
	putShards(t, s, second) // the key no longer exists, so this write is a first write
	checkShard(t, mustGet(t, s, second.Key), second)
}

// sortedKeys returns keys ordered by chunkstore.ShardKey.Less.
func sortedKeys(shards []chunkstore.Shard) []chunkstore.ShardKey {
	keys := make([]chunkstore.ShardKey, len(shards))
	for i, sh := range shards {
		keys[i] = sh.Key
	}
	slices.SortFunc(keys, func(a, b chunkstore.ShardKey) int {
		switch {
		case a.Less(b):
			return -1
		case b.Less(a):
			return 1
		}
		return 0
	})
	return keys
}

// enumShards is a set of shards over several chunk IDs and indices, put in an unsorted order.
func enumShards() []chunkstore.Shard {
	var shards []chunkstore.Shard
	for n := 10; n > 0; n-- {
		for _, idx := range []uint8{5, 0, 3} {
			shards = append(shards, testShard(n, idx, sizeFor(n*7+int(idx)), 0))
		}
	}
	return shards
}

func testEnumerate(t *testing.T, s chunkstore.ShardStore) {
	if infos := enumerateAll(t, s, nil); len(infos) != 0 {
		t.Fatalf("enumerate empty store: %d shards", len(infos))
	}
	shards := enumShards()
	putShards(t, s, shards[:15]...)
	putShards(t, s, shards[15:]...)
	byKey := make(map[chunkstore.ShardKey]chunkstore.Shard)
	for _, sh := range shards {
		byKey[sh.Key] = sh
	}
	infos := enumerateAll(t, s, nil)
	want := sortedKeys(shards)
	if len(infos) != len(want) {
		t.Fatalf("enumerated %d shards, want %d", len(infos), len(want))
	}
	for i, info := range infos {
		if info.Key != want[i] {
			t.Fatalf("shard %d: key %s/%d, want %s/%d", i, info.Key.ID.Str(), info.Key.Index, want[i].ID.Str(), want[i].Index)
		}
		sh := byKey[info.Key]
		if info.Meta != sh.Meta || info.Len != uint32(len(sh.Data)) {
			t.Errorf("shard %s/%d: info meta %+v len %d, want %+v len %d", info.Key.ID.Str(), info.Key.Index, info.Meta, info.Len, sh.Meta, len(sh.Data))
		}
	}
}

func testEnumerateAfter(t *testing.T, s chunkstore.ShardStore) {
	shards := enumShards()
	putShards(t, s, shards...)
	want := sortedKeys(shards)
	for _, cut := range []int{0, 1, 7, len(want) - 2, len(want) - 1} {
		after := want[cut]
		got := enumerateAll(t, s, &after)
		if len(got) != len(want)-cut-1 {
			t.Errorf("after #%d: %d shards, want %d", cut, len(got), len(want)-cut-1)
			continue
		}
		for i, info := range got {
			if info.Key != want[cut+1+i] {
				t.Errorf("after #%d: shard %d is %s/%d, want %s/%d", cut, i, info.Key.ID.Str(), info.Key.Index, want[cut+1+i].ID.Str(), want[cut+1+i].Index)
				break
			}
		}
	}
	// An after key that is not stored: the same ID with an index between stored ones.
	between := chunkstore.ShardKey{ID: want[0].ID, Index: 1} // stored indices are 0, 3, 5
	got := enumerateAll(t, s, &between)
	if len(got) == 0 || got[0].Key != (chunkstore.ShardKey{ID: want[0].ID, Index: 3}) {
		t.Errorf("after unstored key: first = %v, want index 3 of the same chunk", got)
	}
	if len(got) != len(want)-1 {
		t.Errorf("after unstored key: %d shards, want %d", len(got), len(want)-1)
	}
}

func testEnumerateStops(t *testing.T, s chunkstore.ShardStore) {
	putShards(t, s, enumShards()...)
	errStop := errors.New("storetest: stop here")
	calls := 0
	err := s.EnumerateShards(context.Background(), nil, func(chunkstore.ShardInfo) error {
		calls++
		if calls == 4 {
			return errStop
		}
		return nil
	})
	if !errors.Is(err, errStop) {
		t.Errorf("EnumerateShards error = %v, want the callback's error", err)
	}
	if calls != 4 {
		t.Errorf("callback ran %d times after returning an error on call 4", calls)
	}
}

func testShardStats(t *testing.T, s chunkstore.ShardStore) {
	ctx := context.Background()
	if st := mustStats(t, s); st.Shards != 0 || st.Bytes != 0 {
		t.Errorf("empty store stats = %+v", st)
	}
	shards := enumShards()
	putShards(t, s, shards...)
	var total int64
	for _, sh := range shards {
		total += int64(len(sh.Data))
	}
	if st := mustStats(t, s); st.Shards != int64(len(shards)) || st.Bytes != total {
		t.Errorf("stats = %+v, want %d shards, %d bytes", st, len(shards), total)
	}
	if err := s.DeleteShards(ctx, []chunkstore.ShardKey{shards[0].Key, shards[1].Key}); err != nil {
		t.Fatal(err)
	}
	total -= int64(len(shards[0].Data) + len(shards[1].Data))
	if st := mustStats(t, s); st.Shards != int64(len(shards)-2) || st.Bytes != total {
		t.Errorf("stats after delete = %+v, want %d shards, %d bytes", st, len(shards)-2, total)
	}
}

func testConcurrentPuts(t *testing.T, s chunkstore.ShardStore) {
	const workers, perWorker = 8, 12
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				// Every worker also writes chunk 1000+i, index 0: identical shards from
				// several writers must dedupe to one.
				batch := []chunkstore.Shard{
					testShard(w*100+i, uint8(i%6), sizeFor(w*100+i), 0),
					testShard(1000+i, 0, 64, 0),
				}
				if err := s.PutShards(context.Background(), batch); err != nil {
					errs[w] = fmt.Errorf("worker %d put %d: %w", w, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for w := range workers {
		for i := range perWorker {
			want := testShard(w*100+i, uint8(i%6), sizeFor(w*100+i), 0)
			checkShard(t, mustGet(t, s, want.Key), want)
		}
	}
	for i := range perWorker {
		want := testShard(1000+i, 0, 64, 0)
		checkShard(t, mustGet(t, s, want.Key), want)
	}
	if st := mustStats(t, s); st.Shards != workers*perWorker+perWorker {
		t.Errorf("stats shards = %d, want %d", st.Shards, workers*perWorker+perWorker)
	}
}

func testShardCallerOwns(t *testing.T, s chunkstore.ShardStore) {
	want := testShard(3, 1, 256, 0)
	in := want
	in.Data = slices.Clone(want.Data)
	batch := []chunkstore.Shard{in}
	putShards(t, s, batch...)
	// Mutating what was passed in must not reach the store.
	batch[0].Data[0] ^= 0xff
	batch[0].Data[255] ^= 0xff
	batch[0].Meta.Writer = "changed"
	got := mustGet(t, s, want.Key)
	checkShard(t, got, want)
	// Mutating what was returned must not reach the store either.
	for i := range got.Data {
		got.Data[i] = 0
	}
	checkShard(t, mustGet(t, s, want.Key), want)
}

func testInvalidEmptyData(t *testing.T, s chunkstore.ShardStore) {
	good := testShard(1, 0, 100, 0)
	empty := testShard(2, 0, 10, 0)
	empty.Data = nil
	err := s.PutShards(context.Background(), []chunkstore.Shard{good, empty})
	if !errors.Is(err, chunkstore.ErrInvalid) {
		t.Fatalf("PutShards with empty data: %v, want ErrInvalid", err)
	}
	if got := mustHas(t, s, good.Key, empty.Key); !slices.Equal(got, []bool{false, false}) {
		t.Errorf("after a rejected batch HasShards = %v, want nothing stored", got)
	}
	if st := mustStats(t, s); st.Shards != 0 || st.Bytes != 0 {
		t.Errorf("after a rejected batch stats = %+v, want empty", st)
	}
	empty.Data = []byte{}
	if err := s.PutShards(context.Background(), []chunkstore.Shard{empty}); !errors.Is(err, chunkstore.ErrInvalid) {
		t.Errorf("PutShards with zero-length data: %v, want ErrInvalid", err)
	}
}

func testInvalidShards(t *testing.T, s chunkstore.ShardStore) {
	good := testShard(1, 0, 100, 0)
	badIndex := testShard(2, 6, 10, 0) // K+M = 6, so index 6 is out of range
	oversize := testShard(3, 0, 1, 0)
	oversize.Data = make([]byte, chunkstore.MaxChunkSize+1)
	for name, bad := range map[string]chunkstore.Shard{"index out of range": badIndex, "oversize": oversize} {
		err := s.PutShards(context.Background(), []chunkstore.Shard{good, bad})
		if !errors.Is(err, chunkstore.ErrInvalid) {
			t.Errorf("%s: PutShards = %v, want ErrInvalid", name, err)
		}
		if got := mustHas(t, s, good.Key, bad.Key); !slices.Equal(got, []bool{false, false}) {
			t.Errorf("%s: after a rejected batch HasShards = %v, want nothing stored", name, got)
		}
	}
}
