package client

import (
	"context"
	"fmt"
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
	mode, chown, chmod := r.createMode(n)
	fd, err := openat(ft.dir.fd, ft.name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
	ft.dir.release()
	if err != nil {
		return r.pathErr("open", ft.rel, err)
	}
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
		if err := ftruncate(fd, n.Size); err != nil {
			unix.Close(fd)
			return r.pathErr("truncate", ft.rel, err)
		}
	}
	rf := &restoreFile{fd: fd, path: ft.rel, node: n, chown: chown, chmod: chmod}
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
				rf.close()
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
// these bounds, and reads them in one chunkstore.GetMany call. A worker writes nothing
// until its whole batch is read and opened, so batches are kept small and workers many:
// 2 MiB batches with 8 workers restored the suite's ext4 image 16% faster than 8 MiB with
// 4 (median of five alternated rounds, docs/benchmarks.md, "2026-12-07"), and hold half
// the plaintext in flight.
const (
	fetchBatchChunks = 64
	fetchBatchBytes  = 2 << 20 // plaintext
)

// restoreFetchers is how many fetch workers a restore runs for Config.Fetches: each
// keeps a batch of up to fetchBatchChunks chunks in flight.
func restoreFetchers(fetches int) int { return max(2, fetches/2) }

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
			err = pwriteFull(j.rf.fd, data, j.off)
		}
		if err != nil {
			for _, left := range batch[i:] {
				left.rf.close()
			}
			return fmt.Errorf("%s: %w", filepath.Join(r.target, j.rf.path), err)
		}
		r.bytes.Add(int64(len(data)))
		if j.rf.remaining.Add(-1) == 0 {
			if err := r.finishFile(j.rf); err != nil {
				for _, left := range batch[i+1:] {
					left.rf.close()
				}
				return err
			}
		}
	}
	return nil
}

// finishFile sets rf's metadata on its handle (what its creation did not set already)
// and closes it.
func (r *restorer) finishFile(rf *restoreFile) error {
	var err error
	rf.closeOnce.Do(func() {
		err = r.setFileMeta(rf)
		if cerr := unix.Close(rf.fd); err == nil && cerr != nil {
			err = r.pathErr("close", rf.path, cerr)
		}
	})
	return err
}

// createMode returns the mode to create regular file n with, and whether its owner and
// its mode must still be set once its content is written. A file is created with its
// final permission bits when nothing else about it is to change: no ownership to set
// (as root, the tree's owner and group are the restore's own, and no set-group-ID
// directory hands a new file another group) and no setuid, setgid or sticky bit (those
// are set after the content and the owner, as chown clears them). Then the umask alone
// decides whether a chmod is still needed. Otherwise it is created 0600 and both are
// set afterwards. This spares two of the system calls of every small file.
func (r *restorer) createMode(n *tree.Node) (mode uint32, chown, chmod bool) {
	chown = r.root && (int(n.UID) != r.euid || int(n.GID) != r.egid || r.topSetgid)
	perm := unixMode(n.FileMode())
	if chown || perm&^0o777 != 0 || r.umask < 0 {
		return 0o600, chown, true
	}
	return perm, false, perm&uint32(r.umask) != 0
}

// setFileMeta applies what createMode left to set (ownership, mode) and the
// modification time to restored file rf, on its handle.
func (r *restorer) setFileMeta(rf *restoreFile) error {
	n := rf.node
	if rf.chown {
		if err := unix.Fchown(rf.fd, int(n.UID), int(n.GID)); err != nil {
			return r.pathErr("chown", rf.path, err)
		}
	}
	// NB: after chown, which clears setuid/setgid bits.
	if rf.chmod {
		if err := unix.Fchmod(rf.fd, unixMode(n.FileMode())); err != nil {
			return r.pathErr("chmod", rf.path, err)
		}
	}
	if err := futimens(rf.fd, unix.NsecToTimespec(n.ModTime)); err != nil {
		return r.pathErr("set times of", rf.path, err)
	}
	return nil
}
