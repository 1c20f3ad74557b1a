package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/client/tree"
	"github.com/cofferhq/coffer/meta"
)

// The local agent cache keeps the trees of the last snapshot of each backup set (host and
// paths) so that the next backup compares files against them without downloading the
// parent snapshot's trees. Layout below Config.CacheDir:
//
//	CACHEDIR.TAG                       marks the directory as a cache for backup tools
//	<vault>/trees/<id[:2]>/<id>        a tree chunk, sealed exactly as stored in the cluster
//	<vault>/sets/<set>.json            the last snapshot of one backup set and its trees
//
// <vault> is the vault ID, hex-encoded; <id> a tree chunk ID in hex; <set> the first 16
// bytes of SHA-256(host NUL path NUL path ...) in hex. Trees are content-addressed and
// sealed with the vault's keys: an entry that does not open under the ID it is filed under
// (corrupt, or another vault's of the same name) is deleted and fetched from the cluster
// again. The set record is checked against the cluster's parent snapshot (ID and root tree
// ID); when it is missing or names another snapshot, the trees that are not in the cache
// are fetched and filed as they are needed, so the cache rebuilds itself. After a commit
// the set record names the new snapshot and trees no set record names are removed. A
// cache that cannot be read or written is never an error: the backup logs it and uses the
// cluster.

// cacheTag is the content of CACHEDIR.TAG (https://bford.info/cachedir/).
const cacheTag = "Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by coffer.\n"

// treeCache is the local cache for one Backup call; a nil *treeCache caches nothing.
type treeCache struct {
	a        *Agent
	dir      string // <CacheDir>/<vault>
	setFile  string
	host     string
	paths    []string
	disabled atomic.Bool
	hits     atomic.Int64
	fetched  atomic.Int64
}

// setRecord is the JSON content of a set file.
type setRecord struct {
	Host     string   `json:"host"`
	Paths    []string `json:"paths"`
	Snapshot string   `json:"snapshot"`
	Tree     string   `json:"tree"`
	Trees    []string `json:"trees"`
}

// openTreeCache returns the cache for the backup set (this host, paths), or nil when the
// agent has no cache directory.
func (a *Agent) openTreeCache(paths []string) *treeCache {
	if a.cfg.CacheDir == "" {
		return nil
	}
	h := sha256.New()
	h.Write([]byte(a.cfg.Host))
	for _, p := range paths {
		h.Write([]byte{0})
		h.Write([]byte(p))
	}
	set := hex.EncodeToString(h.Sum(nil)[:16])
	dir := filepath.Join(a.cfg.CacheDir, hex.EncodeToString([]byte(a.vault.ID)))
	c := &treeCache{a: a, dir: dir, setFile: filepath.Join(dir, "sets", set+".json"), host: a.cfg.Host, paths: paths}
	if err := os.MkdirAll(filepath.Join(dir, "sets"), 0o700); err != nil {
		c.fail("create cache directory", err)
		return c
	}
	tag := filepath.Join(a.cfg.CacheDir, "CACHEDIR.TAG")
	if _, err := os.Stat(tag); errors.Is(err, fs.ErrNotExist) {
		_ = os.WriteFile(tag, []byte(cacheTag), 0o644) // best effort: only a hint to other tools
	}
	return c
}

func (c *treeCache) fail(what string, err error) {
	if !c.disabled.Swap(true) {
		c.a.cfg.Logger.Warn("local cache disabled for this backup", "dir", c.dir, "op", what, "err", err)
	}
}

// checkParent compares the set record with the cluster's parent snapshot and logs whether
// the cache is current; a missing or stale cache is refilled by loadTree as it goes.
func (c *treeCache) checkParent(parent *meta.Snapshot) {
	if c == nil || c.disabled.Load() || parent == nil {
		return
	}
	rec, err := c.readRecord()
	switch {
	case errors.Is(err, fs.ErrNotExist):
		c.a.cfg.Logger.Info("local cache has no record of this backup set; rebuilding from the cluster", "parent", parent.ID.Str())
	case err != nil:
		c.a.cfg.Logger.Warn("local cache record unreadable; rebuilding from the cluster", "file", c.setFile, "err", err)
	case rec.Snapshot != parent.ID.String() || rec.Tree != parent.Tree.String():
		c.a.cfg.Logger.Info("local cache is stale; rebuilding from the cluster", "cached", rec.Snapshot, "parent", parent.ID.Str())
	default:
		c.a.cfg.Logger.Debug("local cache is current", "parent", parent.ID.Str())
	}
}

func (c *treeCache) readRecord() (setRecord, error) {
	var rec setRecord
	b, err := os.ReadFile(c.setFile)
	if err != nil {
		return rec, err
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, fmt.Errorf("%s: %w", c.setFile, err)
	}
	return rec, nil
}

func (c *treeCache) treePath(id chunk.ID) string {
	h := id.String()
	return filepath.Join(c.dir, "trees", h[:2], h)
}

// get returns the cached tree id, or nil.
func (c *treeCache) get(id chunk.ID) *tree.Tree {
	if c == nil || c.disabled.Load() {
		return nil
	}
	p := c.treePath(id)
	sealed, err := os.ReadFile(p)
	if err != nil {
		return nil
	}
	plain, err := c.a.keys.Open(nil, id, sealed)
	if err == nil {
		var t *tree.Tree
		if t, err = tree.Decode(plain); err == nil {
			c.hits.Add(1)
			return t
		}
	}
	c.a.cfg.Logger.Warn("local cache entry unusable; removed", "file", p, "err", err)
	_ = os.Remove(p)
	return nil
}

// putSealed files a sealed tree chunk.
func (c *treeCache) putSealed(id chunk.ID, sealed []byte) {
	if c == nil || c.disabled.Load() {
		return
	}
	p := c.treePath(id)
	if _, err := os.Stat(p); err == nil {
		return
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		c.fail("create tree directory", err)
		return
	}
	if err := writeFileAtomic(p, sealed); err != nil {
		c.fail("write tree", err)
	}
}

// putPlain seals and files an encoded tree with ID id.
func (c *treeCache) putPlain(id chunk.ID, enc []byte) {
	if c == nil || c.disabled.Load() {
		return
	}
	if _, err := os.Stat(c.treePath(id)); err == nil {
		return
	}
	sealed, err := c.a.keys.Seal(nil, id, enc)
	if err != nil {
		c.fail("seal tree", err)
		return
	}
	c.putSealed(id, sealed)
}

// commit records snap as the set's last snapshot with its trees, then removes the trees
// that no set record names.
func (c *treeCache) commit(snap meta.Snapshot, trees []chunk.ID) {
	if c == nil || c.disabled.Load() {
		return
	}
	rec := setRecord{Host: c.host, Paths: c.paths, Snapshot: snap.ID.String(), Tree: snap.Tree.String()}
	for _, id := range trees {
		rec.Trees = append(rec.Trees, id.String())
	}
	b, err := json.Marshal(rec)
	if err == nil {
		err = writeFileAtomic(c.setFile, b)
	}
	if err != nil {
		c.fail("write set record", err)
		return
	}
	keep := make(map[string]bool)
	sets, err := os.ReadDir(filepath.Join(c.dir, "sets"))
	if err != nil {
		c.fail("list set records", err)
		return
	}
	for _, e := range sets {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(c.dir, "sets", e.Name()))
		var r setRecord
		if err == nil {
			err = json.Unmarshal(b, &r)
		}
		if err != nil {
			c.a.cfg.Logger.Warn("local cache: unreadable set record; not pruning", "file", e.Name(), "err", err)
			return
		}
		for _, t := range r.Trees {
			keep[t] = true
		}
	}
	removed := 0
	_ = filepath.WalkDir(filepath.Join(c.dir, "trees"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if !keep[d.Name()] {
			if os.Remove(p) == nil {
				removed++
			}
		}
		return nil
	})
	c.a.cfg.Logger.Debug("local cache updated", "snapshot", snap.ID.Str(), "trees", len(trees),
		"hits", c.hits.Load(), "fetched", c.fetched.Load(), "pruned", removed)
}

// writeFileAtomic writes b to p through a temporary file and a rename, so readers see
// the old content or the new, never a part.
func writeFileAtomic(p string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-*")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), p)
	}
	if err != nil {
		_ = os.Remove(f.Name())
	}
	return err
}

// loadTree returns the tree id for comparison with the parent: from the local cache when
// it holds it, else from the cluster (and then files it in the cache).
func (b *backup) loadTree(ctx context.Context, id chunk.ID) (*tree.Tree, error) {
	if t := b.cache.get(id); t != nil {
		return t, nil
	}
	a := b.a
	sealed, err := a.cfg.Chunks.Get(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("client: tree %s: %w", id.Str(), err)
	}
	plain, err := a.keys.Open(nil, id, sealed)
	if err != nil {
		return nil, fmt.Errorf("client: tree %s: %w", id.Str(), err)
	}
	t, err := tree.Decode(plain)
	if err != nil {
		return nil, fmt.Errorf("client: tree %s: %w", id.Str(), err)
	}
	if b.cache != nil {
		b.cache.fetched.Add(1)
		b.cache.putSealed(id, sealed)
	}
	return t, nil
}
