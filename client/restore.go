package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/client/tree"
	"github.com/cofferhq/coffer/meta"
)

// RestoreOptions says where and what to restore.
type RestoreOptions struct {
	// Target is the directory to restore into: it must not exist (it is created) or be
	// an empty directory. Nothing is ever written outside it.
	Target string
	// Include lists snapshot paths (as List shows them) to restore, each with everything
	// below it; their parent directories are restored too. Empty means everything.
	Include  []string
	Progress func(Progress) // optional; called from one goroutine, never concurrently
}

// RestoreResult summarises a restore.
type RestoreResult struct {
	Files, Dirs, Bytes int64
	DurationS          float64
}

// Restore writes snapshot snap (or its Include subtrees) below opts.Target: content
// (every chunk verified against its ID; holes left sparse), directories, symlinks,
// hardlinks (re-linked within the restore), FIFOs and, when running as root, device
// nodes and ownership; then modes (with setuid, setgid and sticky bits) and modification
// times, directories last. Sockets, and device nodes when not root, are skipped with a
// log line. A tree with an entry name that could escape the target is refused
// (tree.ErrInvalid). Any error stops the restore and is returned; what was written
// until then stays.
func (a *Agent) Restore(ctx context.Context, snap meta.Snapshot, opts RestoreOptions) (RestoreResult, error) {
	if err := a.check(); err != nil {
		return RestoreResult{}, err
	}
	start := a.cfg.Now()
	if opts.Target == "" {
		return RestoreResult{}, fmt.Errorf("%w: restore: no target directory", ErrInvalid)
	}
	target, err := filepath.Abs(opts.Target)
	if err != nil {
		return RestoreResult{}, fmt.Errorf("%w: restore: target %s: %v", ErrInvalid, opts.Target, err)
	}
	var includes []string
	for _, inc := range opts.Include {
		p := cleanPath(inc)
		if p == "/" {
			includes = nil
			break
		}
		if _, err := a.lookup(ctx, snap, p); err != nil {
			return RestoreResult{}, fmt.Errorf("client: restore: include %q: %w", inc, err)
		}
		includes = append(includes, p)
	}
	if len(opts.Include) > 0 && includes == nil && cleanPath(opts.Include[0]) != "/" {
		return RestoreResult{}, fmt.Errorf("%w: restore: empty include list", ErrInvalid)
	}
	if err := prepareTarget(target); err != nil {
		return RestoreResult{}, err
	}

	r := &restorer{a: a, includes: includes, links: make(map[inodeKey]string), root: os.Geteuid() == 0,
		trees: newTreePrefetch(a, a.cfg.Fetches/2), chunks: newChunkCache(restoreCacheBytes)}
	stop := func() {}
	if opts.Progress != nil {
		stop = runProgress(opts.Progress, func() Progress {
			p := Progress{Files: r.files.Load(), Dirs: r.dirs.Load(), Bytes: r.bytes.Load()}
			if c := r.current.Load(); c != nil {
				p.Current = *c
			}
			return p
		})
	}
	err = r.run(ctx, snap.Tree, target)
	stop()
	if err != nil {
		return RestoreResult{}, fmt.Errorf("client: restore snapshot %s to %s: %w", snap.ID.Str(), target, err)
	}
	return RestoreResult{
		Files:     r.files.Load(),
		Dirs:      r.dirs.Load(),
		Bytes:     r.bytes.Load(),
		DurationS: a.cfg.Now().Sub(start).Seconds(),
	}, nil
}

// prepareTarget creates target, or checks that it is an empty directory.
func prepareTarget(target string) error {
	fi, err := os.Lstat(target)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(target, 0o700); err != nil {
			return fmt.Errorf("client: restore: create target: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("client: restore: target: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: restore: target %s exists and is not a directory", ErrInvalid, target)
	}
	f, err := os.Open(target)
	if err != nil {
		return fmt.Errorf("client: restore: target: %w", err)
	}
	defer f.Close()
	if names, err := f.Readdirnames(1); len(names) > 0 {
		return fmt.Errorf("%w: restore: target %s is not empty", ErrInvalid, target)
	} else if err != nil && err != io.EOF {
		return fmt.Errorf("client: restore: target: %w", err)
	}
	return nil
}

// restoreCacheBytes bounds the plaintext chunks a restore keeps for reuse (see
// chunkCache).
const restoreCacheBytes = 64 << 20

type restorer struct {
	a        *Agent
	includes []string
	root     bool // running as root: restore ownership and device nodes

	files, dirs, bytes atomic.Int64
	current            atomic.Pointer[string]

	trees  *treePrefetch
	chunks *chunkCache

	// Used by the tree walker goroutine only (run reads them after the walk).
	links    map[inodeKey]string // first restored name of each multiply linked inode
	linkList []restoredLink
	dirList  []restoredDir
}

type restoredDir struct {
	path string
	node tree.Node
}

// restoredLink is a further name of an inode whose first name is restored as a file;
// it is linked once every file is complete.
type restoredLink struct {
	first, path string
}

// fileTask is one regular file for a file worker to create.
type fileTask struct {
	path string
	node *tree.Node // points into a decoded tree, which is never modified
}

// restoreFile is one file being written by fetch workers; the worker that writes its
// last chunk closes it and sets its metadata.
type restoreFile struct {
	f         *os.File
	path      string
	node      *tree.Node
	remaining atomic.Int64
	closeOnce sync.Once
}

type chunkJob struct {
	rf   *restoreFile
	off  int64       // in the file
	ext  tree.Extent // a data extent
	skip uint32      // where the extent's bytes begin in the chunk (tree.Node.Offset for a file's first extent)
}

// run restores tree root into target with three kinds of goroutine: the walker creates
// directories, symlinks and special files in tree order (a directory before anything
// in it) and hands regular files to the file workers; these create each file and hand
// its chunks to the fetch workers; the fetch worker that writes a file's last chunk
// closes it and applies its metadata, so a file's mode and time are set after all its
// content. Once every file is complete, further names of hardlinked files are linked,
// then directory metadata is applied, deepest first. Open files are bounded by the
// channels (files being created, chunks queued and in flight); plaintext by the chunk
// cache and the fetches in flight. The first error cancels everything and is returned,
// with every file the restore opened closed.
func (r *restorer) run(ctx context.Context, root chunk.ID, target string) error {
	a := r.a
	g, gctx := errgroup.WithContext(ctx)
	creators := restoreFileWorkers(a.cfg.Workers)
	files := make(chan fileTask, 2*creators)
	fetchers := restoreFetchers(a.cfg.Fetches)
	jobs := make(chan chunkJob, 2*fetchBatchChunks)
	for range fetchers {
		g.Go(func() error { return r.fetchLoop(gctx, jobs) })
	}
	var creating atomic.Int64
	creating.Store(int64(creators))
	for range creators {
		g.Go(func() error {
			// The last file worker to stop closes jobs: no chunk can be queued after it.
			defer func() {
				if creating.Add(-1) == 0 {
					close(jobs)
				}
			}()
			return r.createLoop(gctx, files, jobs)
		})
	}
	g.Go(func() error {
		defer close(files)
		return r.restoreTree(gctx, root, target, "", files)
	})
	err := g.Wait()
	r.trees.wait()
	// Every goroutine has returned and jobs is closed; chunks still queued after a
	// failure will never be written: close their files.
	for j := range jobs {
		j.rf.closeOnce.Do(func() { j.rf.f.Close() })
	}
	if err != nil {
		return err
	}
	for _, l := range r.linkList {
		if err := os.Link(l.first, l.path); err != nil {
			return err
		}
	}
	// Directory metadata last, deepest first, so that children's creation does not
	// disturb modification times and read-only directories do not block writes.
	for i := len(r.dirList) - 1; i >= 0; i-- {
		d := r.dirList[i]
		if err := r.setMeta(d.path, &d.node); err != nil {
			return err
		}
	}
	return nil
}

// restoreFileWorkers is how many goroutines create files for a restore with the given
// number of CPU workers: file creation is system-call bound (directory locks, inode
// allocation, the journal), so a few more than the cores keep the cores busy.
func restoreFileWorkers(workers int) int { return max(4, 2*workers) }

// selected reports whether snapshot path p is restored: wanted says it is included
// with everything below; along says it is a directory on the way to an include.
func (r *restorer) selected(p string) (wanted, along bool) {
	if r.includes == nil {
		return true, false
	}
	for _, inc := range r.includes {
		if p == inc || strings.HasPrefix(p, inc+"/") {
			return true, false
		}
		if strings.HasPrefix(inc, p+"/") {
			along = true
		}
	}
	return false, along
}

func (r *restorer) restoreTree(ctx context.Context, id chunk.ID, dir, snapDir string, files chan<- fileTask) error {
	t, err := r.trees.get(ctx, id)
	if err != nil {
		return err
	}
	for i := range t.Nodes {
		if n := &t.Nodes[i]; n.Type == tree.TypeDir && n.Subtree != nil {
			if wanted, along := r.selected(snapDir + "/" + n.Name); wanted || along {
				r.trees.start(ctx, *n.Subtree)
			}
		}
	}
	for i := range t.Nodes {
		n := &t.Nodes[i]
		// NB: tree.Decode already refused such names; checked again because a path
		// built from them must never leave the target.
		if err := tree.ValidName(n.Name); err != nil {
			return fmt.Errorf("tree %s: %w", id.Str(), err)
		}
		sp := snapDir + "/" + n.Name
		wanted, along := r.selected(sp)
		if !wanted && !(along && n.Type == tree.TypeDir) {
			continue
		}
		p := filepath.Join(dir, n.Name)
		if filepath.Dir(p) != dir {
			return fmt.Errorf("%w: entry %q escapes %s", tree.ErrInvalid, n.Name, dir)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := r.restoreNode(ctx, n, p, sp, files); err != nil {
			return err
		}
	}
	return nil
}

func (r *restorer) restoreNode(ctx context.Context, n *tree.Node, p, sp string, files chan<- fileTask) error {
	cur := sp
	r.current.Store(&cur)
	switch n.Type {
	case tree.TypeDir:
		if err := os.Mkdir(p, 0o700); err != nil {
			return err
		}
		r.dirs.Add(1)
		r.dirList = append(r.dirList, restoredDir{path: p, node: *n})
		return r.restoreTree(ctx, *n.Subtree, p, sp, files)
	case tree.TypeFile:
		return r.restoreFile(ctx, n, p, files)
	case tree.TypeSymlink:
		if err := os.Symlink(n.LinkTarget, p); err != nil {
			return err
		}
		return r.setMeta(p, n)
	case tree.TypeFIFO:
		if err := unix.Mkfifo(p, 0o600); err != nil {
			return fmt.Errorf("mkfifo %s: %w", p, err)
		}
		return r.setMeta(p, n)
	case tree.TypeDev, tree.TypeCharDev:
		if !r.root {
			r.a.cfg.Logger.Warn("restore: device node skipped (needs root)", "path", sp)
			return nil
		}
		mode := uint32(unix.S_IFBLK)
		if n.Type == tree.TypeCharDev {
			mode = unix.S_IFCHR
		}
		if err := unix.Mknod(p, mode|0o600, int(n.Rdev)); err != nil {
			return fmt.Errorf("mknod %s: %w", p, err)
		}
		return r.setMeta(p, n)
	case tree.TypeSocket:
		r.a.cfg.Logger.Info("restore: socket skipped", "path", sp)
		return nil
	}
	return fmt.Errorf("%s: unknown node type %q", sp, n.Type)
}

// restoreFile queues regular file n for the file workers; a further name of an inode
// restored already is remembered for linking once every file is complete.
func (r *restorer) restoreFile(ctx context.Context, n *tree.Node, p string, files chan<- fileTask) error {
	r.files.Add(1)
	if n.Links > 1 {
		key := inodeKey{n.DeviceID, n.Inode}
		if first, ok := r.links[key]; ok {
			r.linkList = append(r.linkList, restoredLink{first: first, path: p})
			return nil
		}
		r.links[key] = p
	}
	select {
	case files <- fileTask{path: p, node: n}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

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
	f, err := os.OpenFile(ft.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
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
		if err := f.Truncate(n.Size); err != nil {
			f.Close()
			return err
		}
	}
	rf := &restoreFile{f: f, path: ft.path, node: n}
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
			return fmt.Errorf("%s: %w", j.rf.path, err)
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

func (r *restorer) finishFile(rf *restoreFile) error {
	var err error
	rf.closeOnce.Do(func() { err = rf.f.Close() })
	if err != nil {
		return err
	}
	return r.setMeta(rf.path, rf.node)
}

// setMeta applies ownership (root only), mode and modification time to p, without
// following symlinks.
func (r *restorer) setMeta(p string, n *tree.Node) error {
	if r.root {
		if err := os.Lchown(p, int(n.UID), int(n.GID)); err != nil {
			return err
		}
	}
	if n.Type != tree.TypeSymlink {
		// NB: after chown, which clears setuid/setgid bits.
		if err := os.Chmod(p, n.FileMode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
			return err
		}
	}
	ts := unix.NsecToTimespec(n.ModTime)
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times of %s: %w", p, err)
	}
	return nil
}
