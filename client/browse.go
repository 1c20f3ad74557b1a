package client

import (
	"context"
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/client/tree"
)

// Lazy reads for a file-system view of snapshots (client/mount): trees when a directory
// is looked at, file contents chunk by chunk when they are read. Everything goes
// through the agent's chunk store, which for a restore operator is the client carrying
// the snapshot's restore grant (WithChunks), exactly as for Restore and Dump, and every
// chunk is verified against its ID when it is opened.

// ReadCache holds recently read plaintext chunks for the files read through it and
// coalesces concurrent reads of one chunk (a bundle of small files is fetched once for
// all of them). It keeps at most its size in bytes. Safe for concurrent use.
//
// A cache may be shared by agents of one vault only, and only when whoever reads
// through it may read every snapshot whose files are read through it: a chunk fetched
// for one snapshot is served from the cache to a read of another that references it.
type ReadCache struct{ c *chunkCache }

// NewReadCache returns a cache that keeps at most maxBytes of plaintext (at least one
// maximum-size chunk is useful: smaller chunks than maxBytes are cached, larger ones are
// read but not kept).
func NewReadCache(maxBytes int64) *ReadCache {
	return &ReadCache{c: newChunkCache(max(maxBytes, 0))}
}

// LoadTree returns tree id of the agent's vault: fetched, verified against its ID and
// decoded.
func (a *Agent) LoadTree(ctx context.Context, id chunk.ID) (*tree.Tree, error) {
	if err := a.check(); err != nil {
		return nil, err
	}
	return a.trees.Load(ctx, id)
}

// LoadTrees loads trees ids of the agent's vault in one batched read
// (chunkstore.GetMany): each verified against its ID and decoded. The results are in
// the order of ids, each with its own error.
func (a *Agent) LoadTrees(ctx context.Context, ids []chunk.ID) ([]*tree.Tree, []error) {
	trees, errs := make([]*tree.Tree, len(ids)), make([]error, len(ids))
	if err := a.check(); err != nil {
		for i := range errs {
			errs[i] = err
		}
		return trees, errs
	}
	for i, r := range chunkstore.GetMany(ctx, a.cfg.Chunks, ids) {
		if r.Err != nil {
			errs[i] = fmt.Errorf("snapshot: tree %s: %w", ids[i].Str(), r.Err)
			continue
		}
		trees[i], errs[i] = a.trees.Open(ids[i], r.Data)
	}
	return trees, errs
}

// readAheadExtents is how many data extents past the one a sequential read reached a
// File fetches in the background (about 8 MiB of average 1 MiB chunks).
const readAheadExtents = 8

// File is one regular file of a snapshot opened for reads at any offset (OpenFile). Its
// methods are safe for concurrent use; Close stops its background reads.
type File struct {
	a     *Agent
	cache *ReadCache
	n     *tree.Node
	ends  []int64 // ends[i]: where extent i ends in the file
	ahead int

	ctx    context.Context // background reads; cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	next   int64 // where the last read ended: a read starting there is sequential
	queued int   // extents below this index were read ahead (or read) already
	closed bool
}

// OpenFile opens regular file n (a node of a tree of a snapshot the agent may read) for
// reads through cache. Reads of consecutive ranges fetch the next chunks in the
// background, under ctx, until Close. The file's size is n.Size: holes and bytes its
// extents do not cover read as zeros.
func (a *Agent) OpenFile(ctx context.Context, n *tree.Node, cache *ReadCache) (*File, error) {
	if err := a.check(); err != nil {
		return nil, err
	}
	if n == nil || n.Type != tree.TypeFile {
		return nil, fmt.Errorf("%w: open file: not a regular file", ErrInvalid)
	}
	if cache == nil {
		return nil, fmt.Errorf("%w: open file: no read cache", ErrInvalid)
	}
	ends := make([]int64, len(n.Content))
	var end int64
	for i, e := range n.Content {
		end += int64(e.Len)
		ends[i] = end
	}
	if len(n.Content) > 0 && n.Offset != 0 && n.Content[0].Hole {
		return nil, fmt.Errorf("%w: file %s: content offset %d in a hole", tree.ErrInvalid, n.Name, n.Offset)
	}
	fctx, cancel := context.WithCancel(ctx)
	return &File{a: a, cache: cache, n: n, ends: ends, ahead: readAheadExtents, ctx: fctx, cancel: cancel}, nil
}

// Size is the file's length.
func (f *File) Size() int64 { return f.n.Size }

// ReadAt reads up to len(p) bytes at off, like io.ReaderAt: fewer only at the end of the
// file, with io.EOF. A chunk that cannot be read or does not verify fails the read.
func (f *File) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%w: read at negative offset %d", ErrInvalid, off)
	}
	size := f.n.Size
	if off >= size {
		return 0, io.EOF
	}
	want := p
	if rest := size - off; int64(len(want)) > rest {
		want = want[:rest]
	}
	i := sort.Search(len(f.ends), func(i int) bool { return f.ends[i] > off })
	f.readAhead(off, off+int64(len(want)))
	n := 0
	for n < len(want) {
		pos := off + int64(n)
		if i >= len(f.n.Content) { // beyond the extents: zeros up to Size
			clear(want[n:])
			n = len(want)
			break
		}
		e := f.n.Content[i]
		start := f.ends[i] - int64(e.Len)
		k := int(min(f.ends[i]-pos, int64(len(want)-n)))
		if e.Hole {
			clear(want[n : n+k])
		} else {
			data, err := f.extent(ctx, i)
			if err != nil {
				return n, err
			}
			copy(want[n:n+k], data[pos-start:])
		}
		n += k
		i++
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// extent returns the bytes of data extent i, through the cache.
func (f *File) extent(ctx context.Context, i int) ([]byte, error) {
	e := f.n.Content[i]
	plain, err := f.cache.c.get(ctx, e.ID, func() ([]byte, error) { return f.a.fetchChunk(ctx, e) })
	if err != nil {
		return nil, err
	}
	skip := uint32(0)
	if i == 0 {
		skip = f.n.Offset
	}
	return extentData(e, skip, plain)
}

// readAhead notes a read of [off, end); when it continues the previous read, it starts
// background reads of the data extents up to f.ahead past the last one the read
// touches.
func (f *File) readAhead(off, end int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sequential := off == f.next || off == 0
	f.next = end
	if !sequential || f.closed {
		f.queued = 0
		return
	}
	last := sort.Search(len(f.ends), func(i int) bool { return f.ends[i] >= end })
	from := max(f.queued, last+1)
	to := min(len(f.n.Content), last+1+f.ahead)
	if from >= to {
		return
	}
	f.queued = to
	for j := from; j < to; j++ {
		if f.n.Content[j].Hole {
			continue
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			// NB: the error is not kept (the cache drops failed reads): the read that
			// needs the extent tries again and reports it.
			_, _ = f.extent(f.ctx, j)
		}()
	}
}

// Close stops the file's background reads and waits for them.
func (f *File) Close() error {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.cancel()
	f.wg.Wait()
	return nil
}
