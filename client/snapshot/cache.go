package snapshot

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/client/tree"
	"github.com/cofferhq/coffer/meta"
)

// The local tree cache keeps the trees of the last snapshot of each backup set (host and
// paths) so that the next backup compares files against them without downloading the
// parent snapshot's trees. Its directory layout and pack file format are in FORMAT.md.
//
// A backup opens its set's pack once and reads each tree it needs with one pread; it
// writes the next pack as it goes, into a temporary file beside it (every tree it reads
// from the old pack or the cluster, and every tree it encodes), and after the commit adds
// the index of the new snapshot's trees and renames it over the old pack: a pack is
// replaced whole, never changed in place. Trees are content-addressed and sealed with the
// vault's keys: a pack whose trailer or index does not check out is ignored, and an entry
// that does not open under the ID it is filed under (corrupt, or another vault's of the
// same name) is dropped for this backup and fetched from the cluster again. The pack's
// record is compared with the cluster's parent snapshot only to log whether the cache is
// current: trees are used by ID whichever snapshot the pack belongs to, and those missing
// from it are fetched as they are needed, so the cache rebuilds itself. A cache that
// cannot be read or written is never an error: the backup logs it and uses the cluster.
//
// Restores and listings of a set's snapshots read its pack too, through OpenCacheReader:
// the same lookups and checks, nothing written.

// cacheTag is the content of CACHEDIR.TAG (https://bford.info/cachedir/).
const cacheTag = "Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by coffer.\n"

// staleTempAge is how old a temporary file in the sets directory must be before a
// commit removes it as left by a crashed backup.
const staleTempAge = 24 * time.Hour

// CacheConfig says where a backup set's cache lives and whose trees it holds.
type CacheConfig struct {
	Dir    string       // the agent's cache directory; empty means no cache
	Vault  meta.VaultID // the trees' vault: each vault has its own subdirectory
	Host   string       // the backup set: this host ...
	Paths  []string     // ... and these paths (sorted, as the snapshot records them)
	Keys   Keys         // the vault's keys: entries are opened and sealed with them
	Logger *slog.Logger // required
	Now    func() time.Time
}

// Cache is the local tree cache of one backup set for one backup; a nil *Cache caches
// nothing. Its methods are safe for concurrent use. Close must be called when the
// backup ends.
type Cache struct {
	cfg      CacheConfig
	dir      string // <Dir>/<vault>
	setsDir  string
	packFile string
	disabled atomic.Bool
	readOnly bool // OpenCacheReader: serves the set's pack, files nothing
	hits     atomic.Int64
	fetches  atomic.Int64

	old *pack // the set's pack as found when the backup began, or nil

	mu struct {
		sync.Mutex
		dropped map[chunk.ID]bool // old pack entries that did not open
		w       *packWriter       // the next pack, created on the first tree filed
		closed  bool
	}
}

// OpenCache returns the cache of the backup set cfg names, or nil when cfg.Dir is
// empty. It opens the set's pack when there is a usable one; a cache directory that
// cannot be created gives a cache that is disabled (and says so in the log).
func OpenCache(cfg CacheConfig) *Cache {
	if cfg.Dir == "" {
		return nil
	}
	c := newCache(cfg)
	if err := os.MkdirAll(c.setsDir, 0o700); err != nil {
		c.fail("create cache directory", err)
		return c
	}
	tag := filepath.Join(cfg.Dir, "CACHEDIR.TAG")
	if _, err := os.Stat(tag); errors.Is(err, fs.ErrNotExist) {
		_ = os.WriteFile(tag, []byte(cacheTag), 0o644) // best effort: only a hint to other tools
	}
	p, err := openPack(c.packFile, packReadAll)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		cfg.Logger.Warn("local cache pack unusable; rebuilding from the cluster", "file", c.packFile, "err", err)
	default:
		c.old = p
	}
	return c
}

// OpenCacheReader returns the pack of the backup set cfg names for reading only, for a
// restore or a listing of one of the set's snapshots: its trees are served by ID (each
// opened and verified under its ID, as for a backup; an entry that does not open is
// fetched from the cluster), nothing is filed and no file or directory is created or
// changed. It returns nil, a cache of nothing, when cfg.Dir is empty or the set has no
// usable pack. Close releases the pack.
//
// NB: the pack holds the set's last backed-up snapshot's trees; for an older snapshot
// the directories that did not change since are found there, the others are fetched.
func OpenCacheReader(cfg CacheConfig) *Cache {
	if cfg.Dir == "" {
		return nil
	}
	c := newCache(cfg)
	c.readOnly = true
	// NB: read one tree at a time (pread), not whole: a restore's memory must not grow
	// with the pack, which for a million files is tens of megabytes.
	p, err := openPack(c.packFile, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		cfg.Logger.Info("local cache pack unusable; reading trees from the cluster", "file", c.packFile, "err", err)
		return nil
	}
	c.old = p
	return c
}

// newCache returns the cache of the backup set cfg names, with nothing opened.
func newCache(cfg CacheConfig) *Cache {
	h := sha256.New()
	h.Write([]byte(cfg.Host))
	for _, p := range cfg.Paths {
		h.Write([]byte{0})
		h.Write([]byte(p))
	}
	set := hex.EncodeToString(h.Sum(nil)[:16])
	dir := filepath.Join(cfg.Dir, hex.EncodeToString([]byte(cfg.Vault)))
	setsDir := filepath.Join(dir, "sets")
	return &Cache{cfg: cfg, dir: dir, setsDir: setsDir, packFile: filepath.Join(setsDir, set+".pack")}
}

func (c *Cache) fail(what string, err error) {
	if !c.disabled.Swap(true) {
		c.cfg.Logger.Warn("local cache disabled for this backup", "dir", c.dir, "op", what, "err", err)
	}
}

// CheckParent compares the pack's record with the cluster's parent snapshot and logs
// whether the cache is current; a missing or stale cache is refilled by Trees.Load as
// it goes.
func (c *Cache) CheckParent(parent *meta.Snapshot) {
	if c == nil || c.disabled.Load() || parent == nil {
		return
	}
	log := c.cfg.Logger
	switch {
	case c.old == nil:
		log.Info("local cache has no pack of this backup set; rebuilding from the cluster", "parent", parent.ID.Str())
	case c.old.rec.Snapshot != parent.ID.String() || c.old.rec.Tree != parent.Tree.String():
		log.Info("local cache is stale; rebuilding from the cluster", "cached", c.old.rec.Snapshot, "parent", parent.ID.Str())
	default:
		log.Debug("local cache is current", "parent", parent.ID.Str())
	}
}

// get returns the cached tree id and its sealed size, or nil. A tree it returns is also
// filed in the next pack.
func (c *Cache) get(id chunk.ID) (*tree.Tree, int) {
	if c == nil || c.disabled.Load() || c.old == nil {
		return nil, 0
	}
	c.mu.Lock()
	dropped := c.mu.dropped[id]
	c.mu.Unlock()
	if dropped {
		return nil, 0
	}
	sealed, err := c.old.read(id)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0
	}
	if err == nil {
		var t *tree.Tree
		if t, err = openTree(c.cfg.Keys, id, sealed); err == nil {
			c.hits.Add(1)
			c.putSealed(id, sealed)
			return t, len(sealed)
		}
	}
	c.cfg.Logger.Warn("local cache entry unusable; fetching it from the cluster", "file", c.packFile, "tree", id.Str(), "err", err)
	c.mu.Lock()
	if c.mu.dropped == nil {
		c.mu.dropped = make(map[chunk.ID]bool)
	}
	c.mu.dropped[id] = true
	c.mu.Unlock()
	return nil, 0
}

// fetched files tree id, fetched from the cluster, in the next pack.
func (c *Cache) fetched(id chunk.ID, sealed []byte) {
	if c == nil {
		return
	}
	c.fetches.Add(1)
	c.putSealed(id, sealed)
}

// putSealed files a sealed tree chunk in the next pack (nothing for a reader).
func (c *Cache) putSealed(id chunk.ID, sealed []byte) {
	if c == nil || c.disabled.Load() || c.readOnly {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.closed {
		return
	}
	if c.mu.w == nil {
		w, err := newPackWriter(c.setsDir)
		if err != nil {
			c.fail("create pack", err)
			return
		}
		c.mu.w = w
	}
	if err := c.mu.w.add(id, sealed); err != nil {
		c.fail("write pack", err)
	}
}

// putPlain seals and files an encoded tree with ID id.
func (c *Cache) putPlain(id chunk.ID, enc []byte) {
	if c == nil || c.disabled.Load() || c.readOnly {
		return
	}
	c.mu.Lock()
	filed := c.mu.w != nil && c.mu.w.has(id)
	c.mu.Unlock()
	if filed {
		return
	}
	sealed, err := c.cfg.Keys.Seal(nil, id, enc)
	if err != nil {
		c.fail("seal tree", err)
		return
	}
	c.putSealed(id, sealed)
}

// Commit finishes the next pack with the index of trees (the trees of snap, committed)
// and renames it over the set's pack, then removes what the layout no longer uses. The
// cache files nothing after it.
func (c *Cache) Commit(snap meta.Snapshot, trees []chunk.ID) {
	if c == nil || c.disabled.Load() || c.readOnly {
		return
	}
	c.mu.Lock()
	w := c.mu.w
	c.mu.w, c.mu.closed = nil, true // the pack is final: nothing more is filed
	c.mu.Unlock()
	if w == nil {
		return
	}
	rec := setRecord{Host: c.cfg.Host, Paths: c.cfg.Paths, Snapshot: snap.ID.String(), Tree: snap.Tree.String()}
	missing, err := w.finish(c.packFile, rec, trees)
	if err != nil {
		c.fail("write pack", err)
		return
	}
	removed := c.removeUnused()
	c.cfg.Logger.Debug("local cache updated", "snapshot", snap.ID.Str(), "trees", len(trees),
		"hits", c.hits.Load(), "fetched", c.fetches.Load(), "not_filed", missing, "removed", removed)
}

// removeUnused removes the layout before packs and temporary files left by crashed
// backups, and returns how many files it removed. Failures are ignored: they cost only
// disk space.
func (c *Cache) removeUnused() int {
	removed := 0
	legacy := filepath.Join(c.dir, "trees")
	if _, err := os.Stat(legacy); err == nil && os.RemoveAll(legacy) == nil {
		removed++
	}
	ents, err := os.ReadDir(c.setsDir)
	if err != nil {
		return removed
	}
	cutoff := c.cfg.Now().Add(-staleTempAge)
	for _, e := range ents {
		name := e.Name()
		old := strings.HasSuffix(name, ".json")
		if !old && strings.HasPrefix(name, ".tmp-") {
			fi, err := e.Info()
			old = err == nil && fi.ModTime().Before(cutoff)
		}
		if old && os.Remove(filepath.Join(c.setsDir, name)) == nil {
			removed++
		}
	}
	return removed
}

// Close releases the old pack and removes the next one unless Commit renamed it. It is
// safe to call more than once; the cache files nothing after it.
func (c *Cache) Close() {
	if c == nil {
		return
	}
	c.mu.Lock()
	w := c.mu.w
	c.mu.w, c.mu.closed = nil, true
	c.mu.Unlock()
	if w != nil {
		w.abort()
	}
	if c.old != nil {
		c.old.close()
	}
}
