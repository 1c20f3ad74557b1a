package upload

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/memstore"
)

// prefixSealer "seals" by prepending the ID, so tests can check what was stored.
type prefixSealer struct{}

func (prefixSealer) Seal(dst []byte, id chunk.ID, plain []byte) ([]byte, error) {
	dst = append(dst, id[:]...)
	return append(dst, plain...), nil
}

// recStore records Put batch sizes and can fail Puts.
type recStore struct {
	chunkstore.Store
	mu      sync.Mutex
	batches []int
	fail    error
	hasIDs  atomic.Int64
}

func (r *recStore) Put(ctx context.Context, cs []chunkstore.Chunk) error {
	r.mu.Lock()
	r.batches = append(r.batches, len(cs))
	fail := r.fail
	r.mu.Unlock()
	if fail != nil {
		return fail
	}
	return r.Store.Put(ctx, cs)
}

func (r *recStore) Has(ctx context.Context, ids []chunk.ID) ([]bool, error) {
	r.hasIDs.Add(int64(len(ids)))
	return r.Store.Has(ctx, ids)
}

func idOf(b []byte) chunk.ID { return chunk.ID(sha256.Sum256(b)) }

func TestUploadDedupAndStore(t *testing.T) {
	ctx := context.Background()
	st := &recStore{Store: memstore.NewChunks()}
	pre := []byte("already stored")
	if err := st.Store.Put(ctx, []chunkstore.Chunk{{ID: idOf(pre), Data: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	u := New(ctx, Config{Store: st, Sealer: prefixSealer{}, MaxChunk: 1 << 16, Workers: 3})
	const n = 500
	var wg sync.WaitGroup
	var addErr atomic.Value
	for range 4 {
		wg.Go(func() {
			// Every goroutine adds the same n chunks: each is uploaded once.
			for i := range n {
				plain := fmt.Appendf(u.Buffer(64), "chunk %d", i)
				if err := u.Add(ctx, idOf(plain), plain); err != nil {
					addErr.Store(err)
				}
			}
		})
	}
	wg.Wait()
	if err := u.Add(ctx, idOf(pre), append(u.Buffer(len(pre)), pre...)); err != nil {
		t.Fatal(err)
	}
	if e := addErr.Load(); e != nil {
		t.Fatal(e)
	}
	s, err := u.Close()
	if err != nil {
		t.Fatal(err)
	}
	if s.Chunks != n+1 || s.ChunksAdded != n || s.ChunksDedup != 1 || s.DupsInBackup != 3*n {
		t.Errorf("stats %+v", s)
	}
	if got := st.hasIDs.Load(); got != n+1 {
		t.Errorf("asked Has for %d ids, want %d", got, n+1)
	}
	for _, b := range st.batches {
		if b > 256 {
			t.Errorf("put batch of %d chunks, above the default 256", b)
		}
	}
	for i := range n {
		plain := fmt.Appendf(nil, "chunk %d", i)
		id := idOf(plain)
		got, err := st.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, append(id[:], plain...)) {
			t.Fatalf("chunk %d stored as %q", i, got)
		}
	}
	if s.BytesAdded != s.PlainAdded+int64(n*chunk.Size) {
		t.Errorf("bytes added %d, plain %d", s.BytesAdded, s.PlainAdded)
	}
	if _, err := u.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
}

func TestUploadPutFailureStopsPipeline(t *testing.T) {
	ctx := context.Background()
	boom := errors.New("disk on fire")
	st := &recStore{Store: memstore.NewChunks(), fail: boom}
	u := New(ctx, Config{Store: st, Sealer: prefixSealer{}, MaxChunk: 1 << 20, MaxInFlight: 2 << 20})
	deadline := time.Now().Add(10 * time.Second)
	var err error
	// Keep adding until the failure reaches Add: it must not block forever even though
	// the failed pipeline never releases its in-flight budget.
	for i := 0; err == nil; i++ {
		if time.Now().After(deadline) {
			t.Fatal("Add never reported the put failure")
		}
		plain := append(u.Buffer(512<<10), bytes.Repeat([]byte{byte(i), byte(i >> 8)}, 256<<10)...)
		err = u.Add(ctx, idOf(plain), plain)
	}
	if !errors.Is(err, boom) {
		t.Errorf("Add: %v, want the put error", err)
	}
	if _, err := u.Close(); !errors.Is(err, boom) {
		t.Errorf("Close: %v, want the put error", err)
	}
}

func TestUploadCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	u := New(ctx, Config{Store: memstore.NewChunks(), Sealer: prefixSealer{}})
	cancel()
	plain := []byte("x")
	err := u.Add(ctx, idOf(plain), plain)
	if _, cerr := u.Close(); !errors.Is(cerr, context.Canceled) && !errors.Is(err, context.Canceled) {
		t.Errorf("after cancel: add %v, close %v", err, cerr)
	}
}

func TestAddRefusesEmpty(t *testing.T) {
	u := New(context.Background(), Config{Store: memstore.NewChunks(), Sealer: prefixSealer{}})
	if err := u.Add(context.Background(), chunk.ID{1}, nil); !errors.Is(err, chunkstore.ErrInvalid) {
		t.Errorf("empty chunk: %v", err)
	}
	if _, err := u.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestBufPoolClasses(t *testing.T) {
	var p bufPool
	for _, n := range []int{0, 1, 4096, 4 << 20, 4<<20 + 4<<10 + 256, 100 << 20} {
		b := p.get(n)
		if cap(b) < n || len(b) != 0 {
			t.Errorf("get(%d): len %d cap %d", n, len(b), cap(b))
		}
		p.put(b)
	}
	if classFor(4<<20+4<<10+256) != 22 {
		t.Errorf("a sealed 4 MiB chunk should fit class 22, got %d", classFor(4<<20+4<<10+256))
	}
}

// gateStore blocks every Put until gate is closed.
type gateStore struct {
	chunkstore.Store
	gate chan struct{}
	puts atomic.Int64 // Put calls that returned
}

func (g *gateStore) Put(ctx context.Context, cs []chunkstore.Chunk) error {
	select {
	case <-g.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer g.puts.Add(1)
	return g.Store.Put(ctx, cs)
}

// TestInFlightCoversSealedChunks: a chunk's share of MaxInFlight is held until the Put
// that stores it returns, not only until it is sealed. With every Put stalled, Add
// blocks once MaxInFlight bytes of chunks are in the pipeline; before the fix, sealed
// chunks queued for the put workers without bound (the agent's 440 MiB on a large file).
func TestInFlightCoversSealedChunks(t *testing.T) {
	ctx := context.Background()
	st := &gateStore{Store: memstore.NewChunks(), gate: make(chan struct{})}
	const chunkSize = 1 << 20
	u := New(ctx, Config{Store: st, Sealer: prefixSealer{}, MaxChunk: chunkSize, MaxInFlight: 4 << 20, Workers: 2})
	var added atomic.Int64
	done := make(chan error, 1)
	go func() {
		for i := range 20 {
			plain := append(u.Buffer(chunkSize), bytes.Repeat([]byte{byte(i), 7}, chunkSize/2)...)
			if err := u.Add(ctx, idOf(plain), plain); err != nil {
				done <- err
				return
			}
			added.Add(1)
		}
		done <- nil
	}()
	perChunk := int64(cap(u.Buffer(chunkSize)))
	limit := (4 << 20) / perChunk
	deadline := time.Now().Add(20 * time.Second)
	for u.sem.TryAcquire(1) {
		u.sem.Release(1)
		if time.Now().After(deadline) {
			t.Fatalf("the in-flight budget never filled with every Put stalled (%d chunks added)", added.Load())
		}
		if added.Load() > limit {
			t.Fatalf("%d chunks of %d bytes added with every Put stalled; MaxInFlight allows %d", added.Load(), perChunk, limit)
		}
		runtime.Gosched()
	}
	if n := added.Load(); n > limit {
		t.Fatalf("%d chunks added with every Put stalled; MaxInFlight allows %d", n, limit)
	}
	if st.puts.Load() != 0 {
		t.Fatal("a Put returned through a closed gate")
	}
	close(st.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s, err := u.Close()
	if err != nil {
		t.Fatal(err)
	}
	if s.ChunksAdded != 20 {
		t.Fatalf("stored %d chunks, want 20", s.ChunksAdded)
	}
	if !u.sem.TryAcquire(4 << 20) {
		t.Fatal("in-flight budget not fully released after Close")
	}
}
