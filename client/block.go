package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/client/crypt"
	"github.com/cofferhq/coffer/client/tree"
	"github.com/cofferhq/coffer/client/upload"
	"github.com/cofferhq/coffer/meta"
)

// Block sizes accepted by BackupBlock.
const (
	DefaultBlockSize = 4 << 20
	MinBlockSize     = 4 << 10
	MaxBlockSize     = 16 << 20
)

// BlockOptions says which block device or image file BackupBlock captures and how.
type BlockOptions struct {
	Path string // a block device or a regular (image) file
	// BlockSize is the fixed block size: a power of two from MinBlockSize to
	// MaxBlockSize. Zero means DefaultBlockSize.
	BlockSize int
	// DirtyMap, when set, is a dirty-block map (see ParseDirtyMap): only the blocks it
	// names are read, the others are taken from the parent snapshot, which must be a
	// block snapshot of the same path with the same block size.
	DirtyMap *DirtyMap
	Tags     []string
	// Parent and Force are as in BackupOptions: Force reads every block and ignores the
	// parent's hash list (chunks already stored still dedup).
	Parent   string
	Force    bool
	Progress func(Progress)
	// Compression is the policy the blocks are sealed with, as in BackupOptions.
	Compression crypt.Compression
	// OnRead, when set, is called (from several goroutines) before each read of the
	// source with the byte range read.
	OnRead func(off, n int64)
}

// BlockStats are the block figures of a BackupBlock.
type BlockStats struct {
	Size      int64 // bytes of the device or image (its apparent size)
	BlockSize int
	Total     int64 // blocks
	Holes     int64 // blocks recorded as holes: sparse or all zero
	Read      int64 // blocks read
	Changed   int64 // data blocks whose hash differs from the parent's (all, without one)
	Reused    int64 // blocks taken from the parent without reading (dirty map)
}

// pblock is one block of the parent snapshot's image.
type pblock struct {
	id   chunk.ID
	n    uint32 // length; 0: the parent has no such block
	hole bool
}

// BackupBlock captures a block device or an image file in fixed, aligned blocks into a
// new snapshot whose root tree holds one file entry named after the path's base name
// (tree.Node.BlockSize set). Blocks in holes (SEEK_DATA/SEEK_HOLE) are not read and,
// like all-zero blocks, are recorded as holes, not stored. Each data block is one chunk,
// so the parent snapshot's per-block hash list (its extents, kept in the local cache)
// tells which blocks changed: only those are uploaded. With a dirty map only the listed
// blocks are read. Snapshot.Paths is the path; Stats count one file.
func (a *Agent) BackupBlock(ctx context.Context, opts BlockOptions) (BackupResult, error) {
	if err := a.check(); err != nil {
		return BackupResult{}, err
	}
	start := a.cfg.Now()
	bs := opts.BlockSize
	if bs == 0 {
		bs = DefaultBlockSize
	}
	if bs < MinBlockSize || bs > MaxBlockSize || bs&(bs-1) != 0 {
		return BackupResult{}, fmt.Errorf("%w: block size %d: want a power of two from %d to %d", ErrInvalid, bs, MinBlockSize, MaxBlockSize)
	}
	if opts.Path == "" {
		return BackupResult{}, fmt.Errorf("%w: block backup: no path", ErrInvalid)
	}
	abs, err := filepath.Abs(opts.Path)
	if err != nil {
		return BackupResult{}, fmt.Errorf("%w: block backup: %s: %v", ErrInvalid, opts.Path, err)
	}
	f, err := os.Open(abs)
	if err != nil {
		return BackupResult{}, fmt.Errorf("%w: block backup: %w", ErrInvalid, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return BackupResult{}, fmt.Errorf("client: block backup: %w", err)
	}
	var size int64
	switch m := fi.Mode(); {
	case m.IsRegular():
		size = fi.Size()
	case m&fs.ModeDevice != 0 && m&fs.ModeCharDevice == 0:
		if size, err = unix.Seek(int(f.Fd()), 0, io.SeekEnd); err != nil {
			return BackupResult{}, fmt.Errorf("client: block backup: size of %s: %w", abs, err)
		}
	default:
		return BackupResult{}, fmt.Errorf("%w: block backup: %s is neither a block device nor a regular file", ErrInvalid, abs)
	}
	name := filepath.Base(abs)
	if err := tree.ValidName(name); err != nil {
		return BackupResult{}, fmt.Errorf("%w: block backup: %s: %v", ErrInvalid, abs, err)
	}
	var snapID meta.SnapshotID
	if _, err := io.ReadFull(a.cfg.Rand, snapID[:]); err != nil {
		return BackupResult{}, fmt.Errorf("client: block backup: snapshot id: %w", err)
	}
	paths := []string{abs}
	parent, err := a.resolveParent(ctx, opts.Parent, paths)
	if err != nil {
		return BackupResult{}, err
	}
	b := &backup{a: a, refs: make(map[chunk.ID]struct{}), sealer: a.sealer(opts.Compression)}
	b.openCache(paths, parent)
	defer b.cache.Close()
	var prev *tree.Node
	var pblocks []pblock
	if parent != nil {
		if prev, pblocks, err = b.parentBlocks(ctx, parent, name, bs); err != nil {
			a.cfg.Logger.Warn("parent snapshot has no usable block list; reading every block", "parent", parent.ID.Str(), "err", err)
		}
	}
	if opts.DirtyMap != nil {
		if pblocks == nil {
			return BackupResult{}, fmt.Errorf("%w: block backup: a dirty map needs a parent block snapshot of %s with block size %d", ErrInvalid, abs, bs)
		}
		if end := opts.DirtyMap.End(); end > size {
			return BackupResult{}, fmt.Errorf("%w: block backup: dirty map covers up to byte %d but %s has %d bytes", ErrInvalid, end, abs, size)
		}
	}
	if opts.Force {
		pblocks = nil
	}

	n, err := nodeFromInfo(name, abs, fi)
	if err != nil {
		return BackupResult{}, fmt.Errorf("client: block backup: %w", err)
	}
	n.Type, n.Mode, n.Rdev, n.Size, n.BlockSize = tree.TypeFile, uint32(fi.Mode().Perm()), 0, size, uint32(bs)
	n.Links, n.DeviceID = 0, 0
	b.files.Add(1)

	b.totalFiles.Store(1)
	b.totalBytes.Store(size)
	b.scanDone.Store(true)
	stopProgress := b.startProgress(opts.Progress)
	bl := &blockRun{b: b, f: f, size: size, bs: int64(bs), opts: opts, parent: pblocks}
	content, upStats, err := bl.run(ctx)
	if err != nil {
		stopProgress()
		return BackupResult{}, err
	}
	n.Content = content
	b.classify(&n, prev)
	for _, e := range content {
		if !e.Hole {
			b.refs[e.ID] = struct{}{}
		}
	}
	rootID, enc, err := b.trees.Encode(&tree.Tree{Nodes: []tree.Node{n}})
	if err != nil {
		stopProgress()
		return BackupResult{}, fmt.Errorf("client: block backup: %s: %w (use a larger --block-size)", abs, err)
	}
	b.treeIDs = []chunk.ID{rootID}
	b.refs[rootID] = struct{}{}
	if err := a.putChunk(ctx, rootID, enc, &upStats); err != nil {
		stopProgress()
		return BackupResult{}, err
	}
	res, err := b.commit(ctx, commitInfo{id: snapID, start: start, paths: paths, tags: opts.Tags, root: rootID, parent: parent}, upStats, stopProgress)
	if err != nil {
		return BackupResult{}, err
	}
	res.Blocks = bl.stats(bs)
	return res, nil
}

// putChunk seals and stores one chunk unless it is stored already.
func (a *Agent) putChunk(ctx context.Context, id chunk.ID, plain []byte, st *upload.Stats) error {
	up := upload.New(ctx, upload.Config{Store: a.cfg.Chunks, Sealer: a.keys, MaxChunk: len(plain), Workers: 1})
	err := up.Add(ctx, id, slices.Clone(plain))
	s, cerr := up.Close()
	if err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("client: store tree %s: %w", id.Str(), err)
	}
	st.ChunksAdded += s.ChunksAdded
	st.BytesAdded += s.BytesAdded
	return nil
}

// parentBlocks returns the parent's entry and its per-block list, or an error when the
// parent holds no block image of that name (or, as its only entry, of any name) and block
// size.
func (b *backup) parentBlocks(ctx context.Context, parent *meta.Snapshot, name string, bs int) (*tree.Node, []pblock, error) {
	t, err := b.trees.Load(ctx, parent.Tree)
	if err != nil {
		return nil, nil, err
	}
	j, ok := slices.BinarySearchFunc(t.Nodes, name, func(x tree.Node, s string) int { return strings.Compare(x.Name, s) })
	if !ok {
		// A block snapshot of another path (--parent naming the backup of an earlier
		// LVM snapshot device) has one entry under another name.
		if len(t.Nodes) != 1 {
			return nil, nil, fmt.Errorf("no entry %q", name)
		}
		j = 0
	}
	n := &t.Nodes[j]
	if n.Type != tree.TypeFile || n.BlockSize != uint32(bs) {
		return n, nil, fmt.Errorf("%q is not a block image with block size %d (block size %d)", name, bs, n.BlockSize)
	}
	bs64 := int64(bs)
	pb := make([]pblock, (n.Size+bs64-1)/bs64)
	off := int64(0)
	for _, e := range n.Content {
		l := int64(e.Len)
		if off%bs64 != 0 || (l%bs64 != 0 && off+l != n.Size) || (!e.Hole && l > bs64) {
			return n, nil, fmt.Errorf("%q: extent at %d (%d bytes) is not block aligned", name, off, l)
		}
		for o := off; o < off+l; o += bs64 {
			pb[o/bs64] = pblock{id: e.ID, n: uint32(min(bs64, off+l-o)), hole: e.Hole}
		}
		off += l
	}
	return n, pb, nil
}

// blockRun reads one device or image.
type blockRun struct {
	b      *backup
	f      *os.File
	size   int64
	bs     int64
	opts   BlockOptions
	parent []pblock // nil: compare with nothing

	regions []region // data and holes of the source

	mu                           sync.Mutex
	holes, read, changed, reused int64
}

type blockResult struct {
	id   chunk.ID
	n    uint32
	hole bool
}

func (r *blockRun) stats(bs int) BlockStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return BlockStats{Size: r.size, BlockSize: bs, Total: (r.size + r.bs - 1) / r.bs, Holes: r.holes,
		Read: r.read, Changed: r.changed, Reused: r.reused}
}

// run reads the blocks with Workers goroutines and returns the content list.
func (r *blockRun) run(ctx context.Context) ([]tree.Extent, upload.Stats, error) {
	a := r.b.a
	fi, err := r.f.Stat()
	if err != nil {
		return nil, upload.Stats{}, err
	}
	r.regions = []region{{0, r.size, false}}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && fi.Mode().IsRegular() && st.Blocks*512 < r.size {
		r.regions = dataRegions(int(r.f.Fd()), r.size)
	}
	nblocks := (r.size + r.bs - 1) / r.bs
	results := make([]blockResult, nblocks)

	upCtx, upCancel := context.WithCancel(ctx)
	defer upCancel()
	up := upload.New(upCtx, upload.Config{Store: a.cfg.Chunks, Sealer: r.b.sealer, MaxChunk: int(r.bs), Workers: a.cfg.Workers})
	r.b.up = up
	r.b.upPtr.Store(up)
	g, gctx := errgroup.WithContext(ctx)
	next := make(chan int64)
	g.Go(func() error {
		defer close(next)
		for i := range nblocks {
			select {
			case next <- i:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	for range a.cfg.Workers {
		g.Go(func() error {
			buf := make([]byte, r.bs)
			for i := range next {
				res, err := r.block(gctx, up, i, buf)
				if err != nil {
					return err
				}
				results[i] = res
			}
			return nil
		})
	}
	err = g.Wait()
	if err != nil {
		upCancel()
	}
	st, upErr := up.Close()
	if err == nil {
		err = upErr
	}
	if err != nil {
		return nil, st, fmt.Errorf("client: block backup: %w", err)
	}
	var ext []tree.Extent
	for _, res := range results {
		if res.hole {
			ext = addHole(ext, int64(res.n))
			continue
		}
		ext = append(ext, tree.Extent{ID: res.id, Len: res.n})
	}
	return ext, st, nil
}

// block captures block i.
func (r *blockRun) block(ctx context.Context, up *upload.Uploader, i int64, buf []byte) (blockResult, error) {
	start := i * r.bs
	end := min(start+r.bs, r.size)
	n := end - start
	r.b.bytes.Add(n)
	var p pblock
	if r.parent != nil && i < int64(len(r.parent)) {
		p = r.parent[i]
	}
	if r.opts.DirtyMap != nil && p.n == uint32(n) && !r.opts.DirtyMap.Overlaps(start, end) {
		r.mu.Lock()
		r.reused++
		if p.hole {
			r.holes++
		}
		r.mu.Unlock()
		return blockResult{id: p.id, n: p.n, hole: p.hole}, nil
	}
	// Read the data parts of the block; hole parts are zero.
	data := buf[:n]
	readAny := false
	for _, rg := range r.regions {
		s, e := max(rg.start, start), min(rg.end, end)
		if s >= e {
			continue
		}
		dst := data[s-start : e-start]
		if rg.hole {
			clear(dst)
			continue
		}
		if hook := r.opts.OnRead; hook != nil {
			hook(s, e-s)
		}
		k, err := r.f.ReadAt(dst, s)
		r.b.bytesRead.Add(int64(k))
		if err != nil && !(errors.Is(err, io.EOF) && k == len(dst)) {
			return blockResult{}, fmt.Errorf("read %s at %d: %w", r.opts.Path, s, err)
		}
		readAny = true
	}
	r.mu.Lock()
	if readAny {
		r.read++
	}
	r.mu.Unlock()
	if !readAny || allZero(data) {
		r.mu.Lock()
		r.holes++
		r.mu.Unlock()
		return blockResult{n: uint32(n), hole: true}, nil
	}
	id := r.b.a.keys.ChunkID(data)
	if p.n == uint32(n) && !p.hole && p.id == id {
		return blockResult{id: id, n: uint32(n)}, nil // unchanged: stored by the parent
	}
	r.mu.Lock()
	r.changed++
	r.mu.Unlock()
	if err := up.Add(ctx, id, append(up.Buffer(int(n)), data...)); err != nil {
		return blockResult{}, err
	}
	return blockResult{id: id, n: uint32(n)}, nil
}
