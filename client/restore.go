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
	g, gctx := errgroup.WithContext(ctx)
	jobs := make(chan chunkJob, 2*a.cfg.Fetches)
	for range a.cfg.Fetches {
		g.Go(func() error { return r.fetchLoop(gctx, jobs) })
	}
	g.Go(func() error {
		defer close(jobs)
		return r.restoreTree(gctx, snap.Tree, target, "", jobs)
	})
	err = g.Wait()
	r.trees.wait()
	if err == nil {
		// Directory metadata last, deepest first, so that children's creation does not
		// disturb modification times and read-only directories do not block writes.
		for i := len(r.dirList) - 1; i >= 0; i-- {
			d := r.dirList[i]
			if err = r.setMeta(d.path, &d.node); err != nil {
				break
			}
		}
	}
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

	// Used by the tree walker goroutine only.
	links   map[inodeKey]string
	dirList []restoredDir
}

type restoredDir struct {
	path string
	node tree.Node
}

// restoreFile is one file being written by fetch workers; the worker that writes its
// last chunk closes it and sets its metadata.
type restoreFile struct {
	f         *os.File
	path      string
	node      tree.Node
	remaining atomic.Int64
	closeOnce sync.Once
}

type chunkJob struct {
	rf  *restoreFile
	off int64
	ext tree.Extent
}

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

func (r *restorer) restoreTree(ctx context.Context, id chunk.ID, dir, snapDir string, jobs chan<- chunkJob) error {
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
		if err := r.restoreNode(ctx, n, p, sp, jobs); err != nil {
			return err
		}
	}
	return nil
}

func (r *restorer) restoreNode(ctx context.Context, n *tree.Node, p, sp string, jobs chan<- chunkJob) error {
	cur := sp
	r.current.Store(&cur)
	switch n.Type {
	case tree.TypeDir:
		if err := os.Mkdir(p, 0o700); err != nil {
			return err
		}
		r.dirs.Add(1)
		r.dirList = append(r.dirList, restoredDir{path: p, node: *n})
		return r.restoreTree(ctx, *n.Subtree, p, sp, jobs)
	case tree.TypeFile:
		return r.restoreFile(ctx, n, p, jobs)
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

func (r *restorer) restoreFile(ctx context.Context, n *tree.Node, p string, jobs chan<- chunkJob) error {
	r.files.Add(1)
	if n.Links > 1 {
		key := inodeKey{n.DeviceID, n.Inode}
		if first, ok := r.links[key]; ok {
			return os.Link(first, p)
		}
		r.links[key] = p
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	if err := f.Truncate(n.Size); err != nil { // holes stay sparse
		f.Close()
		return err
	}
	rf := &restoreFile{f: f, path: p, node: *n}
	var data int64
	for _, e := range n.Content {
		if !e.Hole {
			data++
		}
	}
	r.bytes.Add(n.Size - dataBytes(n))
	if data == 0 {
		return r.finishFile(rf)
	}
	rf.remaining.Store(data)
	off := int64(0)
	for _, e := range n.Content {
		if !e.Hole {
			select {
			case jobs <- chunkJob{rf: rf, off: off, ext: e}:
			case <-ctx.Done():
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

func (r *restorer) fetchLoop(ctx context.Context, jobs <-chan chunkJob) error {
	for {
		var j chunkJob
		select {
		case v, ok := <-jobs:
			if !ok {
				return nil
			}
			j = v
		case <-ctx.Done():
			// Close files whose remaining chunks will never come.
			for v := range jobs {
				v.rf.closeOnce.Do(func() { v.rf.f.Close() })
			}
			return ctx.Err()
		}
		data, err := r.chunks.get(ctx, j.ext.ID, func() ([]byte, error) { return r.a.fetchChunk(ctx, j.ext) })
		if err == nil && len(data) != int(j.ext.Len) {
			err = fmt.Errorf("client: chunk %s: %d bytes, the tree says %d", j.ext.ID.Str(), len(data), j.ext.Len)
		}
		if err == nil {
			_, err = j.rf.f.WriteAt(data, j.off)
		}
		if err != nil {
			j.rf.closeOnce.Do(func() { j.rf.f.Close() })
			return fmt.Errorf("%s: %w", j.rf.path, err)
		}
		r.bytes.Add(int64(len(data)))
		if j.rf.remaining.Add(-1) == 0 {
			if err := r.finishFile(j.rf); err != nil {
				return err
			}
		}
	}
}

func (r *restorer) finishFile(rf *restoreFile) error {
	var err error
	rf.closeOnce.Do(func() { err = rf.f.Close() })
	if err != nil {
		return err
	}
	return r.setMeta(rf.path, &rf.node)
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
