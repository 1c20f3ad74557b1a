package upload

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
)

// Sealer encrypts one chunk: it appends the sealed envelope of plain, whose ID is id, to
// dst and returns the extended slice. It must be safe for concurrent use (*crypt.Keys is).
type Sealer interface {
	Seal(dst []byte, id chunk.ID, plain []byte) ([]byte, error)
}

// Config configures an Uploader. Zero fields take the defaults named beside them.
type Config struct {
	Store  chunkstore.Store // required
	Sealer Sealer           // required
	// MaxChunk is the largest plaintext chunk Add receives; it sizes pooled buffers.
	// Default 4 MiB.
	MaxChunk int
	// Workers is the number of seal goroutines. Default runtime.GOMAXPROCS(0).
	Workers int
	// HasBatch is the most IDs per Store.Has call. Default 256.
	HasBatch int
	// PutBatchBytes and PutBatchChunks bound one Store.Put call. Defaults 8 MiB, 256.
	// Every Put costs each chunk node of the batch one shard RPC and one fsync of its
	// segment, so the chunk bound is set for small chunks (16 KiB bundles of small
	// files): 256 of them make one call where 64 made four (docs/benchmarks.md,
	// "2026-12-07").
	PutBatchBytes  int
	PutBatchChunks int
	// PutInFlight is the number of concurrent Store.Put calls. Default 4.
	PutInFlight int
	// MaxInFlight bounds the chunk buffers held inside the pipeline: a chunk's share
	// (its plaintext buffer's capacity) is taken by Add and given back when its sealed
	// envelope's Put returns. Default 64 MiB, raised to at least 2*MaxChunk.
	MaxInFlight int64
}

// Stats are the figures of one Uploader.
type Stats struct {
	Chunks       int64 // distinct chunk IDs added
	ChunksAdded  int64 // chunks that were not stored before and were uploaded
	BytesAdded   int64 // sealed bytes of the uploaded chunks
	PlainAdded   int64 // plaintext bytes of the uploaded chunks
	ChunksDedup  int64 // distinct chunks found already stored
	DupsInBackup int64 // Add calls for an ID already added to this Uploader
}

type item struct {
	id   chunk.ID
	data []byte // plaintext (from Add) or sealed envelope
	n    int    // the chunk's MaxInFlight share, held from Add until its Put returns
}

// Uploader runs the pipeline. Add may be called from many goroutines; Close must be
// called exactly once, after every Add has returned.
type Uploader struct {
	cfg  Config
	ctx  context.Context
	g    *errgroup.Group
	in   chan item
	seal chan item
	put  chan item
	sem  *semaphore.Weighted

	plainPool bufPool
	sealPool  bufPool

	mu struct {
		sync.Mutex
		seen map[chunk.ID]struct{}
	}
	stats struct {
		chunks, chunksAdded, bytesAdded, plainAdded, dedup, dups atomic.Int64
	}
	closed atomic.Bool
}

// New starts an Uploader's goroutines. They stop when ctx is cancelled or a stage fails;
// Close joins them.
func New(ctx context.Context, cfg Config) *Uploader {
	if cfg.MaxChunk <= 0 {
		cfg.MaxChunk = 4 << 20
	}
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	if cfg.HasBatch <= 0 {
		cfg.HasBatch = 256
	}
	if cfg.PutBatchBytes <= 0 {
		cfg.PutBatchBytes = 8 << 20
	}
	if cfg.PutBatchChunks <= 0 {
		cfg.PutBatchChunks = 256
	}
	if cfg.PutInFlight <= 0 {
		cfg.PutInFlight = 4
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 64 << 20
	}
	cfg.MaxInFlight = max(cfg.MaxInFlight, 2*int64(cfg.MaxChunk))
	g, gctx := errgroup.WithContext(ctx)
	u := &Uploader{
		cfg:  cfg,
		ctx:  gctx,
		g:    g,
		in:   make(chan item, cfg.HasBatch),
		seal: make(chan item, 2*cfg.Workers),
		put:  make(chan item, cfg.PutBatchChunks),
		sem:  semaphore.NewWeighted(cfg.MaxInFlight),
	}
	u.mu.seen = make(map[chunk.ID]struct{})

	// NB: each stage closes the next stage's channel once all its goroutines are done;
	// Close closes u.in. On failure every stage also watches gctx, so nothing blocks.
	var dedupWG, sealWG sync.WaitGroup
	const dedupers = 2
	for range dedupers {
		dedupWG.Add(1)
		g.Go(func() error {
			defer dedupWG.Done()
			return u.dedupLoop(gctx)
		})
	}
	g.Go(func() error { dedupWG.Wait(); close(u.seal); return nil })
	for range cfg.Workers {
		sealWG.Add(1)
		g.Go(func() error {
			defer sealWG.Done()
			return u.sealLoop(gctx)
		})
	}
	g.Go(func() error { sealWG.Wait(); close(u.put); return nil })
	for range cfg.PutInFlight {
		g.Go(func() error { return u.putLoop(gctx) })
	}
	return u
}

// Buffer returns an empty buffer with capacity at least n from a pool of size classes.
// Fill it and pass it to Add, which recycles it.
func (u *Uploader) Buffer(n int) []byte { return u.plainPool.get(n) }

func (u *Uploader) releasePlain(b []byte) { u.plainPool.put(b) }

// sealCap is the capacity the Sealer needs for n plaintext bytes: its own figure when it
// gives one (a compression policy with a larger worst case, crypt.PolicySealer), else
// sealCap's.
func (u *Uploader) sealCap(n int) int {
	if c, ok := u.cfg.Sealer.(interface{ SealCap(int) int }); ok {
		return max(c.SealCap(n), sealCap(n))
	}
	return sealCap(n)
}

// sealCap is the capacity Seal needs for n plaintext bytes without growing (crypt's
// compression bound plus envelope overhead, with slack).
func sealCap(n int) int { return n + n>>10 + 256 }

// Add queues the plaintext chunk data with ID id (the caller computed it with the
// vault's keys). The Uploader takes ownership of data (ideally from Buffer) until Close
// returns; the caller must not touch it again. Adding an ID already added is cheap and
// uploads nothing. Add blocks while the pipeline is full. It returns the pipeline's
// first error, or ctx's.
func (u *Uploader) Add(ctx context.Context, id chunk.ID, data []byte) error {
	if len(data) == 0 {
		return fmt.Errorf("upload: add %s: %w: empty chunk", id.Str(), chunkstore.ErrInvalid)
	}
	u.mu.Lock()
	_, dup := u.mu.seen[id]
	if !dup {
		u.mu.seen[id] = struct{}{}
	}
	u.mu.Unlock()
	if dup {
		u.stats.dups.Add(1)
		u.releasePlain(data)
		return nil
	}
	u.stats.chunks.Add(1)
	n := min(int64(cap(data)), u.cfg.MaxInFlight)
	// NB: acquire under both contexts: a failed pipeline never releases what it holds.
	actx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(u.ctx, cancel)
	err := u.sem.Acquire(actx, n)
	stop()
	cancel()
	if err != nil {
		return u.fail(ctx, err)
	}
	select {
	case u.in <- item{id: id, data: data, n: int(n)}:
		return nil
	case <-ctx.Done():
		u.sem.Release(n)
		return ctx.Err()
	case <-u.ctx.Done():
		u.sem.Release(n)
		return u.fail(ctx, u.ctx.Err())
	}
}

// fail returns the pipeline's own error when it has one (it is more useful than the
// cancellation it caused).
func (u *Uploader) fail(ctx context.Context, err error) error {
	if ctx.Err() == nil && u.ctx.Err() != nil {
		return fmt.Errorf("upload: pipeline stopped: %w", context.Cause(u.ctx))
	}
	return err
}

func (u *Uploader) done(it item) {
	u.releasePlain(it.data)
	u.sem.Release(int64(it.n))
}

func (u *Uploader) dedupLoop(ctx context.Context) error {
	batch := make([]item, 0, u.cfg.HasBatch)
	ids := make([]chunk.ID, 0, u.cfg.HasBatch)
	for {
		batch, ids = batch[:0], ids[:0]
		select {
		case it, ok := <-u.in:
			if !ok {
				return nil
			}
			batch = append(batch, it)
		case <-ctx.Done():
			return ctx.Err()
		}
	drain:
		for len(batch) < u.cfg.HasBatch {
			select {
			case it, ok := <-u.in:
				if !ok {
					break drain
				}
				batch = append(batch, it)
			default:
				break drain
			}
		}
		for _, it := range batch {
			ids = append(ids, it.id)
		}
		have, err := u.cfg.Store.Has(ctx, ids)
		if err != nil {
			return fmt.Errorf("upload: has (%d ids): %w", len(ids), err)
		}
		if len(have) != len(ids) {
			return fmt.Errorf("upload: has: store answered %d of %d ids", len(have), len(ids))
		}
		for i, it := range batch {
			if have[i] {
				u.stats.dedup.Add(1)
				u.done(it)
				continue
			}
			select {
			case u.seal <- it:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}

func (u *Uploader) sealLoop(ctx context.Context) error {
	for {
		var it item
		select {
		case v, ok := <-u.seal:
			if !ok {
				return nil
			}
			it = v
		case <-ctx.Done():
			return ctx.Err()
		}
		dst := u.sealPool.get(u.sealCap(len(it.data)))
		sealed, err := u.cfg.Sealer.Seal(dst, it.id, it.data)
		plainLen := len(it.data)
		// NB: the plaintext buffer goes back to its pool, but the in-flight share stays
		// held by the sealed envelope (whose buffer is as large) until its Put returns:
		// releasing it here let up to PutBatchChunks sealed 4 MiB chunks queue for the
		// put workers beyond MaxInFlight, 264 MiB of the agent's 440 MiB peak on a large
		// file (docs/benchmarks.md, 2026-12-06).
		u.releasePlain(it.data)
		if err != nil {
			u.sem.Release(int64(it.n))
			return fmt.Errorf("upload: seal %s: %w", it.id.Str(), err)
		}
		u.stats.plainAdded.Add(int64(plainLen))
		select {
		case u.put <- item{id: it.id, data: sealed, n: it.n}:
		case <-ctx.Done():
			u.sem.Release(int64(it.n))
			return ctx.Err()
		}
	}
}

func (u *Uploader) putLoop(ctx context.Context) error {
	batch := make([]chunkstore.Chunk, 0, u.cfg.PutBatchChunks)
	for {
		batch = batch[:0]
		size, held := 0, int64(0)
		select {
		case it, ok := <-u.put:
			if !ok {
				return nil
			}
			batch = append(batch, chunkstore.Chunk{ID: it.id, Data: it.data})
			size += len(it.data)
			held += int64(it.n)
		case <-ctx.Done():
			return ctx.Err()
		}
	drain:
		for len(batch) < u.cfg.PutBatchChunks && size < u.cfg.PutBatchBytes {
			select {
			case it, ok := <-u.put:
				if !ok {
					break drain
				}
				batch = append(batch, chunkstore.Chunk{ID: it.id, Data: it.data})
				size += len(it.data)
				held += int64(it.n)
			default:
				break drain
			}
		}
		err := u.cfg.Store.Put(ctx, batch)
		u.sem.Release(held)
		if err != nil {
			return fmt.Errorf("upload: put %d chunks (%d bytes, first %s): %w", len(batch), size, batch[0].ID.Str(), err)
		}
		u.stats.chunksAdded.Add(int64(len(batch)))
		u.stats.bytesAdded.Add(int64(size))
		for i := range batch {
			u.sealPool.put(batch[i].Data)
			batch[i].Data = nil
		}
	}
}

// ErrClosed is returned by a second Close.
var ErrClosed = errors.New("upload: closed")

// Close flushes the queued chunks, waits for every goroutine and returns the figures and
// the first error of any stage. When it returns nil every added chunk is durably stored
// (or was already). Close must be called once, after all Add calls have returned.
func (u *Uploader) Close() (Stats, error) {
	if u.closed.Swap(true) {
		return Stats{}, ErrClosed
	}
	close(u.in)
	err := u.g.Wait()
	return u.Stats(), err
}

// Stats returns the figures so far; safe to call at any time, from any goroutine.
func (u *Uploader) Stats() Stats {
	return Stats{
		Chunks:       u.stats.chunks.Load(),
		ChunksAdded:  u.stats.chunksAdded.Load(),
		BytesAdded:   u.stats.bytesAdded.Load(),
		PlainAdded:   u.stats.plainAdded.Load(),
		ChunksDedup:  u.stats.dedup.Load(),
		DupsInBackup: u.stats.dups.Load(),
	}
}
