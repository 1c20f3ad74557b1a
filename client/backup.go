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
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/reflist"
	"github.com/cofferhq/coffer/client/crypt"
	"github.com/cofferhq/coffer/client/snapshot"
	"github.com/cofferhq/coffer/client/tree"
	"github.com/cofferhq/coffer/client/upload"
	"github.com/cofferhq/coffer/meta"
)

// BackupOptions says what to back up.
type BackupOptions struct {
	Paths    []string // files or directories; made absolute and cleaned
	Tags     []string
	Progress func(Progress) // optional; called from one goroutine, never concurrently
	// Parent names the snapshot to compare against (a reference FindSnapshot accepts).
	// Empty means the latest snapshot of this host with the same paths.
	Parent string
	// Force reads every file, even those whose metadata equals the parent's entry.
	Force bool
	// OnOpen, when set, is called (from any worker goroutine, concurrently) before a
	// file's content is opened for reading. Unchanged files are never opened.
	OnOpen func(path string)
	// Exclude, when set, leaves out every entry below a path argument for which it
	// returns true (given the entry's absolute path), and everything beneath it; see
	// ExcludeMatcher. Called from several goroutines.
	Exclude func(path string) bool
	// Compression is the policy new file chunks are sealed with (crypt.Compression; the
	// zero value is auto). Trees are always sealed with auto. Readers need no setting:
	// each envelope names its codec.
	Compression crypt.Compression
}

// Skipped is a path left out of a snapshot, with the reason.
type Skipped struct {
	Path string
	Err  string
}

// BackupResult is a committed snapshot and the paths it left out.
type BackupResult struct {
	Snapshot meta.Snapshot
	Skipped  []Skipped
	// BytesRead counts the bytes read from the sources (unchanged files and blocks that
	// were not read, and holes, are not counted).
	BytesRead int64
	// Blocks is filled by BackupBlock.
	Blocks BlockStats
	// PlainAdded is the plaintext size of the chunks this backup stored (the sealed size
	// is Snapshot.Stats.BytesAdded): their ratio is the new data's compression ratio.
	PlainAdded int64
}

// Status values of SnapshotStats.Status.
const (
	StatusCompleted       = "completed"
	StatusPartiallyFailed = "partially failed"
)

// Backup walks opts.Paths, uploads new content and trees, and commits a snapshot.
//
// Files, directories, symlinks, hardlinks (content stored once per device and inode),
// FIFOs, sockets and device nodes (recorded, never read) are captured with their metadata.
// Sparse holes (SEEK_DATA/SEEK_HOLE) and all-zero chunks are recorded as hole extents and
// not stored. Files and directories that cannot be read are left out and listed in
// Skipped; the snapshot's status is then "partially failed". A path argument that does
// not exist, or two arguments with the same base name, fail before anything is uploaded.
//
// Stats: FilesNew counts files whose path is not in the parent snapshot (the latest one
// of the same host and paths), FilesUnmodified those whose content list equals the
// parent's entry, FilesChanged the rest. BytesAdded and ChunksAdded count the sealed
// chunks this backup uploaded (data, trees and reference lists).
func (a *Agent) Backup(ctx context.Context, opts BackupOptions) (BackupResult, error) {
	if err := a.check(); err != nil {
		return BackupResult{}, err
	}
	start := a.cfg.Now()
	roots, err := resolveRoots(opts.Paths)
	if err != nil {
		return BackupResult{}, err
	}
	var snapID meta.SnapshotID
	if _, err := io.ReadFull(a.cfg.Rand, snapID[:]); err != nil {
		return BackupResult{}, fmt.Errorf("client: backup: snapshot id: %w", err)
	}
	paths := make([]string, len(roots))
	for i, r := range roots {
		paths[i] = r.abs
	}
	slices.Sort(paths)
	parent, err := a.resolveParent(ctx, opts.Parent, paths)
	if err != nil {
		return BackupResult{}, err
	}

	ci := commitInfo{id: snapID, start: start, paths: paths, tags: opts.Tags, parent: parent}
	res, err := a.backupOnce(ctx, opts, roots, ci)
	attempts := 1
	for ; attempts < maxCommitAttempts && errors.Is(err, meta.ErrMissingChunks); attempts++ {
		// The commit check found chunks this backup references not stored: a garbage
		// collection swept them (the agent was paused past the grace period, or reused a
		// forgotten parent's chunks), or the dedup check's Has said yes for chunks the
		// meta leader's Has does not find (a holder paused between the two, a partial
		// stripe of a failed put). Asking Has again can say yes again, so run again
		// without the parent and upload every chunk without the dedup skip: Put is
		// first-write-wins and completes a stripe's missing shards, so the commit check
		// then passes.
		if attempts > 1 {
			if werr := waitBackoff(ctx, time.Duration(attempts-1)*commitRetryBackoff); werr != nil {
				return BackupResult{}, fmt.Errorf("client: backup: %w (waiting to retry after: %w)", werr, err)
			}
		}
		a.cfg.Logger.Warn("commit refused for missing chunks; backing up again without the parent snapshot, uploading every chunk",
			"snapshot", snapID.Str(), "attempt", attempts+1, "err", err)
		ci.parent = nil
		res, err = a.WithChunks(forcePutStore{a.cfg.Chunks}).backupOnce(ctx, opts, roots, ci)
	}
	if errors.Is(err, meta.ErrMissingChunks) && attempts > 1 {
		err = fmt.Errorf("%w (refused at all %d commit attempts; the retries uploaded every chunk without the dedup check)", err, attempts)
	}
	return res, err
}

// maxCommitAttempts bounds the commits of one backup refused for missing chunks: the
// first, then retries that upload every chunk (Backup).
const maxCommitAttempts = 3

// commitRetryBackoff is the wait before the third commit attempt (twice it before a
// fourth, were there one): time for a paused holder to come back.
const commitRetryBackoff = time.Second

// waitBackoff waits d or until ctx ends.
func waitBackoff(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// forcePutStore answers Has with "not stored" for every chunk, so that a backup pass
// through it uploads every chunk it references (the upload pipeline and the reference
// list skip what Has says is stored).
type forcePutStore struct{ chunkstore.Store }

func (s forcePutStore) Has(ctx context.Context, ids []chunk.ID) ([]bool, error) {
	return make([]bool, len(ids)), nil
}

// backupOnce runs one backup pass and commits it; ci.root is filled in here.
func (a *Agent) backupOnce(ctx context.Context, opts BackupOptions, roots []root, ci commitInfo) (BackupResult, error) {
	parent := ci.parent
	b := &backup{a: a, opts: opts, refs: make(map[chunk.ID]struct{}), sealer: a.sealer(opts.Compression)}
	b.links = make(map[inodeKey]*linkGroup)
	b.openCache(ci.paths, parent)
	defer b.cache.Close()
	var parentTree *tree.Tree
	var parentTreeID chunk.ID
	var err error
	if parent != nil {
		if parentTree, err = b.trees.Load(ctx, parent.Tree); err != nil {
			a.cfg.Logger.Warn("parent snapshot tree unreadable; counting every file as new", "parent", parent.ID.Str(), "err", err)
			parentTree, parent = nil, nil
		} else {
			parentTreeID = parent.Tree
		}
	}

	stopScan := b.startScan(ctx, opts.Progress != nil, roots)
	stopProgress := b.startProgress(opts.Progress)
	stopProgress = sequence(stopScan, stopProgress)
	rootID, upStats, err := b.run(ctx, roots, parentTree, parentTreeID)
	if err != nil {
		stopProgress()
		return BackupResult{}, err
	}
	b.walked.Store(true)

	ci.root, ci.parent = rootID, parent
	return b.commit(ctx, ci, upStats, stopProgress)
}

// openCache opens the local tree cache of the backup set (this host, paths), logs
// whether it is current for parent, and reads b's trees through it. b.cache.Close must
// be called when the backup ends.
func (b *backup) openCache(paths []string, parent *meta.Snapshot) {
	a := b.a
	b.cache = snapshot.OpenCache(snapshot.CacheConfig{Dir: a.cfg.CacheDir, Vault: a.vault.ID, Host: a.cfg.Host, Paths: paths,
		Keys: a.keys, Logger: a.cfg.Logger, Now: a.cfg.Now})
	b.cache.CheckParent(parent)
	b.trees = a.trees.WithCache(b.cache)
}

// commitInfo is what commit needs besides the backup's own state.
type commitInfo struct {
	id     meta.SnapshotID
	start  time.Time
	paths  []string
	tags   []string
	root   chunk.ID
	parent *meta.Snapshot
}

// commit stores the reference list of b.refs, commits the snapshot and updates the local
// cache. stopProgress is called once the last upload is done.
func (b *backup) commit(ctx context.Context, ci commitInfo, upStats upload.Stats, stopProgress func()) (BackupResult, error) {
	a := b.a
	// Reference list: every data and tree chunk the snapshot needs.
	ids := make([]chunk.ID, 0, len(b.refs))
	for id := range b.refs {
		ids = append(ids, id)
	}
	refChunks := reflist.Encode(ids)
	refIDs := make([]chunk.ID, len(refChunks))
	for i, c := range refChunks {
		refIDs[i] = c.ID
	}
	have, err := a.cfg.Chunks.Has(ctx, refIDs)
	if err != nil {
		stopProgress()
		return BackupResult{}, fmt.Errorf("client: backup: reference list: %w", err)
	}
	var missing []chunkstore.Chunk
	for i, c := range refChunks {
		if !have[i] {
			missing = append(missing, chunkstore.Chunk(c))
			upStats.ChunksAdded++
			upStats.BytesAdded += int64(len(c.Data))
			upStats.PlainAdded += int64(len(c.Data))
		}
	}
	if len(missing) > 0 {
		if err := a.cfg.Chunks.Put(ctx, missing); err != nil {
			stopProgress()
			return BackupResult{}, fmt.Errorf("client: backup: put reference list: %w", err)
		}
	}
	b.bytesAdded.Store(upStats.BytesAdded)
	stopProgress()

	slices.SortFunc(b.skipped, func(x, y Skipped) int { return strings.Compare(x.Path, y.Path) })
	stats := meta.SnapshotStats{
		FilesNew:        b.filesNew.Load(),
		FilesChanged:    b.filesChanged.Load(),
		FilesUnmodified: b.filesUnmodified.Load(),
		DirsTotal:       b.dirs.Load(),
		BytesProcessed:  b.bytes.Load(),
		BytesAdded:      upStats.BytesAdded,
		ChunksAdded:     upStats.ChunksAdded,
		DurationS:       a.cfg.Now().Sub(ci.start).Seconds(),
		Status:          StatusCompleted,
		Skipped:         int64(len(b.skipped)),
	}
	if len(b.skipped) > 0 {
		stats.Status = StatusPartiallyFailed
	}
	snap := meta.Snapshot{
		ID:    ci.id,
		Vault: a.vault.ID,
		Start: ci.start,
		Host:  a.cfg.Host,
		Paths: ci.paths,
		Tags:  slices.Clone(ci.tags),
		Tree:  ci.root,
		Refs:  refIDs,
		Stats: stats,
	}
	if ci.parent != nil {
		p := ci.parent.ID
		snap.Parent = &p
	}
	committed, err := a.cfg.Meta.CommitSnapshot(ctx, snap)
	if errors.Is(err, meta.ErrExists) {
		// NB: the ID is this backup's own random one. A meta client that retried the
		// commit after its first attempt went through (the leader crashed or stalled
		// before answering) hears ErrExists for it: the snapshot is there, and if it
		// holds this tree it is this backup's.
		if got, gerr := a.cfg.Meta.GetSnapshot(ctx, a.vault.ID, ci.id); gerr == nil && got.Tree == snap.Tree {
			a.cfg.Logger.Info("commit retried after it went through: the snapshot is there", "snapshot", ci.id.Str())
			committed, err = got, nil
		}
	}
	if err != nil {
		return BackupResult{}, fmt.Errorf("client: backup: commit snapshot %s: %w", ci.id.Str(), err)
	}
	b.cache.Commit(committed, b.treeIDs)
	a.cfg.Logger.Info("backup committed", "snapshot", ci.id.Str(), "files", b.files.Load(), "bytes", stats.BytesProcessed,
		"bytes_added", stats.BytesAdded, "chunks_added", stats.ChunksAdded, "skipped", stats.Skipped)
	return BackupResult{Snapshot: committed, Skipped: b.skipped, BytesRead: b.bytesRead.Load(), PlainAdded: upStats.PlainAdded}, nil
}

// resolveParent returns the snapshot named by ref, or with ref empty the latest one of
// this host with the same paths, or nil when there is none.
func (a *Agent) resolveParent(ctx context.Context, ref string, paths []string) (*meta.Snapshot, error) {
	if ref == "" {
		return a.findParent(ctx, paths)
	}
	s, err := a.FindSnapshot(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("client: backup: parent: %w", err)
	}
	return &s, nil
}

// findParent returns the latest snapshot of this host with the same paths, or nil.
func (a *Agent) findParent(ctx context.Context, paths []string) (*meta.Snapshot, error) {
	snaps, err := a.cfg.Meta.ListSnapshots(ctx, a.vault.ID)
	if err != nil {
		return nil, fmt.Errorf("client: backup: list snapshots: %w", err)
	}
	var parent *meta.Snapshot
	for i := range snaps {
		s := &snaps[i]
		if s.Host != a.cfg.Host || !slices.Equal(s.Paths, paths) {
			continue
		}
		if parent == nil || !s.Time.Before(parent.Time) {
			parent = s
		}
	}
	return parent, nil
}

// root is one backup path argument.
type root struct {
	abs  string // cleaned absolute path
	name string // entry name in the root tree
	fi   fs.FileInfo
}

func resolveRoots(args []string) ([]root, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf("%w: backup: no paths given", ErrInvalid)
	}
	roots := make([]root, 0, len(args))
	for _, p := range args {
		if p == "" {
			return nil, fmt.Errorf("%w: backup: empty path", ErrInvalid)
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, fmt.Errorf("%w: backup: %s: %v", ErrInvalid, p, err)
		}
		fi, err := os.Lstat(abs)
		if err != nil {
			return nil, fmt.Errorf("%w: backup: %w", ErrInvalid, err)
		}
		name := filepath.Base(abs)
		if abs == "/" {
			if len(args) > 1 {
				return nil, fmt.Errorf("%w: backup: \"/\" must be the only path", ErrInvalid)
			}
			if !fi.IsDir() {
				return nil, fmt.Errorf("%w: backup: \"/\" is not a directory", ErrInvalid)
			}
			name = ""
		}
		roots = append(roots, root{abs: abs, name: name, fi: fi})
	}
	sort.Slice(roots, func(i, j int) bool { return roots[i].name < roots[j].name })
	for i := 1; i < len(roots); i++ {
		if roots[i].name == roots[i-1].name {
			return nil, fmt.Errorf("%w: backup: %s and %s would both be stored as %q at the top of the snapshot; back them up separately or from their common parent",
				ErrInvalid, roots[i-1].abs, roots[i].abs, roots[i].name)
		}
	}
	return roots, nil
}

// sealer returns what file chunks are sealed with under compression policy p.
func (a *Agent) sealer(p crypt.Compression) upload.Sealer {
	if p == crypt.CompressionAuto {
		return a.keys
	}
	return a.keys.WithCompression(p)
}

// backup is the state of one Backup call.
type backup struct {
	a      *Agent
	opts   BackupOptions
	sealer upload.Sealer // a.keys, or a.keys under opts' compression policy
	up     *upload.Uploader
	cache  *snapshot.Cache // nil: no local cache
	trees  *snapshot.Trees // reads through cache

	files, dirs, bytes                      atomic.Int64
	filesNew, filesChanged, filesUnmodified atomic.Int64
	bytesAdded                              atomic.Int64 // final figure, set at the end
	bytesRead                               atomic.Int64
	totalFiles, totalBytes                  atomic.Int64 // from the progress scan
	scanDone                                atomic.Bool
	walked                                  atomic.Bool // every file is processed: the totals are known
	upPtr                                   atomic.Pointer[upload.Uploader]
	current                                 atomic.Pointer[string]

	// walkers runs the walk's goroutines; walkSem holds a token per goroutine it runs
	// beyond the first, so a directory is walked in a new goroutine only when one is free.
	walkers *errgroup.Group
	walkSem chan struct{}

	linksMu sync.Mutex // guards links; each group has its own lock
	links   map[inodeKey]*linkGroup

	mu      sync.Mutex // guards refs, skipped, rootID and treeIDs
	refs    map[chunk.ID]struct{}
	skipped []Skipped
	rootID  chunk.ID
	treeIDs []chunk.ID // every tree of the new snapshot, for the local cache
}
