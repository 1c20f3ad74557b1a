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
	"github.com/cofferhq/coffer/chunkstore/chunk"
)

// RunStore runs the chunkstore.Store conformance suite. open must return a fresh, empty
// store for each call.
func RunStore(t *testing.T, open func(t *testing.T) chunkstore.Store) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(*testing.T, chunkstore.Store)
	}{
		{"RoundTrip", testChunkRoundTrip},
		{"FirstWriteWins", testChunkFirstWriteWins},
		{"HasOrder", testChunkHasOrder},
		{"GetMissing", testChunkGetMissing},
		{"Invalid", testChunkInvalid},
		{"ConcurrentPuts", testChunkConcurrentPuts},
		{"CallerOwnsSlices", testChunkCallerOwns},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
}

func testChunk(n int, size int, variant uint64) chunkstore.Chunk {
	return chunkstore.Chunk{ID: testID(n), Data: testData(uint64(n)<<8|variant, size)}
}

func putChunks(t *testing.T, s chunkstore.Store, chunks ...chunkstore.Chunk) {
	t.Helper()
	if err := s.Put(context.Background(), chunks); err != nil {
		t.Fatalf("Put(%d chunks): %v", len(chunks), err)
	}
}

func checkChunk(t *testing.T, s chunkstore.Store, want chunkstore.Chunk) {
	t.Helper()
	got, err := s.Get(context.Background(), want.ID)
	if err != nil {
		t.Fatalf("Get(%s): %v", want.ID.Str(), err)
	}
	if !bytes.Equal(got, want.Data) {
		t.Errorf("Get(%s): data differs (%d bytes, want %d)", want.ID.Str(), len(got), len(want.Data))
	}
}

func mustHasChunks(t *testing.T, s chunkstore.Store, ids ...chunk.ID) []bool {
	t.Helper()
	got, err := s.Has(context.Background(), ids)
	if err != nil {
		t.Fatalf("Has: %v", err)
	}
	if len(got) != len(ids) {
		t.Fatalf("Has returned %d results for %d ids", len(got), len(ids))
	}
	return got
}

func testChunkRoundTrip(t *testing.T, s chunkstore.Store) {
	want := []chunkstore.Chunk{testChunk(1, 1, 0), testChunk(2, 1000, 0), testChunk(3, 70000, 0)}
	putChunks(t, s, want...)
	for _, w := range want {
		checkChunk(t, s, w)
	}
}

func testChunkFirstWriteWins(t *testing.T, s chunkstore.Store) {
	first, second := testChunk(5, 400, 1), testChunk(5, 800, 2)
	putChunks(t, s, first)
	putChunks(t, s, second)
	checkChunk(t, s, first)
	// Within one batch, too.
	a, b := testChunk(6, 100, 1), testChunk(6, 200, 2)
	putChunks(t, s, a, b)
	checkChunk(t, s, a)
}

func testChunkHasOrder(t *testing.T, s chunkstore.Store) {
	a, b := testChunk(1, 10, 0), testChunk(2, 20, 0)
	putChunks(t, s, a, b)
	got := mustHasChunks(t, s, testID(3), b.ID, a.ID, testID(4), a.ID)
	if want := []bool{false, true, true, false, true}; !slices.Equal(got, want) {
		t.Errorf("Has = %v, want %v", got, want)
	}
	if got := mustHasChunks(t, s); len(got) != 0 {
		t.Errorf("Has(no ids) = %v, want empty", got)
	}
}

func testChunkGetMissing(t *testing.T, s chunkstore.Store) {
	putChunks(t, s, testChunk(1, 10, 0))
	if _, err := s.Get(context.Background(), testID(2)); !errors.Is(err, chunkstore.ErrNotFound) {
		t.Errorf("Get(missing) error = %v, want ErrNotFound", err)
	}
}

func testChunkInvalid(t *testing.T, s chunkstore.Store) {
	good := testChunk(1, 100, 0)
	oversize := chunkstore.Chunk{ID: testID(2), Data: make([]byte, chunkstore.MaxChunkSize+1)}
	empty := chunkstore.Chunk{ID: testID(3)}
	for name, bad := range map[string]chunkstore.Chunk{"oversize": oversize, "empty": empty} {
		err := s.Put(context.Background(), []chunkstore.Chunk{good, bad})
		if !errors.Is(err, chunkstore.ErrInvalid) {
			t.Errorf("%s: Put = %v, want ErrInvalid", name, err)
		}
		if got := mustHasChunks(t, s, good.ID, bad.ID); !slices.Equal(got, []bool{false, false}) {
			t.Errorf("%s: after a rejected batch Has = %v, want nothing stored", name, got)
		}
	}
	// A chunk of exactly MaxChunkSize is fine.
	full := chunkstore.Chunk{ID: testID(4), Data: bytes.Repeat([]byte{0xa5}, chunkstore.MaxChunkSize)}
	putChunks(t, s, full)
	checkChunk(t, s, full)
}

func testChunkConcurrentPuts(t *testing.T, s chunkstore.Store) {
	const workers, perWorker = 8, 8
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				batch := []chunkstore.Chunk{testChunk(w*100+i, sizeFor(w*100+i), 0), testChunk(1000+i, 64, 0)}
				if err := s.Put(context.Background(), batch); err != nil {
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
			checkChunk(t, s, testChunk(w*100+i, sizeFor(w*100+i), 0))
		}
	}
	for i := range perWorker {
		checkChunk(t, s, testChunk(1000+i, 64, 0))
	}
}

func testChunkCallerOwns(t *testing.T, s chunkstore.Store) {
	want := testChunk(9, 300, 0)
	in := []chunkstore.Chunk{{ID: want.ID, Data: slices.Clone(want.Data)}}
	putChunks(t, s, in...)
	in[0].Data[0] ^= 0xff
	got, err := s.Get(context.Background(), want.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Data) {
		t.Fatal("mutating the input after Put changed the stored chunk")
	}
	clear(got)
	checkChunk(t, s, want)
}
