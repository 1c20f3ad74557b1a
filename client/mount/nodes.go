package mount

import (
	"context"
	"errors"
	"hash/fnv"
	"io"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/client/tree"
)

// Inode numbers: fixed for the top directories, a hash of the snapshot and the path
// for everything else, and of the snapshot and the backed-up device and inode for a
// file with several links, so that its names share one inode as in the source.
const (
	inoRoot      = 1
	inoSnapshots = 2
	inoHosts     = 3
)

func inoOf(parts ...string) uint64 {
	h := fnv.New64a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	if v := h.Sum64(); v > inoHosts {
		return v
	}
	return inoHosts + 1
}

// Interface checks.
var (
	_ gofs.NodeLookuper   = (*rootNode)(nil)
	_ gofs.NodeReaddirer  = (*rootNode)(nil)
	_ gofs.NodeGetattrer  = (*rootNode)(nil)
	_ gofs.NodeStatfser   = (*rootNode)(nil)
	_ gofs.NodeLookuper   = (*snapshotsNode)(nil)
	_ gofs.NodeReaddirer  = (*snapshotsNode)(nil)
	_ gofs.NodeLookuper   = (*hostsNode)(nil)
	_ gofs.NodeReaddirer  = (*hostsNode)(nil)
	_ gofs.NodeLookuper   = (*hostNode)(nil)
	_ gofs.NodeReaddirer  = (*hostNode)(nil)
	_ gofs.NodeReadlinker = (*staticLink)(nil)
	_ gofs.NodeLookuper   = (*dirNode)(nil)
	_ gofs.NodeReaddirer  = (*dirNode)(nil)
	_ gofs.NodeGetattrer  = (*dirNode)(nil)
	_ gofs.NodeOpener     = (*fileNode)(nil)
	_ gofs.NodeGetattrer  = (*fileNode)(nil)
	_ gofs.NodeReadlinker = (*linkNode)(nil)
	_ gofs.FileReader     = (*fileHandle)(nil)
	_ gofs.FileReleaser   = (*fileHandle)(nil)
)

// virtualAttr fills out for one of the mount's own directories or symlinks.
func (m *FS) virtualAttr(out *fuse.Attr, mode uint32, ino uint64, nlink uint32, size uint64, t time.Time) {
	out.Mode = mode
	out.Ino = ino
	out.Nlink = nlink
	out.Size = size
	out.Uid, out.Gid = m.uid, m.gid
	out.Blksize = 4096
	sec, nsec := uint64(t.Unix()), uint32(t.Nanosecond())
	out.Atime, out.Mtime, out.Ctime = sec, sec, sec
	out.Atimensec, out.Mtimensec, out.Ctimensec = nsec, nsec, nsec
}

// errno maps an error of the cluster or a snapshot to what a file operation returns.
func errno(ctx context.Context, err error) syscall.Errno {
	switch {
	case err == nil:
		return 0
	case ctx.Err() != nil:
		return syscall.EINTR
	case errors.Is(err, client.ErrNotFound):
		return syscall.ENOENT
	}
	return syscall.EIO
}

// rootNode is the mount's root: snapshots/ and hosts/.
type rootNode struct {
	gofs.Inode
	m *FS
}

func (r *rootNode) Getattr(_ context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	r.m.virtualAttr(&out.Attr, syscall.S_IFDIR|0o555, inoRoot, 4, 0, r.m.start)
	return 0
}

func (r *rootNode) Statfs(_ context.Context, out *fuse.StatfsOut) syscall.Errno {
	out.Bsize, out.Frsize, out.NameLen = 4096, 4096, 255
	return 0
}

func (r *rootNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	out.SetEntryTimeout(contentTimeout)
	out.SetAttrTimeout(contentTimeout)
	switch name {
	case "snapshots":
		r.m.virtualAttr(&out.Attr, syscall.S_IFDIR|0o555, inoSnapshots, 2, 0, r.m.start)
		return r.NewInode(ctx, &snapshotsNode{m: r.m}, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: inoSnapshots}), 0
	case "hosts":
		r.m.virtualAttr(&out.Attr, syscall.S_IFDIR|0o555, inoHosts, 2, 0, r.m.start)
		return r.NewInode(ctx, &hostsNode{m: r.m}, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: inoHosts}), 0
	}
	return nil, syscall.ENOENT
}

func (r *rootNode) Readdir(context.Context) (gofs.DirStream, syscall.Errno) {
	return gofs.NewListDirStream([]fuse.DirEntry{
		{Name: "hosts", Mode: syscall.S_IFDIR, Ino: inoHosts},
		{Name: "snapshots", Mode: syscall.S_IFDIR, Ino: inoSnapshots},
	}), 0
}

// snapshotsNode is snapshots/: a directory per snapshot.
type snapshotsNode struct {
	gofs.Inode
	m *FS
}

func (d *snapshotsNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	l, err := d.m.snapshots(ctx)
	if err != nil {
		return nil, errno(ctx, err)
	}
	s := l.byName[name]
	if s == nil {
		return nil, syscall.ENOENT
	}
	e := &entry{m: d.m, s: s, path: "", ino: inoOf(s.s.ID.String(), "/")}
	if en := e.attr(ctx, &out.Attr); en != 0 {
		return nil, en
	}
	out.SetEntryTimeout(listTimeout)
	out.SetAttrTimeout(contentTimeout)
	return d.NewInode(ctx, &dirNode{entry: *e, tree: s.s.Tree}, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: e.ino}), 0
}

func (d *snapshotsNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	l, err := d.m.snapshots(ctx)
	if err != nil {
		return nil, errno(ctx, err)
	}
	out := make([]fuse.DirEntry, 0, len(l.snaps))
	for _, s := range l.snaps {
		out = append(out, fuse.DirEntry{Name: s.name, Mode: syscall.S_IFDIR, Ino: inoOf(s.s.ID.String(), "/")})
	}
	return gofs.NewListDirStream(out), 0
}

// hostsNode is hosts/: a directory per host.
type hostsNode struct {
	gofs.Inode
	m *FS
}

func (d *hostsNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	l, err := d.m.snapshots(ctx)
	if err != nil {
		return nil, errno(ctx, err)
	}
	if len(l.hosts[name]) == 0 {
		return nil, syscall.ENOENT
	}
	ino := inoOf("host", name)
	d.m.virtualAttr(&out.Attr, syscall.S_IFDIR|0o555, ino, 2, 0, d.m.start)
	out.SetEntryTimeout(listTimeout)
	out.SetAttrTimeout(listTimeout)
	return d.NewInode(ctx, &hostNode{m: d.m, host: name}, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: ino}), 0
}

func (d *hostsNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	l, err := d.m.snapshots(ctx)
	if err != nil {
		return nil, errno(ctx, err)
	}
	hosts := make([]string, 0, len(l.hosts))
	for h := range l.hosts {
		hosts = append(hosts, h)
	}
	slices.Sort(hosts)
	out := make([]fuse.DirEntry, 0, len(hosts))
	for _, h := range hosts {
		out = append(out, fuse.DirEntry{Name: h, Mode: syscall.S_IFDIR, Ino: inoOf("host", h)})
	}
	return gofs.NewListDirStream(out), 0
}

// hostNode is hosts/<host>/: latest and each of the host's snapshots, as symlinks into
// snapshots/.
type hostNode struct {
	gofs.Inode
	m    *FS
	host string
}

// links returns the host's symlinks by name.
func (d *hostNode) links(ctx context.Context) (map[string]string, []string, error) {
	l, err := d.m.snapshots(ctx)
	if err != nil {
		return nil, nil, err
	}
	snaps := l.hosts[d.host]
	targets := map[string]string{}
	var names []string
	for _, s := range snaps {
		targets[s.name] = "../../snapshots/" + s.name
		names = append(names, s.name)
	}
	if len(snaps) > 0 {
		targets["latest"] = "../../snapshots/" + snaps[len(snaps)-1].name
		names = append(names, "latest")
	}
	return targets, names, nil
}

func (d *hostNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	targets, _, err := d.links(ctx)
	if err != nil {
		return nil, errno(ctx, err)
	}
	target, ok := targets[name]
	if !ok {
		return nil, syscall.ENOENT
	}
	ino := inoOf("hostlink", d.host, name, target)
	d.m.virtualAttr(&out.Attr, syscall.S_IFLNK|0o777, ino, 1, uint64(len(target)), d.m.start)
	out.SetEntryTimeout(listTimeout)
	out.SetAttrTimeout(listTimeout)
	// NB: the inode number covers the target, so "latest" gets a new inode when it
	// moves to a newer snapshot.
	return d.NewInode(ctx, &staticLink{target: target}, gofs.StableAttr{Mode: syscall.S_IFLNK, Ino: ino}), 0
}

func (d *hostNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	targets, names, err := d.links(ctx)
	if err != nil {
		return nil, errno(ctx, err)
	}
	out := make([]fuse.DirEntry, 0, len(names))
	for _, n := range names {
		out = append(out, fuse.DirEntry{Name: n, Mode: syscall.S_IFLNK, Ino: inoOf("hostlink", d.host, n, targets[n])})
	}
	return gofs.NewListDirStream(out), 0
}

// staticLink is a symlink of the mount's own (hosts/<host>/latest).
type staticLink struct {
	gofs.Inode
	target string
}

func (l *staticLink) Readlink(context.Context) ([]byte, syscall.Errno) { return []byte(l.target), 0 }

// entry is a node of a snapshot: its root (n nil) or an entry of one of its trees.
type entry struct {
	m    *FS
	s    *snap
	path string     // below the snapshot's root: "" for the root, else "/a/b"
	n    *tree.Node // nil for the root; points into a decoded tree, never modified
	ino  uint64
}

// child returns the entry for node n of directory e.
func (e *entry) child(n *tree.Node) *entry {
	p := e.path + "/" + n.Name
	ino := inoOf(e.s.s.ID.String(), p)
	if n.Type == tree.TypeFile && n.Links > 1 {
		ino = inoOf(e.s.s.ID.String(), "inode", strconv.FormatUint(n.DeviceID, 10), strconv.FormatUint(n.Inode, 10))
	}
	return &entry{m: e.m, s: e.s, path: p, n: n, ino: ino}
}

// attr fills out with e's metadata as the snapshot recorded it. A directory's link count
// (not recorded) is 2 and one per subdirectory, as on the usual Linux file systems; a
// file's allocated blocks are its data extents in 4 KiB blocks, so that holes show.
func (e *entry) attr(ctx context.Context, out *fuse.Attr) syscall.Errno {
	out.Ino = e.ino
	out.Blksize = 4096
	if e.n == nil {
		links, en := e.dirLinks(ctx, e.s.s.Tree)
		if en != 0 {
			return en
		}
		e.m.virtualAttr(out, syscall.S_IFDIR|0o555, e.ino, links, 0, e.s.s.Time)
		return 0
	}
	n := e.n
	out.Mode = unixMode(n)
	out.Uid, out.Gid = n.UID, n.GID
	out.Nlink = 1
	switch n.Type {
	case tree.TypeFile:
		out.Size = uint64(max(n.Size, 0))
		var data uint64
		for _, x := range n.Content {
			if !x.Hole {
				data += uint64(x.Len)
			}
		}
		out.Blocks = (data + 4095) / 4096 * 8
		if n.Links > 1 {
			out.Nlink = uint32(min(n.Links, 1<<32-1))
		}
	case tree.TypeDir:
		links, en := e.dirLinks(ctx, *n.Subtree)
		if en != 0 {
			return en
		}
		out.Nlink = links
	case tree.TypeSymlink:
		out.Size = uint64(len(n.LinkTarget))
	case tree.TypeDev, tree.TypeCharDev:
		out.Rdev = uint32(n.Rdev)
	}
	mt := time.Unix(0, n.ModTime)
	ct := mt
	if n.ChangeTime != 0 {
		ct = time.Unix(0, n.ChangeTime)
	}
	out.Atime, out.Atimensec = uint64(mt.Unix()), uint32(mt.Nanosecond())
	out.Mtime, out.Mtimensec = uint64(mt.Unix()), uint32(mt.Nanosecond())
	out.Ctime, out.Ctimensec = uint64(ct.Unix()), uint32(ct.Nanosecond())
	return 0
}

// dirLinks is the link count of the directory whose tree is id.
func (e *entry) dirLinks(ctx context.Context, id chunk.ID) (uint32, syscall.Errno) {
	t, en := e.m.tree(ctx, e.s, id)
	if en != 0 {
		return 0, en
	}
	links := uint32(2)
	for i := range t.Nodes {
		if t.Nodes[i].Type == tree.TypeDir {
			links++
		}
	}
	return links, 0
}

// tree returns tree id of snapshot s, having first obtained s's reader: a snapshot that
// may not be read shows nothing, even what the cache holds from another one.
func (m *FS) tree(ctx context.Context, s *snap, id chunk.ID) (*tree.Tree, syscall.Errno) {
	t, _, en := m.treeAndReader(ctx, s, id)
	return t, en
}

// treeAndReader is tree that also returns the reader it was read with.
func (m *FS) treeAndReader(ctx context.Context, s *snap, id chunk.ID) (*tree.Tree, *client.Agent, syscall.Errno) {
	ag, err := m.reader(ctx, s)
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, syscall.EINTR
		}
		return nil, nil, syscall.EACCES
	}
	t, err := m.trees.load(ctx, id, func() (*tree.Tree, error) { return ag.LoadTree(ctx, id) })
	if err != nil {
		m.o.Logger.Warn("mount: load tree", "snapshot", s.name, "tree", id.Str(), "err", err)
		return nil, nil, errno(ctx, err)
	}
	return t, ag, 0
}

// prefetchSubtrees loads, in the background, the trees of t's subdirectories that are
// neither cached nor loading, in batched reads of up to prefetchBatch trees: a listing
// with attributes (ls -l, READDIRPLUS) looks each of them up next, and a directory's
// link count needs its tree. It is called for a directory that is listed. At most
// prefetchTrees batches run at once in the mount; they stop when it is unmounted.
func (m *FS) prefetchSubtrees(ag *client.Agent, t *tree.Tree) {
	var ids []chunk.ID
	for i := range t.Nodes {
		if n := &t.Nodes[i]; n.Type == tree.TypeDir && n.Subtree != nil {
			ids = append(ids, *n.Subtree)
		}
	}
	for len(ids) > 0 {
		batch := ids[:min(len(ids), prefetchBatch)]
		ids = ids[len(batch):]
		mine, loads := m.trees.begin(batch)
		if len(mine) == 0 {
			continue
		}
		select {
		case m.prefetch <- struct{}{}:
		default:
			// Enough in flight: these load when they are looked up.
			for i, id := range mine {
				m.trees.end(id, loads[i], nil, errPrefetchSkipped)
			}
			continue
		}
		m.bg.Add(1)
		go func() {
			defer m.bg.Done()
			defer func() { <-m.prefetch }()
			// NB: a failed load is not cached; the lookup that needs the tree loads it
			// again and reports its own error.
			trees, errs := ag.LoadTrees(m.ctx, mine)
			for i, id := range mine {
				m.trees.end(id, loads[i], trees[i], errs[i])
			}
		}()
	}
}

// errPrefetchSkipped ends a prefetch that was not started; whoever waited for it loads
// the tree itself.
var errPrefetchSkipped = errors.New("mount: prefetch skipped")

// unixMode is n's st_mode: type, permission, setuid, setgid and sticky bits.
func unixMode(n *tree.Node) uint32 {
	fm := n.FileMode()
	mode := uint32(fm.Perm())
	if fm&fs.ModeSetuid != 0 {
		mode |= syscall.S_ISUID
	}
	if fm&fs.ModeSetgid != 0 {
		mode |= syscall.S_ISGID
	}
	if fm&fs.ModeSticky != 0 {
		mode |= syscall.S_ISVTX
	}
	return mode | typeBits(n.Type)
}

func typeBits(t tree.Type) uint32 {
	switch t {
	case tree.TypeDir:
		return syscall.S_IFDIR
	case tree.TypeSymlink:
		return syscall.S_IFLNK
	case tree.TypeDev:
		return syscall.S_IFBLK
	case tree.TypeCharDev:
		return syscall.S_IFCHR
	case tree.TypeFIFO:
		return syscall.S_IFIFO
	case tree.TypeSocket:
		return syscall.S_IFSOCK
	}
	return syscall.S_IFREG
}

// dirNode is a directory of a snapshot (its root included).
type dirNode struct {
	gofs.Inode
	entry
	tree chunk.ID
}

func (d *dirNode) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.SetTimeout(contentTimeout)
	return d.attr(ctx, &out.Attr)
}

func (d *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	t, en := d.m.tree(ctx, d.s, d.tree)
	if en != 0 {
		return nil, en
	}
	i, ok := slices.BinarySearchFunc(t.Nodes, name, func(n tree.Node, s string) int { return strings.Compare(n.Name, s) })
	if !ok {
		out.SetEntryTimeout(contentTimeout) // a snapshot never gains entries
		return nil, syscall.ENOENT
	}
	c := d.child(&t.Nodes[i])
	if en := c.attr(ctx, &out.Attr); en != 0 {
		return nil, en
	}
	out.SetEntryTimeout(contentTimeout)
	out.SetAttrTimeout(contentTimeout)
	var node gofs.InodeEmbedder
	switch c.n.Type {
	case tree.TypeDir:
		node = &dirNode{entry: *c, tree: *c.n.Subtree}
	case tree.TypeFile:
		node = &fileNode{entry: *c}
	case tree.TypeSymlink:
		node = &linkNode{entry: *c}
	default:
		node = &specialNode{entry: *c}
	}
	return d.NewInode(ctx, node, gofs.StableAttr{Mode: typeBits(c.n.Type), Ino: c.ino}), 0
}

func (d *dirNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	t, ag, en := d.m.treeAndReader(ctx, d.s, d.tree)
	if en != 0 {
		return nil, en
	}
	d.m.prefetchSubtrees(ag, t)
	out := make([]fuse.DirEntry, len(t.Nodes))
	for i := range t.Nodes {
		n := &t.Nodes[i]
		out[i] = fuse.DirEntry{Name: n.Name, Mode: typeBits(n.Type), Ino: d.child(n).ino}
	}
	return gofs.NewListDirStream(out), 0
}

// linkNode is a symlink of a snapshot.
type linkNode struct {
	gofs.Inode
	entry
}

func (l *linkNode) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.SetTimeout(contentTimeout)
	return l.attr(ctx, &out.Attr)
}

func (l *linkNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if _, err := l.m.reader(ctx, l.s); err != nil {
		return nil, syscall.EACCES
	}
	return []byte(l.n.LinkTarget), 0
}

// specialNode is a FIFO, socket or device node of a snapshot: metadata only (the
// mount is nodev, and the kernel never asks the file system to open such a node).
type specialNode struct {
	gofs.Inode
	entry
}

func (s *specialNode) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.SetTimeout(contentTimeout)
	return s.attr(ctx, &out.Attr)
}

// fileNode is a regular file of a snapshot.
type fileNode struct {
	gofs.Inode
	entry
}

func (f *fileNode) Getattr(ctx context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.SetTimeout(contentTimeout)
	return f.attr(ctx, &out.Attr)
}

func (f *fileNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
		return nil, 0, syscall.EROFS
	}
	h := &fileHandle{e: f.entry}
	if _, en := h.file(ctx); en != 0 {
		return nil, 0, en
	}
	// The content never changes: the kernel may keep what it read.
	return h, fuse.FOPEN_KEEP_CACHE, 0
}

// fileHandle is an open file: reads go through the snapshot's current reader.
type fileHandle struct {
	e entry

	mu sync.Mutex
	ag *client.Agent
	f  *client.File
}

// file returns the open client.File, opened again when the snapshot's reader changed
// (a renewed grant).
func (h *fileHandle) file(ctx context.Context) (*client.File, syscall.Errno) {
	ag, err := h.e.m.reader(ctx, h.e.s)
	if err != nil {
		if ctx.Err() != nil {
			return nil, syscall.EINTR
		}
		return nil, syscall.EACCES
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.f != nil && h.ag == ag {
		return h.f, 0
	}
	f, err := ag.OpenFile(h.e.m.ctx, h.e.n, h.e.m.cache)
	if err != nil {
		h.e.m.o.Logger.Warn("mount: open", "snapshot", h.e.s.name, "path", h.e.path, "err", err)
		return nil, errno(ctx, err)
	}
	if h.f != nil {
		// NB: a read still running on the old file finishes: Close stops only its
		// read-ahead.
		h.f.Close()
	}
	h.ag, h.f = ag, f
	return f, 0
}

func (h *fileHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	f, en := h.file(ctx)
	if en != 0 {
		return nil, en
	}
	n, err := f.ReadAt(ctx, dest, off)
	if err != nil && err != io.EOF {
		h.e.m.o.Logger.Warn("mount: read", "snapshot", h.e.s.name, "path", h.e.path, "offset", off, "err", err)
		return nil, errno(ctx, err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

func (h *fileHandle) Release(context.Context) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.f != nil {
		h.f.Close()
		h.f = nil
	}
	return 0
}
