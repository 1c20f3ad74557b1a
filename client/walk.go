package client

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/client/tree"
	"github.com/cofferhq/coffer/client/upload"
)

// The walk of one backup: walkRoots and walkDir list each directory (several at once, up
// to walkParallelism), entry records every entry in its directory's slot and sends the
// files to be read to the workers (doFile), and release completes a directory when its
// last pending entry is done: it encodes the directory's tree, queues it for upload and
// fills the directory's slot in its parent, up to the root tree.

type inodeKey struct{ dev, ino uint64 }

// linkGroup is one hardlinked inode: the first link met is read, the others wait for its
// content.
type linkGroup struct {
	mu      sync.Mutex
	done    bool
	err     error
	content []tree.Extent
	size    int64
	offset  uint32
	waiters []fileJob
}

// dirState is one directory being backed up. nodes is allocated once, before any job
// is dispatched; each slot is written by the walker, then by at most one worker or child.
type dirState struct {
	path    string // filesystem path
	nodes   []tree.Node
	skip    []bool
	prev    *tree.Tree // the parent snapshot's listing of this directory, or nil
	prevID  chunk.ID   // prev's tree chunk ID (zero with prev nil)
	pending atomic.Int64
	// bundle and bundleBytes are the small files queued for the next bundle job (see
	// bundle.go); only d's walker touches them.
	bundle      []bundleMember
	bundleBytes int64
	parent      *dirState
	idx         int // slot in parent
}

type slot struct {
	d   *dirState
	idx int
}

// fileJob is one file to read (slot, path, prev, link), or with bundle set, the small
// files of one bundle of directory d (slot.idx unused).
type fileJob struct {
	slot
	path   string
	prev   *tree.Node
	link   *linkGroup
	bundle []bundleMember
}

func (b *backup) skip(path string, err error) {
	b.a.cfg.Logger.Warn("skipped", "path", path, "err", err)
	b.mu.Lock()
	b.skipped = append(b.skipped, Skipped{Path: path, Err: err.Error()})
	b.mu.Unlock()
}

// run walks and uploads everything and returns the root tree ID once every chunk is
// stored. prevRoot is the parent snapshot's root tree, with ID prevRootID, or nil.
func (b *backup) run(ctx context.Context, roots []root, prevRoot *tree.Tree, prevRootID chunk.ID) (chunk.ID, upload.Stats, error) {
	a := b.a
	// NB: the uploader outlives the errgroup (whose context ends when Wait returns); it is
	// cancelled explicitly when the walk fails.
	upCtx, upCancel := context.WithCancel(ctx)
	defer upCancel()
	g, gctx := errgroup.WithContext(ctx)
	b.up = upload.New(upCtx, upload.Config{
		Store:    a.cfg.Chunks,
		Sealer:   b.sealer,
		MaxChunk: a.chunker.Max,
		Workers:  a.cfg.Workers,
	})
	b.upPtr.Store(b.up)
	jobs := make(chan fileJob, 4*a.cfg.Workers)
	for range a.cfg.Workers {
		g.Go(func() error {
			r, err := b.newReader()
			if err != nil {
				return err
			}
			for {
				select {
				case j, ok := <-jobs:
					if !ok {
						return nil
					}
					if err := b.doFile(gctx, r, j); err != nil {
						return err
					}
				case <-gctx.Done():
					return gctx.Err()
				}
			}
		})
	}
	g.Go(func() error {
		defer close(jobs)
		w, wctx := errgroup.WithContext(gctx)
		b.walkers, b.walkSem = w, make(chan struct{}, walkParallelism(a.cfg.Workers)-1)
		w.Go(func() error { return b.walkRoots(wctx, roots, prevRoot, prevRootID, jobs) })
		return w.Wait()
	})
	err := g.Wait()
	if err != nil {
		upCancel()
	}
	st, upErr := b.up.Close()
	if err == nil {
		err = upErr
	}
	if err != nil {
		return chunk.ID{}, st, fmt.Errorf("client: backup: %w", err)
	}
	b.mu.Lock()
	id := b.rootID
	b.mu.Unlock()
	if id.IsZero() {
		return chunk.ID{}, st, errors.New("client: backup: internal error: root tree not finished")
	}
	return id, st, nil
}

// walkParallelism is how many goroutines list directories at once: as many as there
// are workers (listing is CPU-bound on a warm cache), and at least 2 so that a cold
// cache's disk waits overlap.
func walkParallelism(workers int) int { return max(2, workers) }

func (b *backup) walkRoots(ctx context.Context, roots []root, prevRoot *tree.Tree, prevRootID chunk.ID, jobs chan<- fileJob) error {
	if prevRoot == nil {
		prevRootID = chunk.ID{}
	}
	if len(roots) == 1 && roots[0].name == "" { // backing up "/"
		top := &dirState{path: "/", prev: prevRoot, prevID: prevRootID}
		return b.walkDir(ctx, top, jobs)
	}
	top := &dirState{
		path:   "",
		nodes:  make([]tree.Node, len(roots)),
		skip:   make([]bool, len(roots)),
		prev:   prevRoot,
		prevID: prevRootID,
	}
	top.pending.Store(1)
	for i, r := range roots {
		if err := b.entry(ctx, top, i, r.abs, r.name, r.fi, jobs); err != nil {
			return err
		}
	}
	if err := b.flushBundle(ctx, top, jobs); err != nil {
		return err
	}
	return b.release(ctx, top)
}

// walkDir lists d.path and dispatches its entries; d.nodes must be nil.
func (b *backup) walkDir(ctx context.Context, d *dirState, jobs chan<- fileJob) error {
	ents, err := statDir(d.path)
	if err != nil {
		return err // the caller skips the directory
	}
	if b.opts.Exclude != nil {
		ents = slices.DeleteFunc(ents, func(e dirEntry) bool { return b.opts.Exclude(filepath.Join(d.path, e.name)) })
	}
	b.dirs.Add(1)
	d.nodes = make([]tree.Node, len(ents))
	d.skip = make([]bool, len(ents))
	d.pending.Store(1)
	for i, e := range ents {
		p := filepath.Join(d.path, e.name)
		if e.err != nil {
			d.skip[i] = true
			b.skip(p, e.err)
			continue
		}
		if err := b.entry(ctx, d, i, p, e.name, e.fi, jobs); err != nil {
			return err
		}
	}
	if err := b.flushBundle(ctx, d, jobs); err != nil {
		return err
	}
	return b.release(ctx, d)
}

// entry records one directory entry into slot i of d and dispatches its work.
func (b *backup) entry(ctx context.Context, d *dirState, i int, path, name string, fi fs.FileInfo, jobs chan<- fileJob) error {
	n, err := nodeFromInfo(name, path, fi)
	if err != nil {
		d.skip[i] = true
		b.skip(path, err)
		return nil
	}
	d.nodes[i] = n
	var prev *tree.Node
	if d.prev != nil {
		if j, ok := slices.BinarySearchFunc(d.prev.Nodes, name, func(x tree.Node, t string) int { return strings.Compare(x.Name, t) }); ok {
			prev = &d.prev.Nodes[j]
		}
	}
	switch n.Type {
	case tree.TypeDir:
		cur := path
		b.current.Store(&cur)
		child := &dirState{path: path, parent: d, idx: i}
		d.pending.Add(1)
		select {
		case b.walkSem <- struct{}{}:
			b.walkers.Go(func() error {
				defer func() { <-b.walkSem }()
				return b.walkChild(ctx, child, prev, jobs)
			})
			return nil
		default:
			return b.walkChild(ctx, child, prev, jobs)
		}
	case tree.TypeFile:
		b.files.Add(1)
		if fi.Size() == 0 {
			b.classify(&d.nodes[i], prev)
			return nil
		}
		if !b.opts.Force && unchanged(&n, fi.Size(), prev) {
			// The parent's chunk list stands for the content; the file is not opened.
			d.nodes[i].Content, d.nodes[i].Size, d.nodes[i].Offset = prev.Content, prev.Size, prev.Offset
			b.filesUnmodified.Add(1)
			b.bytes.Add(prev.Size)
			if n.Links > 1 {
				key := inodeKey{n.DeviceID, n.Inode}
				b.linksMu.Lock()
				if _, ok := b.links[key]; !ok {
					b.links[key] = &linkGroup{done: true, content: prev.Content, size: prev.Size, offset: prev.Offset}
				}
				b.linksMu.Unlock()
			}
			return nil
		}
		if bundled(&n, fi) {
			return b.addBundled(ctx, d, i, path, fi.Size(), prev, jobs)
		}
		var link *linkGroup
		if n.Links > 1 {
			key := inodeKey{n.DeviceID, n.Inode}
			b.linksMu.Lock()
			g, ok := b.links[key]
			if !ok {
				link = &linkGroup{}
				b.links[key] = link
			}
			b.linksMu.Unlock()
			if ok {
				g.mu.Lock()
				if g.done {
					g.mu.Unlock()
					if g.err != nil {
						d.skip[i] = true
						b.skip(path, g.err)
						return nil
					}
					d.nodes[i].Content, d.nodes[i].Size, d.nodes[i].Offset = g.content, g.size, g.offset
					b.classify(&d.nodes[i], prev)
					return nil
				}
				d.pending.Add(1)
				g.waiters = append(g.waiters, fileJob{slot: slot{d, i}, path: path, prev: prev})
				g.mu.Unlock()
				return nil
			}
		}
		d.pending.Add(1)
		select {
		case jobs <- fileJob{slot: slot{d, i}, path: path, prev: prev, link: link}:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// walkChild walks the subdirectory child, whose entry in the parent snapshot is prev
// (or nil), and completes its slot in child.parent; child.parent.pending counts it
// already. A directory that cannot be listed is skipped.
func (b *backup) walkChild(ctx context.Context, child *dirState, prev *tree.Node, jobs chan<- fileJob) error {
	if prev != nil && prev.Type == tree.TypeDir && prev.Subtree != nil {
		t, err := b.trees.Load(ctx, *prev.Subtree)
		if err != nil {
			b.a.cfg.Logger.Warn("parent snapshot tree unreadable", "path", child.path, "err", err)
		} else {
			child.prev, child.prevID = t, *prev.Subtree
		}
	}
	if err := b.walkDir(ctx, child, jobs); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if child.nodes != nil { // listed, then failed: a fatal error from below
			return err
		}
		d := child.parent
		d.skip[child.idx] = true
		b.skip(child.path, err)
		return b.release(ctx, d)
	}
	return nil
}

// unchanged reports whether the file n (of size size, as listed now) has the same size,
// modification time, change time, inode and mode as the parent snapshot's entry prev,
// so that prev's chunk list can stand for its content. Device IDs are not compared: they
// change across reboots and file system snapshots.
func unchanged(n *tree.Node, size int64, prev *tree.Node) bool {
	return prev != nil && prev.Type == tree.TypeFile && n.Type == tree.TypeFile &&
		size == prev.Size && n.ModTime == prev.ModTime && n.ChangeTime == prev.ChangeTime &&
		n.Inode == prev.Inode && n.Mode == prev.Mode
}

// classify counts a file as new, changed or unmodified against the parent snapshot.
func (b *backup) classify(n *tree.Node, prev *tree.Node) {
	switch {
	case prev == nil || prev.Type != tree.TypeFile:
		b.filesNew.Add(1)
	case n.Size == prev.Size && n.Offset == prev.Offset && slices.Equal(n.Content, prev.Content):
		b.filesUnmodified.Add(1)
	default:
		b.filesChanged.Add(1)
	}
}

// doFile reads, chunks and queues one regular file, then completes its slot.
func (b *backup) doFile(ctx context.Context, r *reader, j fileJob) error {
	if j.bundle != nil {
		return b.doBundle(ctx, r, j)
	}
	cur := j.path
	b.current.Store(&cur)
	content, size, err := r.file(ctx, j.path)
	n := &j.d.nodes[j.idx]
	if err != nil {
		var fe *fatalError
		if ctx.Err() != nil || errors.As(err, &fe) {
			return err
		}
		j.d.skip[j.idx] = true
		b.skip(j.path, err)
	} else {
		n.Content, n.Size = content, size
		b.classify(n, j.prev)
	}
	if j.link != nil {
		g := j.link
		g.mu.Lock()
		g.done, g.err, g.content, g.size = true, err, content, size
		waiters := g.waiters
		g.waiters = nil
		g.mu.Unlock()
		for _, w := range waiters {
			if err != nil {
				w.d.skip[w.idx] = true
				b.skip(w.path, err)
			} else {
				wn := &w.d.nodes[w.idx]
				wn.Content, wn.Size = content, size
				b.classify(wn, w.prev)
			}
			if err := b.release(ctx, w.d); err != nil {
				return err
			}
		}
	}
	return b.release(ctx, j.d)
}

// release drops one pending count of d; the last one finishes the directory: its tree is
// encoded and queued, and its parent slot filled. A tree whose every entry equals the
// parent snapshot's listing of the directory is that listing: it keeps its chunk ID and
// is neither encoded nor uploaded (the committed parent holds it), unless Force is set.
func (b *backup) release(ctx context.Context, d *dirState) error {
	if d.pending.Add(-1) != 0 {
		return nil
	}
	t := &tree.Tree{Nodes: make([]tree.Node, 0, len(d.nodes))}
	b.mu.Lock()
	for i := range d.nodes {
		if d.skip[i] {
			continue
		}
		n := &d.nodes[i]
		t.Nodes = append(t.Nodes, *n)
		for _, e := range n.Content {
			if !e.Hole {
				b.refs[e.ID] = struct{}{}
			}
		}
		if n.Subtree != nil {
			b.refs[*n.Subtree] = struct{}{}
		}
	}
	b.mu.Unlock()
	var id chunk.ID
	if !b.opts.Force && d.prev != nil && !d.prevID.IsZero() && sameNodes(t.Nodes, d.prev.Nodes) {
		id = d.prevID
		b.mu.Lock()
		b.treeIDs = append(b.treeIDs, id)
		b.mu.Unlock()
	} else {
		var enc []byte
		var err error
		if id, enc, err = b.trees.Encode(t); err != nil {
			return &fatalError{fmt.Errorf("directory %s: %w", displayDir(d), err)}
		}
		b.mu.Lock()
		b.treeIDs = append(b.treeIDs, id)
		b.mu.Unlock()
		if err := b.up.Add(ctx, id, enc); err != nil {
			return &fatalError{err}
		}
	}
	if d.parent == nil {
		b.mu.Lock()
		b.rootID = id
		b.refs[id] = struct{}{}
		b.mu.Unlock()
		return nil
	}
	d.parent.nodes[d.idx].Subtree = &id
	return b.release(ctx, d.parent)
}

// sameNodes reports whether x and y are equal entry by entry in every field, so that
// they encode to the same tree.
func sameNodes(x, y []tree.Node) bool {
	if len(x) != len(y) {
		return false
	}
	for i := range x {
		if !sameNode(&x[i], &y[i]) {
			return false
		}
	}
	return true
}

// sameNode compares every field of tree.Node (TestSameNodeComparesEveryField checks
// that none is missed). Nil and empty Content are equal: both encode as absent.
func sameNode(m, n *tree.Node) bool {
	return m.Name == n.Name && m.Type == n.Type && m.Mode == n.Mode && m.UID == n.UID && m.GID == n.GID &&
		m.ModTime == n.ModTime && m.ChangeTime == n.ChangeTime && m.Size == n.Size && m.Inode == n.Inode &&
		m.Links == n.Links && m.DeviceID == n.DeviceID && m.Rdev == n.Rdev && m.LinkTarget == n.LinkTarget &&
		m.BlockSize == n.BlockSize && m.Offset == n.Offset && slices.Equal(m.Content, n.Content) &&
		(m.Subtree == nil) == (n.Subtree == nil) && (m.Subtree == nil || *m.Subtree == *n.Subtree)
}

func displayDir(d *dirState) string {
	if d.path == "" {
		return "(snapshot root)"
	}
	return d.path
}

// fatalError marks errors that must stop the backup rather than skip one file: the
// upload pipeline failed, or a tree cannot be encoded.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }
