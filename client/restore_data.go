package client

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/client/tree"
)

// File contents of a restore: createLoop creates each file the walk sends, fetchLoop
// reads the chunks in batches and writes them at their offsets, and finishFile sets a
// file's metadata once its last chunk is written.

// createLoop creates the files it receives until files is closed or ctx ends.
func (r *restorer) createLoop(ctx context.Context, files <-chan fileTask, jobs chan<- chunkJob) error {
	for {
		select {
		case ft, ok := <-files:
			if !ok {
				return nil
			}
			if err := r.createFile(ctx, ft, jobs); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// createFile creates ft's file (never following or replacing anything) and queues its
// chunks; a file without data is finished at once.
func (r *restorer) createFile(ctx context.Context, ft fileTask, jobs chan<- chunkJob) error {
	n := ft.node
	fd, err := openat(ft.dir.fd, ft.name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	ft.dir.release()
	if err != nil {
		return r.pathErr("open", ft.rel, err)
	}
	f := os.NewFile(uintptr(fd), filepath.Join(r.target, ft.rel))
	var data, end int64
	for _, e := range n.Content {
		if !e.Hole {
			data++
		}
		end += int64(e.Len)
	}
	// A file ending in data gets its size from its last write; a trailing hole (or a
	// tree whose extents do not add up to the size) needs it set. Holes stay sparse.
	if last := len(n.Content) - 1; n.Size > 0 && (last < 0 || n.Content[last].Hole || end != n.Size) {
		if err := f.Truncate(n.Size); err != nil {
			f.Close()
			return err
		}
	}
	rf := &restoreFile{f: f, fd: fd, path: ft.rel, node: n}
	r.bytes.Add(n.Size - dataBytes(n))
	if data == 0 {
		return r.finishFile(rf)
	}
	rf.remaining.Store(data)
	off := int64(0)
	for i, e := range n.Content {
		if !e.Hole {
			skip := uint32(0)
			if i == 0 {
				skip = n.Offset
			}
			select {
			case jobs <- chunkJob{rf: rf, off: off, ext: e, skip: skip}:
			case <-ctx.Done():
				// Chunks queued already close the file too (whichever comes first).
				rf.closeOnce.Do(func() { rf.f.Close() })
				return ctx.Err()
			}
		}
		off += int64(e.Len)
	}
	return nil
}

func dataBytes(n *tree.Node) int64 {
	var s int64
	for _, e := range n.Content {
		if !e.Hole {
			s += int64(e.Len)
		}
	}
	return s
}

// Batched chunk reads of a restore: a fetch worker takes the chunks queued for it, up to
// these bounds, and reads them in one chunkstore.GetMany call.
const (
	fetchBatchChunks = 64
	fetchBatchBytes  = 8 << 20 // plaintext
)

// restoreFetchers is how many fetch workers a restore runs for Config.Fetches: each
// keeps a batch of up to fetchBatchChunks chunks in flight.
func restoreFetchers(fetches int) int { return max(2, fetches/4) }

// fetchLoop takes chunk jobs in batches (what is queued, without waiting for more),
// reads each batch's chunks in one call and writes them.
func (r *restorer) fetchLoop(ctx context.Context, jobs <-chan chunkJob) error {
	batch := make([]chunkJob, 0, fetchBatchChunks)
	for {
		batch = batch[:0]
		select {
		case j, ok := <-jobs:
			if !ok {
				return nil
			}
			batch = append(batch, j)
		case <-ctx.Done():
			return ctx.Err() // run closes the files of chunks left in jobs
		}
		closed := false
		size := int64(batch[0].ext.Len)
	more:
		for len(batch) < fetchBatchChunks && size < fetchBatchBytes {
			select {
			case j, ok := <-jobs:
				if !ok {
					closed = true
					break more
				}
				batch = append(batch, j)
				size += int64(j.ext.Len)
			default:
				break more
			}
		}
		if err := r.fetchBatch(ctx, batch); err != nil {
			return err
		}
		if closed {
			return nil
		}
	}
}

// fetchBatch reads the chunks of batch that no other worker is reading and are not
// cached, in one call, and writes every job's chunk. On error the files of the jobs not
// written are closed.
func (r *restorer) fetchBatch(ctx context.Context, batch []chunkJob) error {
	entries := make([]*cacheEntry, len(batch))
	var mine []int // jobs whose chunk this worker reads
	for i, j := range batch {
		e, read := r.chunks.begin(j.ext.ID)
		entries[i] = e
		if read {
			mine = append(mine, i)
		}
	}
	if len(mine) > 0 {
		ids := make([]chunk.ID, len(mine))
		for n, i := range mine {
			ids[n] = batch[i].ext.ID
		}
		res := chunkstore.GetMany(ctx, r.a.cfg.Chunks, ids)
		for n, i := range mine {
			j := batch[i]
			data, err := res[n].Data, res[n].Err
			if err != nil {
				err = fmt.Errorf("client: chunk %s: %w", j.ext.ID.Str(), err)
			} else {
				data, err = r.a.openChunk(j.ext, data)
			}
			r.chunks.finish(j.ext.ID, entries[i], data, err)
		}
	}
	for i, j := range batch {
		data, err := r.chunks.wait(ctx, entries[i])
		if err != nil && ctx.Err() == nil {
			// The read failed (here or in another worker): try this chunk once more alone.
			data, err = r.chunks.get(ctx, j.ext.ID, func() ([]byte, error) { return r.a.fetchChunk(ctx, j.ext) })
		}
		if err == nil {
			data, err = extentData(j.ext, j.skip, data)
		}
		if err == nil {
			_, err = j.rf.f.WriteAt(data, j.off)
		}
		if err != nil {
			for _, left := range batch[i:] {
				left.rf.closeOnce.Do(func() { left.rf.f.Close() })
			}
			return fmt.Errorf("%s: %w", filepath.Join(r.target, j.rf.path), err)
		}
		r.bytes.Add(int64(len(data)))
		if j.rf.remaining.Add(-1) == 0 {
			if err := r.finishFile(j.rf); err != nil {
				for _, left := range batch[i+1:] {
					left.rf.closeOnce.Do(func() { left.rf.f.Close() })
				}
				return err
			}
		}
	}
	return nil
}

// finishFile sets rf's metadata on its handle and closes it.
func (r *restorer) finishFile(rf *restoreFile) error {
	var err error
	rf.closeOnce.Do(func() {
		err = r.setMetaFD(rf.fd, rf.node, rf.path)
		if cerr := rf.f.Close(); err == nil {
			err = cerr
		}
	})
	return err
}
