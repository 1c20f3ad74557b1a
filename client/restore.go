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

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/client/snapshot"
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
// log line.
//
// Nothing is ever written outside the target: everything is created relative to an open
// handle of its directory (openat, mkdirat, symlinkat, linkat, mknodat), never by path;
// a directory is opened with O_NOFOLLOW and checked to be the one the restore created
// when it is opened again; metadata is set on open handles or without following
// symlinks; and no symlink, whether restored or put there by another process, is ever
// followed. A directory replaced while the restore runs stops it with an error. A tree
// with an entry name that could escape the target is refused (tree.ErrInvalid), and so
// is a selection that expands to more than Config.MaxEntries entries
// (ErrTooManyEntries, before the target is created). Any error stops the restore and is
// returned; what was written until then stays.
//
// Trees come from this host's local tree pack of snap's backup set when there is one
// (Config.CacheDir; read only, each tree verified under its ID), else from the cluster.
func (a *Agent) Restore(ctx context.Context, snap meta.Snapshot, opts RestoreOptions) (RestoreResult, error) {
	if err := a.check(); err != nil {
		return RestoreResult{}, err
	}
	a, release := a.withTreeCache(snap)
	defer release()
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
	r := &restorer{a: a, target: target, includes: includes, links: make(map[inodeKey]linkName), root: os.Geteuid() == 0,
		euid: os.Geteuid(), egid: os.Getegid(), umask: processUmask(),
		trees: a.trees.Prefetch(a.cfg.Fetches / 2), chunks: newChunkCache(restoreCacheBytes)}
	var sel func(string) (bool, bool)
	if includes != nil {
		sel = r.selected
	}
	if r.x, err = a.measure(ctx, snap.Tree, "", sel); err != nil {
		return RestoreResult{}, fmt.Errorf("client: restore snapshot %s: %w", snap.ID.Str(), err)
	}
	if err := prepareTarget(target); err != nil {
		return RestoreResult{}, err
	}
	top, err := openTarget(target)
	if err != nil {
		return RestoreResult{}, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(top.fd, &st); err != nil {
		top.release()
		return RestoreResult{}, fmt.Errorf("client: restore: target: %w", &fs.PathError{Op: "stat", Path: target, Err: err})
	}
	r.topSetgid = st.Mode&unix.S_ISGID != 0
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
	err = r.run(ctx, snap.Tree, top)
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

// openTarget opens the restore's target directory, not following a symlink.
func openTarget(target string) (*dirHandle, error) {
	fd, id, err := openDirAt(unix.AT_FDCWD, target)
	if err != nil {
		return nil, fmt.Errorf("client: restore: open target: %w", &fs.PathError{Op: "open", Path: target, Err: err})
	}
	d := &dirHandle{fd: fd, id: id}
	d.refs.Store(1)
	return d, nil
}

// restoreCacheBytes bounds the plaintext chunks a restore keeps for reuse (see
// chunkCache): bundles of small files are read once for the files they hold, which
// follow each other in the walk, so a few MiB serve them; repeated content further
// apart is read again.
const restoreCacheBytes = 16 << 20

type restorer struct {
	a        *Agent
	target   string // absolute; for messages (everything is created relative to handles)
	includes []string
	root     bool // running as root: restore ownership and device nodes
	// euid, egid and umask are the process's (umask -1: unknown); topSetgid says the
	// target directory is set-group-ID (its new subdirectories and files take its group).
	// They decide what a new file's creation sets already (createMode).
	euid, egid, umask int
	topSetgid         bool
	x                 *expansion // the selection's trees, measured; those it kept are not loaded again

	files, dirs, bytes atomic.Int64
	current            atomic.Pointer[string]

	trees  *snapshot.Prefetch
	chunks *chunkCache

	// Used by the tree walker goroutine only (run reads them after the walk).
	links    map[inodeKey]linkName // first restored name of each multiply linked inode
	linkList []restoredLink
	dirList  []restoredDir
}

// dirHandle is an open directory of the restore, shared by the walker and the file
// tasks queued in it: each holds a reference, and the last release closes it.
type dirHandle struct {
	fd   int
	rel  string   // below the target ("" for the target itself)
	id   inodeKey // device and inode, to recognise the directory when it is opened again
	refs atomic.Int32
}

func (d *dirHandle) acquire() { d.refs.Add(1) }

func (d *dirHandle) release() {
	if d.refs.Add(-1) == 0 {
		_ = unix.Close(d.fd) // read-only directory: nothing to flush
	}
}

// restoredDir is a directory whose metadata is applied once the walk is done: only what
// setMetaFD needs, as a restore keeps one for every directory it creates.
type restoredDir struct {
	rel      string
	id       inodeKey
	mode     uint32
	uid, gid uint32
	mtime    int64
}

// linkName is a name in a directory the restore created.
type linkName struct {
	dir  string // below the target
	id   inodeKey
	name string
}

// restoredLink is a further name (to) of an inode whose first name (first) is restored
// as a file; it is linked once every file is complete.
type restoredLink struct {
	first, to linkName
}

// fileTask is one regular file for a file worker to create.
type fileTask struct {
	dir  *dirHandle // holds a reference for the task
	name string
	rel  string
	node *tree.Node // points into a decoded tree, which is never modified
}

// restoreFile is one file being written by fetch workers; the worker that writes its
// last chunk sets its metadata and closes it.
type restoreFile struct {
	fd        int    // valid until closed (closeOnce)
	path      string // below the target
	node      *tree.Node
	chown     bool // ownership and mode still to set (see createMode)
	chmod     bool
	remaining atomic.Int64
	closeOnce sync.Once
}

// close closes rf's handle unless it is closed already (a restore that failed).
func (rf *restoreFile) close() { rf.closeOnce.Do(func() { _ = unix.Close(rf.fd) }) }

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
// cache and the fetches in flight; open directories by the depth of the walk and the
// files queued. The first error cancels everything and is returned, with every file and
// directory the restore opened closed. run releases top.
func (r *restorer) run(ctx context.Context, root chunk.ID, top *dirHandle) error {
	defer top.release()
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
		return r.restoreTree(gctx, root, top, "", files)
	})
	err := g.Wait()
	r.trees.Wait()
	// Every goroutine has returned and files and jobs are closed; files still queued
	// after a failure will never be created, chunks never written: release and close.
	for ft := range files {
		ft.dir.release()
	}
	for j := range jobs {
		j.rf.close()
	}
	if err != nil {
		return err
	}
	// Directories are opened again from the target, each checked to be the one the
	// restore created; two chains of open directories follow the walk order.
	from, to := r.newDirChain(top), r.newDirChain(top)
	defer from.close()
	defer to.close()
	for _, l := range r.linkList {
		fd1, err := from.open(l.first.dir, l.first.id)
		if err != nil {
			return err
		}
		fd2, err := to.open(l.to.dir, l.to.id)
		if err != nil {
			return err
		}
		if err := unix.Linkat(fd1, l.first.name, fd2, l.to.name, 0); err != nil {
			return &fs.PathError{Op: "link", Path: filepath.Join(r.target, l.to.dir, l.to.name), Err: err}
		}
	}
	// Directory metadata last, deepest first, so that children's creation does not
	// disturb modification times and read-only directories do not block writes.
	for i := len(r.dirList) - 1; i >= 0; i-- {
		d := &r.dirList[i]
		fd, err := to.open(d.rel, d.id)
		if err != nil {
			return err
		}
		n := tree.Node{Mode: d.mode, UID: d.uid, GID: d.gid, ModTime: d.mtime}
		if err := r.setMetaFD(fd, &n, d.rel); err != nil {
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

// restoreTree restores the selected entries of tree id, at snapshot path snapDir, into
// dir.
func (r *restorer) restoreTree(ctx context.Context, id chunk.ID, dir *dirHandle, snapDir string, files chan<- fileTask) error {
	t := r.x.tree(id)
	if t == nil {
		var err error
		if t, err = r.trees.Get(ctx, id); err != nil {
			return err
		}
	}
	for i := range t.Nodes {
		if n := &t.Nodes[i]; n.Type == tree.TypeDir && n.Subtree != nil && r.x.tree(*n.Subtree) == nil {
			if wanted, along := r.selected(snapDir + "/" + n.Name); wanted || along {
				r.trees.Start(ctx, *n.Subtree)
			}
		}
	}
	for i := range t.Nodes {
		n := &t.Nodes[i]
		// NB: tree.Decode already refused such names; checked again because a name
		// given to the *at calls must never leave its directory.
		if err := tree.ValidName(n.Name); err != nil {
			return fmt.Errorf("tree %s: %w", id.Str(), err)
		}
		sp := snapDir + "/" + n.Name
		wanted, along := r.selected(sp)
		if !wanted && !(along && n.Type == tree.TypeDir) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := r.restoreNode(ctx, n, dir, sp, files); err != nil {
			return err
		}
	}
	return nil
}

// restoreNode creates node n (snapshot path sp) in dir.
func (r *restorer) restoreNode(ctx context.Context, n *tree.Node, dir *dirHandle, sp string, files chan<- fileTask) error {
	cur := sp
	r.current.Store(&cur)
	rel := joinRel(dir.rel, n.Name)
	switch n.Type {
	case tree.TypeDir:
		if err := unix.Mkdirat(dir.fd, n.Name, 0o700); err != nil {
			return r.pathErr("mkdir", rel, err)
		}
		fd, id, err := openDirAt(dir.fd, n.Name)
		if err != nil {
			return r.replaced(rel, err)
		}
		child := &dirHandle{fd: fd, rel: rel, id: id}
		child.refs.Store(1)
		r.dirs.Add(1)
		r.dirList = append(r.dirList, restoredDir{rel: rel, id: id, mode: n.Mode, uid: n.UID, gid: n.GID, mtime: n.ModTime})
		err = r.restoreTree(ctx, *n.Subtree, child, sp, files)
		child.release()
		return err
	case tree.TypeFile:
		return r.restoreFile(ctx, n, dir, rel, files)
	case tree.TypeSymlink:
		if err := unix.Symlinkat(n.LinkTarget, dir.fd, n.Name); err != nil {
			return r.pathErr("symlink", rel, err)
		}
		return r.setMetaAt(dir.fd, n, rel)
	case tree.TypeFIFO:
		if err := unix.Mkfifoat(dir.fd, n.Name, 0o600); err != nil {
			return r.pathErr("mkfifo", rel, err)
		}
		return r.setMetaAt(dir.fd, n, rel)
	case tree.TypeDev, tree.TypeCharDev:
		if !r.root {
			r.a.cfg.Logger.Warn("restore: device node skipped (needs root)", "path", sp)
			return nil
		}
		mode := uint32(unix.S_IFBLK)
		if n.Type == tree.TypeCharDev {
			mode = unix.S_IFCHR
		}
		if err := unix.Mknodat(dir.fd, n.Name, mode|0o600, int(n.Rdev)); err != nil {
			return r.pathErr("mknod", rel, err)
		}
		return r.setMetaAt(dir.fd, n, rel)
	case tree.TypeSocket:
		r.a.cfg.Logger.Info("restore: socket skipped", "path", sp)
		return nil
	}
	return fmt.Errorf("%s: unknown node type %q", sp, n.Type)
}

// restoreFile queues regular file n (rel below the target) for the file workers; a
// further name of an inode restored already is remembered for linking once every file
// is complete.
func (r *restorer) restoreFile(ctx context.Context, n *tree.Node, dir *dirHandle, rel string, files chan<- fileTask) error {
	r.files.Add(1)
	if n.Links > 1 {
		key := inodeKey{n.DeviceID, n.Inode}
		name := linkName{dir: dir.rel, id: dir.id, name: n.Name}
		if first, ok := r.links[key]; ok {
			r.linkList = append(r.linkList, restoredLink{first: first, to: name})
			return nil
		}
		r.links[key] = name
	}
	dir.acquire()
	select {
	case files <- fileTask{dir: dir, name: n.Name, rel: rel, node: n}:
		return nil
	case <-ctx.Done():
		dir.release()
		return ctx.Err()
	}
}

// setMetaFD applies ownership (root only), mode and modification time to the open file
// or directory fd (rel below the target, for messages).
func (r *restorer) setMetaFD(fd int, n *tree.Node, rel string) error {
	if r.root {
		if err := unix.Fchown(fd, int(n.UID), int(n.GID)); err != nil {
			return r.pathErr("chown", rel, err)
		}
	}
	// NB: after chown, which clears setuid/setgid bits.
	if err := unix.Fchmod(fd, unixMode(n.FileMode())); err != nil {
		return r.pathErr("chmod", rel, err)
	}
	if err := futimens(fd, unix.NsecToTimespec(n.ModTime)); err != nil {
		return r.pathErr("set times of", rel, err)
	}
	return nil
}

// setMetaAt applies ownership (root only), mode (not for symlinks) and modification
// time to entry n.Name of directory dirfd, never following a symlink.
func (r *restorer) setMetaAt(dirfd int, n *tree.Node, rel string) error {
	if r.root {
		if err := unix.Fchownat(dirfd, n.Name, int(n.UID), int(n.GID), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return r.pathErr("chown", rel, err)
		}
	}
	if n.Type != tree.TypeSymlink {
		if err := chmodNoFollow(dirfd, n.Name, unixMode(n.FileMode())); err != nil {
			return r.pathErr("chmod", rel, err)
		}
	}
	ts := unix.NsecToTimespec(n.ModTime)
	if err := unix.UtimesNanoAt(dirfd, n.Name, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return r.pathErr("set times of", rel, err)
	}
	return nil
}

// pathErr describes a failed operation on rel, below the target.
func (r *restorer) pathErr(op, rel string, err error) error {
	return &fs.PathError{Op: op, Path: filepath.Join(r.target, rel), Err: err}
}

// replaced describes a directory the restore created that it could not open again as
// the same directory: something replaced it while the restore ran.
func (r *restorer) replaced(rel string, err error) error {
	return fmt.Errorf("client: restore: directory %s was replaced while the restore ran: %w", filepath.Join(r.target, rel), err)
}
