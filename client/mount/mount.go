// Package mount serves a vault's snapshots as a read-only FUSE file system (coffer
// mount):
//
//	snapshots/<time>_<host>_<id>/...   every snapshot, its files as backed up
//	hosts/<host>/latest                symlink to the host's newest snapshot
//	hosts/<host>/<time>_<host>_<id>    symlinks to each of the host's snapshots
//
// Trees are loaded when a directory is looked at and file contents are read chunk by
// chunk when they are read (client.File), through a bounded cache of plaintext chunks
// shared by the whole mount. Everything a snapshot shows is read through the agent that
// Options.Reader returns for that snapshot: for a restore operator, an agent carrying a
// restore grant for that one snapshot, obtained like a restore's and renewed before it
// expires. A snapshot whose reader cannot be had (no grant) shows as an unreadable
// directory (EACCES), whatever the mount has cached from other snapshots.
//
// The mount is read-only (mounted "ro", writes refused with EROFS), nosuid and nodev,
// and without allow_other: only the user who mounted it can enter it.
package mount

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/meta"
)

// ErrInvalid marks bad options or a bad mount point.
var ErrInvalid = errors.New("mount: invalid argument")

// How long the kernel may keep what it was told: a snapshot's content never changes;
// the lists of snapshots and hosts do.
const (
	contentTimeout = time.Minute
	listTimeout    = time.Second
)

// Tree prefetches: batched reads of up to prefetchBatch subdirectory trees, at most
// prefetchTrees batches at once.
const (
	prefetchBatch = 64
	prefetchTrees = 4
)

// Defaults of Options.
const (
	DefaultCacheBytes = 64 << 20
	DefaultRefresh    = 30 * time.Second
	// DefaultTreeNodes bounds the directory entries of the decoded trees kept.
	DefaultTreeNodes = 1 << 20
)

// Options configures Mount.
type Options struct {
	// Agent is the vault's agent; it lists the snapshots. Required.
	Agent *client.Agent
	// Reader returns the agent that reads snapshot snap's trees and chunks, and when
	// that access ends (zero: it does not). For a restore operator it is an agent
	// carrying a restore grant for snap (coffer mount uses the restore command's
	// grant); for other principals Agent itself. It is called when the snapshot is
	// first looked at and again when its access nears its end; an error makes the
	// snapshot unreadable (EACCES) until a later call succeeds. Nil means Agent for
	// every snapshot.
	Reader func(ctx context.Context, snap meta.Snapshot) (*client.Agent, time.Time, error)
	// CacheBytes bounds the plaintext chunks kept for reuse. Default DefaultCacheBytes.
	CacheBytes int64
	// TreeNodes bounds the directory entries of the decoded trees kept. Default
	// DefaultTreeNodes.
	TreeNodes int
	// Refresh is how long the list of snapshots is reused before it is read again.
	// Default DefaultRefresh.
	Refresh time.Duration
	// Now is the clock. Required.
	Now    func() time.Time
	Logger *slog.Logger // default: discard
	// Debug logs every FUSE request (go-fuse's debug output) to Logger.
	Debug bool
}

// FS is a mounted file system. Unmount it when done.
type FS struct {
	o      Options
	dir    string
	server *fuse.Server
	cache  *client.ReadCache
	trees  *treeCache
	start  time.Time
	uid    uint32
	gid    uint32

	// ctx bounds the background reads (open files' read-ahead, tree prefetches);
	// cancelled by Unmount, which waits for bg.
	ctx      context.Context
	cancel   context.CancelFunc
	bg       sync.WaitGroup
	prefetch chan struct{} // a slot per tree prefetch in flight

	mu     sync.Mutex
	listed time.Time // when list was read; zero: never
	list   *snapList
	byID   map[meta.SnapshotID]*snap // kept across refreshes: their readers
	closed bool
}

// Mount mounts the vault's snapshots at dir, an existing empty directory, and serves
// them until Unmount (or until the file system is unmounted from outside: Wait returns
// then). Nothing is read from the cluster before the mount is first used.
func Mount(ctx context.Context, dir string, o Options) (*FS, error) {
	if o.Agent == nil {
		return nil, fmt.Errorf("%w: no agent", ErrInvalid)
	}
	if o.Now == nil {
		return nil, fmt.Errorf("%w: no clock (Now)", ErrInvalid)
	}
	if o.CacheBytes < 0 || o.TreeNodes < 0 || o.Refresh < 0 {
		return nil, fmt.Errorf("%w: negative cache size, tree bound or refresh interval", ErrInvalid)
	}
	if o.CacheBytes == 0 {
		o.CacheBytes = DefaultCacheBytes
	}
	if o.TreeNodes == 0 {
		o.TreeNodes = DefaultTreeNodes
	}
	if o.Refresh == 0 {
		o.Refresh = DefaultRefresh
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Reader == nil {
		ag := o.Agent
		o.Reader = func(context.Context, meta.Snapshot) (*client.Agent, time.Time, error) { return ag, time.Time{}, nil }
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: mount point %s: %v", ErrInvalid, dir, err)
	}
	if fi, err := os.Stat(abs); err != nil {
		return nil, fmt.Errorf("mount: mount point: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("%w: mount point %s is not a directory", ErrInvalid, abs)
	}
	m := &FS{o: o, dir: abs, cache: client.NewReadCache(o.CacheBytes), trees: newTreeCache(o.TreeNodes),
		start: o.Now(), uid: uint32(os.Getuid()), gid: uint32(os.Getgid()), byID: map[meta.SnapshotID]*snap{},
		prefetch: make(chan struct{}, prefetchTrees)}
	m.ctx, m.cancel = context.WithCancel(context.WithoutCancel(ctx))
	snapTimeout := contentTimeout
	opts := &fs.Options{
		MountOptions: fuse.MountOptions{
			Options:     []string{"ro", "nosuid", "nodev"},
			FsName:      "coffer",
			Name:        "coffer",
			MaxWrite:    1 << 20,
			DirectMount: true, // as root no fusermount is needed; otherwise it falls back to it
			// Snapshots record no extended attributes: ENOSYS, so the kernel stops asking
			// (ls -l would ask for ACLs of every file).
			DisableXAttrs: true,
			Debug:         o.Debug,
		},
		EntryTimeout:    &snapTimeout,
		AttrTimeout:     &snapTimeout,
		NullPermissions: true,
		RootStableAttr:  &fs.StableAttr{Ino: inoRoot},
	}
	if o.Debug {
		opts.MountOptions.Logger = slog.NewLogLogger(o.Logger.Handler(), slog.LevelInfo)
	}
	server, err := fs.Mount(abs, &rootNode{m: m}, opts)
	if err != nil {
		m.cancel()
		return nil, fmt.Errorf("mount: mount %s: %w", abs, err)
	}
	m.server = server
	return m, nil
}

// Dir is the mount point.
func (m *FS) Dir() string { return m.dir }

// Wait blocks until the file system is unmounted (by Unmount or from outside).
func (m *FS) Wait() { m.server.Wait() }

// Unmount unmounts the file system and stops the mount's background reads. It fails
// while the mount is busy (a process has a file open or its working directory in it).
func (m *FS) Unmount() error {
	if err := m.server.Unmount(); err != nil {
		return fmt.Errorf("mount: unmount %s: %w", m.dir, err)
	}
	m.server.Wait()
	m.cancel()
	m.bg.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	for _, s := range m.byID {
		s.closeReader(m.o.Agent)
	}
	return nil
}

// snap is one snapshot of the mount and the agent reading it.
type snap struct {
	s    meta.Snapshot
	name string // <time>_<host>_<id>
	host string // its host, as a file name

	mu     sync.Mutex
	reader *client.Agent // nil until first needed
	until  time.Time     // the reader's access ends (zero: never)
	got    time.Time     // when the reader was obtained
}

// snapList is one reading of the vault's snapshots.
type snapList struct {
	snaps  []*snap // by time
	byName map[string]*snap
	hosts  map[string][]*snap // by time
}

// snapshots returns the vault's snapshots, read again when the last reading is older
// than Options.Refresh. A failed reading keeps the last one (and is logged).
func (m *FS) snapshots(ctx context.Context) (*snapList, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.o.Now()
	if m.list != nil && now.Sub(m.listed) < m.o.Refresh {
		return m.list, nil
	}
	snaps, err := m.o.Agent.Snapshots(ctx)
	if err != nil {
		if m.list != nil {
			m.o.Logger.Warn("mount: list snapshots (keeping the last list)", "err", err)
			return m.list, nil
		}
		return nil, err
	}
	m.list, m.listed = m.buildList(snaps), now
	return m.list, nil
}

// buildList names the snapshots and groups them by host. A name two snapshots share
// (same second, host and ID prefix) takes the full ID for both.
func (m *FS) buildList(snaps []meta.Snapshot) *snapList {
	sort.SliceStable(snaps, func(i, j int) bool { return snaps[i].Time.Before(snaps[j].Time) })
	short := func(s meta.Snapshot, id string) string {
		return s.Time.UTC().Format("2006-01-02T15:04:05Z") + "_" + hostName(s.Host) + "_" + id
	}
	count := map[string]int{}
	for _, s := range snaps {
		count[short(s, s.ID.Str())]++
	}
	l := &snapList{byName: map[string]*snap{}, hosts: map[string][]*snap{}}
	seen := map[meta.SnapshotID]bool{}
	for _, s := range snaps {
		if seen[s.ID] {
			continue
		}
		seen[s.ID] = true
		name := short(s, s.ID.Str())
		if count[name] > 1 {
			name = short(s, s.ID.String())
		}
		st := m.byID[s.ID]
		if st == nil {
			st = &snap{s: s, name: name, host: hostName(s.Host)}
			m.byID[s.ID] = st
		}
		st.name = name
		l.snaps = append(l.snaps, st)
		l.byName[name] = st
		l.hosts[st.host] = append(l.hosts[st.host], st)
	}
	for id := range m.byID {
		if !seen[id] { // forgotten: files open in it keep their reader
			delete(m.byID, id)
		}
	}
	return l
}

// hostName turns a snapshot's host into a file name.
func hostName(h string) string {
	h = strings.Map(func(r rune) rune {
		if r == '/' || r == 0 {
			return '_'
		}
		return r
	}, h)
	if h == "" || h == "." || h == ".." {
		return "_" + h
	}
	return h
}

// reader returns the agent that reads s, obtaining it (again) when there is none or
// its access is about to end: within a quarter of its lifetime of its end.
func (m *FS) reader(ctx context.Context, s *snap) (*client.Agent, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := m.o.Now()
	if s.reader != nil && (s.until.IsZero() || now.Before(s.until.Add(-s.until.Sub(s.got)/4))) {
		return s.reader, nil
	}
	ag, until, err := m.o.Reader(ctx, s.s)
	if err != nil {
		if s.reader != nil && now.Before(s.until) {
			m.o.Logger.Warn("mount: renew snapshot access (using the current one until it ends)", "snapshot", s.name, "err", err)
			return s.reader, nil
		}
		m.o.Logger.Warn("mount: snapshot not readable", "snapshot", s.name, "err", err)
		return nil, err
	}
	// NB: the old reader is not closed: files opened through it switch to the new one
	// on their next read (fileHandle.Read).
	s.reader, s.until, s.got = ag, until, now
	return ag, nil
}

// closeReader closes s's reader unless it is base.
func (s *snap) closeReader(base *client.Agent) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reader != nil && s.reader != base {
		s.reader.Close()
	}
	s.reader = nil
}
