package client

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/client/tree"
)

// batchProbeStore records the batched reads of an ordered fetch: the IDs of every
// GetMany call, the most calls in flight at once, and the single Gets. Until two
// GetMany calls have been in flight together (or the test's deadline), each call waits
// for a second one, so a fetch that never overlaps its reads fails the test instead of
// passing slowly. failOnce makes the batched read of that chunk fail once.
type batchProbeStore struct {
	*countingStore
	mu       sync.Mutex
	calls    [][]chunk.ID
	inFlight int
	maxIn    int
	overlap  chan struct{} // closed once two calls were in flight together
	closed   bool
	singles  map[chunk.ID]int // single Gets by ID
	failOnce chunk.ID
	failed   atomic.Bool
}

func (s *batchProbeStore) GetMany(ctx context.Context, ids []chunk.ID) []chunkstore.GetResult {
	s.mu.Lock()
	s.calls = append(s.calls, append([]chunk.ID(nil), ids...))
	s.inFlight++
	s.maxIn = max(s.maxIn, s.inFlight)
	if s.inFlight >= 2 && !s.closed {
		close(s.overlap)
		s.closed = true
	}
	s.mu.Unlock()
	select {
	case <-s.overlap:
	case <-time.After(10 * time.Second): // the test then fails on maxIn
	case <-ctx.Done():
	}
	out := chunkstore.GetEach(ctx, s.countingStore, ids)
	for i, id := range ids {
		if id == s.failOnce && s.failed.CompareAndSwap(false, true) {
			out[i] = chunkstore.GetResult{Err: errGet}
		}
	}
	s.mu.Lock()
	s.inFlight--
	s.mu.Unlock()
	return out
}

func (s *batchProbeStore) Get(ctx context.Context, id chunk.ID) ([]byte, error) {
	s.mu.Lock()
	s.singles[id]++
	s.mu.Unlock()
	return s.countingStore.Get(ctx, id)
}

// TestDumpReadsInBatches dumps a 20 MiB file and restores a block image with repeated
// blocks and holes: both read their chunks in GetMany batches (at most fetchBatchBytes
// of extents each, never one chunk twice in a batch), with several batches in flight at
// once, deliver the bytes in order, and read a chunk whose batched read failed once
// more alone.
func TestDumpReadsInBatches(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(7, 8))
	big := make([]byte, 20<<20)
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	// NB: 64 zero bytes end every 384 KiB, where fastcdc-v2 cuts (from its 256 KiB
	// minimum on), so no chunk passes 768 KiB and every batch (2 MiB) holds several,
	// whatever gear table the test vault's random key gives; with chunks of the default
	// 1 MiB average two neighbours could exceed a batch, and a dump of only such chunks
	// read one per call.
	for end := 384 << 10; end <= len(big); end += 384 << 10 {
		clear(big[end-64 : end])
	}
	writeFile(t, filepath.Join(dir, "src", "big.bin"), big, 0o644)
	// The image: 256 blocks of 64 KiB, four distinct contents, every fifth block a hole.
	const bs = 64 << 10
	var blocks [4][]byte
	for i := range blocks {
		blocks[i] = make([]byte, bs)
		for j := range blocks[i] {
			blocks[i][j] = byte(rng.Uint32())
		}
	}
	img := make([]byte, 256*bs)
	for b := range 256 {
		if b%5 != 4 {
			copy(img[b*bs:], blocks[b%4])
		}
	}
	imgPath := filepath.Join(dir, "disk.img")
	writeFile(t, imgPath, img, 0o644)

	e := newEnv(t)
	a := e.open(t)
	res, err := a.Backup(ctx, BackupOptions{Paths: []string{filepath.Join(dir, "src")}})
	if err != nil {
		t.Fatal(err)
	}
	ires, err := a.BackupBlock(ctx, BlockOptions{Path: imgPath, BlockSize: bs})
	if err != nil {
		t.Fatal(err)
	}

	probe := func(t *testing.T) (*Agent, *batchProbeStore) {
		st := &batchProbeStore{countingStore: e.chunks, overlap: make(chan struct{}), singles: map[chunk.ID]int{}}
		cfg := e.cfg
		cfg.Chunks, cfg.Workers, cfg.Fetches = st, 1, 16
		pa, err := Open(ctx, cfg, "v1", testPass)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pa.Close() })
		return pa, st
	}
	check := func(t *testing.T, st *batchProbeStore, n *tree.Node) {
		t.Helper()
		st.mu.Lock()
		defer st.mu.Unlock()
		var data int
		for _, x := range n.Content {
			if !x.Hole {
				data++
			}
		}
		if len(st.calls) < 2 || len(st.calls) >= data {
			t.Errorf("%d GetMany calls for %d data extents: want batches of several chunks, at least two", len(st.calls), data)
		}
		if st.maxIn < 2 {
			t.Errorf("at most %d batched reads in flight, want 2 or more (a single-file read must overlap its reads)", st.maxIn)
		}
		for _, ids := range st.calls {
			seen := map[chunk.ID]bool{}
			for _, id := range ids {
				if seen[id] {
					t.Errorf("a batch reads chunk %s twice", id.Str())
				}
				seen[id] = true
			}
		}
	}

	t.Run("dump", func(t *testing.T) {
		pa, st := probe(t)
		n, err := pa.lookup(ctx, res.Snapshot, "/src/big.bin")
		if err != nil {
			t.Fatal(err)
		}
		st.failOnce = n.Content[len(n.Content)/2].ID
		var buf bytes.Buffer
		if err := pa.Dump(ctx, res.Snapshot, "/src/big.bin", &buf); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Bytes(), big) {
			t.Fatalf("Dump: %d bytes, not the source's %d", buf.Len(), len(big))
		}
		st.mu.Lock()
		for _, x := range n.Content {
			want := 0
			if x.ID == st.failOnce {
				want = 1 // the retry of the failed batched read
			}
			if got := st.singles[x.ID]; got != want {
				t.Errorf("chunk %s read alone %d times, want %d", x.ID.Str(), got, want)
			}
		}
		st.mu.Unlock()
		check(t, st, n)
		for _, ids := range st.calls {
			var sum int64
			for _, id := range ids {
				for _, x := range n.Content {
					if x.ID == id {
						sum += int64(x.Len)
						break
					}
				}
			}
			if len(ids) > 1 && sum > fetchBatchBytes {
				t.Errorf("a batch of %d chunks holds %d bytes, more than %d", len(ids), sum, fetchBatchBytes)
			}
		}
	})

	t.Run("image", func(t *testing.T) {
		pa, st := probe(t)
		out := filepath.Join(dir, "restored.img")
		if _, err := pa.RestoreImage(ctx, ires.Snapshot, ImageRestoreOptions{Target: out}); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, img) {
			t.Fatal("restored image differs from the source")
		}
		root, err := pa.LoadTree(ctx, ires.Snapshot.Tree)
		if err != nil {
			t.Fatal(err)
		}
		var n *tree.Node
		for i := range root.Nodes {
			if root.Nodes[i].Type == tree.TypeFile {
				n = &root.Nodes[i]
			}
		}
		if n == nil {
			t.Fatal("no file node in the image snapshot's root tree")
		}
		st.mu.Lock()
		calls := len(st.calls)
		st.mu.Unlock()
		if calls == 0 {
			t.Fatal("the image restore made no batched read")
		}
		check(t, st, n)
	})

	t.Run("cancelled", func(t *testing.T) {
		pa, _ := probe(t)
		cctx, cancel := context.WithCancel(ctx)
		w := &cancelAfter{n: 3 << 20, cancel: cancel}
		err := pa.Dump(cctx, res.Snapshot, "/src/big.bin", w)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Dump cancelled mid-way: %v, want context.Canceled", err)
		}
	})
}

// cancelAfter cancels its context once n bytes were written to it.
type cancelAfter struct {
	n      int
	cancel context.CancelFunc
}

func (w *cancelAfter) Write(p []byte) (int, error) {
	w.n -= len(p)
	if w.n <= 0 {
		w.cancel()
	}
	return len(p), nil
}
