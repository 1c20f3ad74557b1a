package client

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"syscall"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/client/chunker"
	"github.com/cofferhq/coffer/client/tree"
)

// Small files are bundled: a directory's changed small files are read in name order as
// one stream, cut by a chunker with small fixed parameters, and each file lists the
// chunks its byte range covers (tree.Node.Offset says where it begins in the first).
// A directory of small files then makes a few chunks instead of one per file, which
// cuts the per-chunk costs of sealing, uploading, erasure coding and indexing. The
// figures behind the sizes are in docs/benchmarks.md ("Small files: replicate or
// bundle"); they are part of the format's dedup behaviour (client/tree/FORMAT.md), so
// every agent uses the same.
const (
	// bundleFileMax: regular files below this size are bundled.
	bundleFileMax = 16 << 10
	// bundleJobBytes: a directory's bundle is cut into jobs of about this many bytes,
	// so that a directory of very many small files still spreads over the workers.
	bundleJobBytes = 16 << 20
)

// bundleParams are the chunker parameters of bundle streams.
func bundleParams() chunker.Params {
	return chunker.Params{Min: 4 << 10, Avg: 16 << 10, Max: 64 << 10}
}

// BundleLayout returns how the agent bundles small files: regular files below fileMax
// bytes are cut, per directory, as one stream with params (for studies such as
// coffer bench's small-file table).
func BundleLayout() (fileMax int, params chunker.Params) { return bundleFileMax, bundleParams() }

// bundled reports whether the file listed as fi goes into its directory's bundle: a
// regular file with content below bundleFileMax, one link (hardlinked files are read
// once for all their names, on their own) and not sparse.
func bundled(n *tree.Node, fi fs.FileInfo) bool {
	size := fi.Size()
	if n.Type != tree.TypeFile || size <= 0 || size >= bundleFileMax || n.Links > 1 {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return !ok || st.Blocks*512 >= size
}

// bundleMember is one file of a bundle job: slot idx of the job's directory.
type bundleMember struct {
	idx  int
	path string
	prev *tree.Node
}

// addBundled queues the file in slot i of d for d's bundle and dispatches the bundle
// when it has grown to bundleJobBytes. d's walker is the only caller for d.
func (b *backup) addBundled(ctx context.Context, d *dirState, i int, path string, size int64, prev *tree.Node, jobs chan<- fileJob) error {
	d.bundle = append(d.bundle, bundleMember{idx: i, path: path, prev: prev})
	d.bundleBytes += size
	if d.bundleBytes >= bundleJobBytes {
		return b.flushBundle(ctx, d, jobs)
	}
	return nil
}

// flushBundle dispatches the files queued for d's bundle as one job (a lone file as an
// ordinary file job).
func (b *backup) flushBundle(ctx context.Context, d *dirState, jobs chan<- fileJob) error {
	ms := d.bundle
	d.bundle, d.bundleBytes = nil, 0
	if len(ms) == 0 {
		return nil
	}
	j := fileJob{slot: slot{d, ms[0].idx}, path: ms[0].path, prev: ms[0].prev}
	if len(ms) > 1 {
		j = fileJob{slot: slot{d, -1}, bundle: ms}
	}
	d.pending.Add(1)
	select {
	case jobs <- j:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// doBundle reads, chunks and queues a bundle job's files, then completes the job's
// directory slot. A file that cannot be read is skipped; the others keep their content.
func (b *backup) doBundle(ctx context.Context, r *reader, j fileJob) error {
	res, err := r.bundle(ctx, j.bundle)
	if err != nil {
		return err
	}
	for k, m := range j.bundle {
		if res[k].err != nil {
			j.d.skip[m.idx] = true
			b.skip(m.path, res[k].err)
			continue
		}
		n := &j.d.nodes[m.idx]
		n.Content, n.Size, n.Offset = res[k].content, res[k].size, res[k].offset
		b.classify(n, m.prev)
	}
	return b.release(ctx, j.d)
}

// bundleResult is one member's outcome: its content, or why it was skipped.
type bundleResult struct {
	content []tree.Extent
	size    int64
	offset  uint32
	err     error
}

// bundleChunk is one chunk of a bundle stream: bytes [start, start+len) of the stream.
type bundleChunk struct {
	start int64
	len   int
	id    chunk.ID // zero for an all-zero chunk (a hole)
}

// bundle reads the members' files one after the other into one stream, cuts it with
// the bundle chunker, queues its chunks and returns each member's extents. A member that
// cannot be opened or read is reported in its result; bytes it contributed before a read
// failure stay in the stream unreferenced. Errors from the upload pipeline (fatalError)
// and ctx end the whole bundle.
func (r *reader) bundle(ctx context.Context, ms []bundleMember) ([]bundleResult, error) {
	res := make([]bundleResult, len(ms))
	spans := make([][2]int64, len(ms)) // stream range of each member
	var chunks []bundleChunk
	buf := r.bbuf
	filled, pos := 0, 0
	var base int64 // stream offset of buf[0]
	cut := func(eof bool) error {
		for pos < filled {
			c := r.bch.Cut(buf[pos:filled], eof)
			if c == 0 {
				break
			}
			id, err := r.emitChunk(ctx, buf[pos:pos+c])
			if err != nil {
				return err
			}
			chunks = append(chunks, bundleChunk{start: base + int64(pos), len: c, id: id})
			pos += c
		}
		base += int64(pos)
		filled = copy(buf, buf[pos:filled])
		pos = 0
		return nil
	}
	var cutErr error // the pipeline's error, which ends the bundle
	space := func(want int) []byte {
		if filled == len(buf) {
			if cutErr = cut(false); cutErr != nil {
				return nil
			}
		}
		return buf[filled:min(len(buf), filled+want)]
	}
	for k, m := range ms {
		start := base + int64(filled)
		n, err := r.bundleFile(m.path, space, func(got int) { filled += got })
		if cutErr != nil {
			return nil, cutErr
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err != nil {
			res[k].err = err
			continue
		}
		spans[k] = [2]int64{start, start + n}
	}
	if err := cut(true); err != nil {
		return nil, err
	}
	lo := 0 // first chunk that can overlap the next member (spans increase)
	for k := range ms {
		if res[k].err != nil {
			continue
		}
		res[k].content, res[k].offset, lo = bundleExtents(chunks, lo, spans[k][0], spans[k][1])
		res[k].size = spans[k][1] - spans[k][0]
	}
	return res, nil
}

// bundleFile opens path and reads it to its end as fstat gives it at open (at most
// bundleFileMax bytes: a file that grew since it was listed is read as listed). space
// returns where the next bytes go (nil when the pipeline failed: the caller knows why),
// filled reports how many went there. It returns the bytes read.
func (r *reader) bundleFile(path string, space func(want int) []byte, filled func(int)) (int64, error) {
	if hook := r.b.a.beforeRead; hook != nil {
		hook(path)
	}
	if hook := r.b.opts.OnOpen; hook != nil {
		hook(path)
	}
	cur := path
	r.b.current.Store(&cur)
	f, st, err := openRegular(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	size := min(st.Size, bundleFileMax)
	var done int64
	for done < size {
		p := space(int(size - done))
		if p == nil {
			return done, errors.New("upload pipeline failed")
		}
		n, err := f.ReadAt(p, done)
		r.b.bytesRead.Add(int64(n))
		filled(n)
		done += int64(n)
		if err == io.EOF {
			break // the file shrank
		}
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// bundleExtents returns the extents of stream bytes [start, end) over chunks (sorted,
// contiguous, covering them), where the file begins in its first chunk (zero when that
// chunk is a hole) and the index of that chunk, from which the search for a later range
// may start. The search starts at chunks[lo]. An empty range has no extents.
func bundleExtents(chunks []bundleChunk, lo int, start, end int64) ([]tree.Extent, uint32, int) {
	var ext []tree.Extent
	var offset uint32
	for lo < len(chunks) && chunks[lo].start+int64(chunks[lo].len) <= start {
		lo++
	}
	for i := lo; i < len(chunks) && chunks[i].start < end; i++ {
		c := chunks[i]
		from := max(start, c.start)
		to := min(end, c.start+int64(c.len))
		if c.id.IsZero() {
			ext = addHole(ext, to-from)
			continue
		}
		if i == lo {
			offset = uint32(from - c.start)
		}
		ext = append(ext, tree.Extent{ID: c.id, Len: uint32(to - from)})
	}
	return ext, offset, lo
}
