package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/client/tree"
	"github.com/cofferhq/coffer/meta"
)

// The local agent cache keeps the trees of the last snapshot of each backup set (host and
// paths) so that the next backup compares files against them without downloading the
// parent snapshot's trees. Layout below Config.CacheDir:
//
//	CACHEDIR.TAG                 marks the directory as a cache for backup tools
//	<vault>/sets/<set>.pack      the trees of one backup set's last snapshot, with an index
//
// <vault> is the vault ID, hex-encoded; <set> the first 16 bytes of
// SHA-256(host NUL path NUL path ...) in hex. A pack file is (integers big-endian):
//
//	"CFTPACK1"                                magic
//	sealed tree chunks, back to back          each exactly as stored in the cluster
//	index: count × (ID [32] ‖ offset u64 ‖ length u32), sorted by ID, IDs unique
//	record: JSON {host, paths, snapshot, tree}: the snapshot the pack belongs to
//	trailer: index offset u64 ‖ count u32 ‖ record length u32 ‖
//	         SHA-256(index ‖ record) [32] ‖ "CFTPACK1"
//
// Bytes between the magic and the index that no index entry names are allowed (trees a
// backup read but its snapshot does not use). A backup opens its set's pack once and
// reads each tree it needs with one pread; it writes the next pack as it goes, into a
// temporary file beside it (every tree it reads from the old pack or the cluster, and
// every tree it encodes), and after the commit adds the index of the new snapshot's
// trees and renames it over the old pack: a pack is replaced whole, never changed in
// place. Trees are content-addressed and sealed with the vault's keys: a pack whose
// trailer or index does not check out is ignored, and an entry that does not open under
// the ID it is filed under (corrupt, or another vault's of the same name) is dropped for
// this backup and fetched from the cluster again. The pack's record is compared with the
// cluster's parent snapshot only to log whether the cache is current: trees are used by
// ID whichever snapshot the pack belongs to, and those missing from it are fetched as
// they are needed, so the cache rebuilds itself. A cache that cannot be read or written
// is never an error: the backup logs it and uses the cluster. The layout before packs
// (<vault>/trees/xx/<id>, one file per tree, and <vault>/sets/<set>.json) is removed by
// the first commit that writes a pack; temporary files older than a day (a crashed
// backup's) are removed by any commit.

// cacheTag is the content of CACHEDIR.TAG (https://bford.info/cachedir/).
const cacheTag = "Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by coffer.\n"

// Pack file constants; see the layout above.
const (
	packMagic       = "CFTPACK1"
	packEntrySize   = chunk.Size + 8 + 4
	packTrailerSize = 8 + 4 + 4 + sha256.Size + len(packMagic)
	// packMaxRecord bounds the JSON record (host and paths) a pack may carry.
	packMaxRecord = 1 << 20
	// packReadAll is the largest pack read into memory whole when it is opened (one
	// read instead of one per tree); a larger one is read one tree at a time.
	packReadAll = 64 << 20
	// staleTempAge is how old a temporary file in the sets directory must be before a
	// commit removes it as left by a crashed backup.
	staleTempAge = 24 * time.Hour
)

// treeCache is the local cache for one Backup call; a nil *treeCache caches nothing.
// Its methods are safe for concurrent use. close must be called when the backup ends.
type treeCache struct {
	a        *Agent
	dir      string // <CacheDir>/<vault>
	setsDir  string
	packFile string
	host     string
	paths    []string
	disabled atomic.Bool
	hits     atomic.Int64
	fetched  atomic.Int64

	old *pack // the set's pack as found when the backup began, or nil

	mu struct {
		sync.Mutex
		dropped map[chunk.ID]bool // old pack entries that did not open
		w       *packWriter       // the next pack, created on the first tree filed
		closed  bool
	}
}

// setRecord is the JSON record of a pack: the snapshot whose trees it indexes.
type setRecord struct {
	Host     string   `json:"host"`
	Paths    []string `json:"paths"`
	Snapshot string   `json:"snapshot"`
	Tree     string   `json:"tree"`
}

// openTreeCache returns the cache for the backup set (this host, paths), or nil when the
// agent has no cache directory. It opens the set's pack when there is a usable one.
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
	setsDir := filepath.Join(dir, "sets")
	c := &treeCache{a: a, dir: dir, setsDir: setsDir, packFile: filepath.Join(setsDir, set+".pack"), host: a.cfg.Host, paths: paths}
	if err := os.MkdirAll(setsDir, 0o700); err != nil {
		c.fail("create cache directory", err)
		return c
	}
	tag := filepath.Join(a.cfg.CacheDir, "CACHEDIR.TAG")
	if _, err := os.Stat(tag); errors.Is(err, fs.ErrNotExist) {
		_ = os.WriteFile(tag, []byte(cacheTag), 0o644) // best effort: only a hint to other tools
	}
	p, err := openPack(c.packFile, packReadAll)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		a.cfg.Logger.Warn("local cache pack unusable; rebuilding from the cluster", "file", c.packFile, "err", err)
	default:
		c.old = p
	}
	return c
}

func (c *treeCache) fail(what string, err error) {
	if !c.disabled.Swap(true) {
		c.a.cfg.Logger.Warn("local cache disabled for this backup", "dir", c.dir, "op", what, "err", err)
	}
}

// checkParent compares the pack's record with the cluster's parent snapshot and logs
// whether the cache is current; a missing or stale cache is refilled by loadTree as it
// goes.
func (c *treeCache) checkParent(parent *meta.Snapshot) {
	if c == nil || c.disabled.Load() || parent == nil {
		return
	}
	switch {
	case c.old == nil:
		c.a.cfg.Logger.Info("local cache has no pack of this backup set; rebuilding from the cluster", "parent", parent.ID.Str())
	case c.old.rec.Snapshot != parent.ID.String() || c.old.rec.Tree != parent.Tree.String():
		c.a.cfg.Logger.Info("local cache is stale; rebuilding from the cluster", "cached", c.old.rec.Snapshot, "parent", parent.ID.Str())
	default:
		c.a.cfg.Logger.Debug("local cache is current", "parent", parent.ID.Str())
	}
}

// get returns the cached tree id, or nil. A tree it returns is also filed in the next
// pack.
func (c *treeCache) get(id chunk.ID) *tree.Tree {
	if c == nil || c.disabled.Load() || c.old == nil {
		return nil
	}
	c.mu.Lock()
	dropped := c.mu.dropped[id]
	c.mu.Unlock()
	if dropped {
		return nil
	}
	sealed, err := c.old.read(id)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err == nil {
		var plain []byte
		if plain, err = c.a.keys.Open(nil, id, sealed); err == nil {
			var t *tree.Tree
			if t, err = tree.Decode(plain); err == nil {
				c.hits.Add(1)
				c.putSealed(id, sealed)
				return t
			}
		}
	}
	c.a.cfg.Logger.Warn("local cache entry unusable; fetching it from the cluster", "file", c.packFile, "tree", id.Str(), "err", err)
	c.mu.Lock()
	if c.mu.dropped == nil {
		c.mu.dropped = make(map[chunk.ID]bool)
	}
	c.mu.dropped[id] = true
	c.mu.Unlock()
	return nil
}

// putSealed files a sealed tree chunk in the next pack.
func (c *treeCache) putSealed(id chunk.ID, sealed []byte) {
	if c == nil || c.disabled.Load() {
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
func (c *treeCache) putPlain(id chunk.ID, enc []byte) {
	if c == nil || c.disabled.Load() {
		return
	}
	c.mu.Lock()
	filed := c.mu.w != nil && c.mu.w.has(id)
	c.mu.Unlock()
	if filed {
		return
	}
	sealed, err := c.a.keys.Seal(nil, id, enc)
	if err != nil {
		c.fail("seal tree", err)
		return
	}
	c.putSealed(id, sealed)
}

// commit finishes the next pack with the index of trees (the trees of snap, committed)
// and renames it over the set's pack, then removes what the layout no longer uses. The
// cache files nothing after it.
func (c *treeCache) commit(snap meta.Snapshot, trees []chunk.ID) {
	if c == nil || c.disabled.Load() {
		return
	}
	c.mu.Lock()
	w := c.mu.w
	c.mu.w, c.mu.closed = nil, true // the pack is final: nothing more is filed
	c.mu.Unlock()
	if w == nil {
		return
	}
	rec := setRecord{Host: c.host, Paths: c.paths, Snapshot: snap.ID.String(), Tree: snap.Tree.String()}
	missing, err := w.finish(c.packFile, rec, trees)
	if err != nil {
		c.fail("write pack", err)
		return
	}
	removed := c.removeUnused()
	c.a.cfg.Logger.Debug("local cache updated", "snapshot", snap.ID.Str(), "trees", len(trees),
		"hits", c.hits.Load(), "fetched", c.fetched.Load(), "not_filed", missing, "removed", removed)
}

// removeUnused removes the layout before packs and temporary files left by crashed
// backups, and returns how many files it removed. Failures are ignored: they cost only
// disk space.
func (c *treeCache) removeUnused() int {
	removed := 0
	legacy := filepath.Join(c.dir, "trees")
	if _, err := os.Stat(legacy); err == nil && os.RemoveAll(legacy) == nil {
		removed++
	}
	ents, err := os.ReadDir(c.setsDir)
	if err != nil {
		return removed
	}
	cutoff := c.a.cfg.Now().Add(-staleTempAge)
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

// close releases the old pack and removes the next one unless commit renamed it. It is
// safe to call more than once; the cache files nothing after it.
func (c *treeCache) close() {
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

// pack is an open pack file whose trailer, index and record have been checked. Its
// content is in data, or read from f one tree at a time.
type pack struct {
	f     *os.File // nil with data set
	data  []byte
	end   int64 // index offset: entries lie in [len(packMagic), end)
	rec   setRecord
	index []packEntry // sorted by ID
}

// packEntry is one index entry: the sealed tree ID is n bytes at off.
type packEntry struct {
	id  chunk.ID
	off int64
	n   uint32
}

// openPack opens the pack file p and checks its magic, trailer, index and record; a
// pack of at most readAll bytes is read whole and closed. A missing file gives an error
// matching fs.ErrNotExist.
func openPack(p string, readAll int64) (*pack, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	pk, err := readPack(f, readAll)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("client: cache pack %s: %w", p, err)
	}
	if pk.data != nil {
		f.Close()
	}
	return pk, nil
}

func readPack(f *os.File, readAll int64) (*pack, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	if size < int64(len(packMagic)+packTrailerSize) {
		return nil, fmt.Errorf("truncated: %d bytes", size)
	}
	pk := &pack{f: f}
	if size <= readAll {
		pk.data = make([]byte, size)
		if _, err := io.ReadFull(f, pk.data); err != nil {
			return nil, err
		}
		pk.f = nil
	}
	head := make([]byte, len(packMagic))
	if err := pk.readAt(head, 0); err != nil {
		return nil, err
	}
	tr := make([]byte, packTrailerSize)
	if err := pk.readAt(tr, size-int64(packTrailerSize)); err != nil {
		return nil, err
	}
	if string(head) != packMagic || string(tr[packTrailerSize-len(packMagic):]) != packMagic {
		return nil, errors.New("bad magic")
	}
	be := binary.BigEndian
	idxOff, count, recLen := be.Uint64(tr[0:]), be.Uint32(tr[8:]), be.Uint32(tr[12:])
	body := uint64(size - int64(packTrailerSize))
	idxLen := uint64(count) * packEntrySize
	if idxOff < uint64(len(packMagic)) || idxOff > body || recLen > packMaxRecord || idxLen+uint64(recLen) != body-idxOff {
		return nil, fmt.Errorf("bad trailer: index at %d, %d entries, record of %d bytes in %d bytes", idxOff, count, recLen, size)
	}
	buf := make([]byte, idxLen+uint64(recLen))
	if err := pk.readAt(buf, int64(idxOff)); err != nil {
		return nil, err
	}
	if sum := sha256.Sum256(buf); string(sum[:]) != string(tr[16:16+sha256.Size]) {
		return nil, errors.New("index checksum mismatch")
	}
	pk.end, pk.index = int64(idxOff), make([]packEntry, count)
	for i := range pk.index {
		b := buf[i*packEntrySize:]
		e := &pk.index[i]
		copy(e.id[:], b[:chunk.Size])
		e.off, e.n = int64(be.Uint64(b[chunk.Size:])), be.Uint32(b[chunk.Size+8:])
		if e.off < int64(len(packMagic)) || e.n == 0 || e.off+int64(e.n) > pk.end {
			return nil, fmt.Errorf("index entry %d out of bounds", i)
		}
		if i > 0 && !pk.index[i-1].id.Less(e.id) {
			return nil, fmt.Errorf("index entry %d out of order", i)
		}
	}
	if err := json.Unmarshal(buf[idxLen:], &pk.rec); err != nil {
		return nil, fmt.Errorf("record: %w", err)
	}
	return pk, nil
}

// readAt fills b from offset off, which the caller has checked against the size.
func (p *pack) readAt(b []byte, off int64) error {
	if p.data != nil {
		copy(b, p.data[off:])
		return nil
	}
	_, err := p.f.ReadAt(b, off)
	return err
}

// read returns the sealed tree id from the pack, or an error matching fs.ErrNotExist
// when the index does not name it. The result must not be modified.
func (p *pack) read(id chunk.ID) ([]byte, error) {
	i, ok := slices.BinarySearchFunc(p.index, id, func(e packEntry, id chunk.ID) int { return bytes.Compare(e.id[:], id[:]) })
	if !ok {
		return nil, fs.ErrNotExist
	}
	e := p.index[i]
	if p.data != nil {
		return p.data[e.off : e.off+int64(e.n) : e.off+int64(e.n)], nil
	}
	b := make([]byte, e.n)
	if _, err := p.f.ReadAt(b, e.off); err != nil {
		return nil, err
	}
	return b, nil
}

func (p *pack) close() {
	if p.f != nil {
		_ = p.f.Close()
	}
}

// packWriter writes the next pack of a set into a temporary file.
type packWriter struct {
	f     *os.File
	w     *bufio.Writer
	off   int64
	spans map[chunk.ID]packEntry
}

func newPackWriter(dir string) (*packWriter, error) {
	f, err := os.CreateTemp(dir, ".tmp-pack-*")
	if err != nil {
		return nil, err
	}
	w := &packWriter{f: f, w: bufio.NewWriterSize(f, 64<<10), spans: make(map[chunk.ID]packEntry)}
	if _, err := w.w.WriteString(packMagic); err != nil {
		w.abort()
		return nil, err
	}
	w.off = int64(len(packMagic))
	return w, nil
}

func (w *packWriter) has(id chunk.ID) bool {
	_, ok := w.spans[id]
	return ok
}

// add appends sealed as tree id unless the pack holds id already.
func (w *packWriter) add(id chunk.ID, sealed []byte) error {
	if w.has(id) || len(sealed) == 0 {
		return nil
	}
	if uint64(len(sealed)) > math.MaxUint32 {
		return fmt.Errorf("tree %s: %d bytes", id.Str(), len(sealed))
	}
	if _, err := w.w.Write(sealed); err != nil {
		return err
	}
	w.spans[id] = packEntry{id: id, off: w.off, n: uint32(len(sealed))}
	w.off += int64(len(sealed))
	return nil
}

// finish writes the index of the trees among ids that the pack holds, the record and
// the trailer, and renames the file to p. It returns how many of ids it does not hold.
// The writer is unusable afterwards.
func (w *packWriter) finish(p string, rec setRecord, ids []chunk.ID) (missing int, err error) {
	defer func() {
		if err != nil {
			w.abort()
		}
	}()
	index := make([]packEntry, 0, len(ids))
	seen := make(map[chunk.ID]bool, len(ids))
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		if e, ok := w.spans[id]; ok {
			index = append(index, e)
		} else {
			missing++
		}
	}
	slices.SortFunc(index, func(x, y packEntry) int { return bytes.Compare(x.id[:], y.id[:]) })
	recJSON, err := json.Marshal(rec)
	if err != nil {
		return missing, err
	}
	if len(recJSON) > packMaxRecord {
		return missing, fmt.Errorf("record of %d bytes", len(recJSON))
	}
	be := binary.BigEndian
	sum := sha256.New()
	out := io.MultiWriter(w.w, sum)
	var e [packEntrySize]byte
	for _, x := range index {
		copy(e[:], x.id[:])
		be.PutUint64(e[chunk.Size:], uint64(x.off))
		be.PutUint32(e[chunk.Size+8:], x.n)
		if _, err := out.Write(e[:]); err != nil {
			return missing, err
		}
	}
	if _, err := out.Write(recJSON); err != nil {
		return missing, err
	}
	tr := make([]byte, 0, packTrailerSize)
	tr = be.AppendUint64(tr, uint64(w.off))
	tr = be.AppendUint32(tr, uint32(len(index)))
	tr = be.AppendUint32(tr, uint32(len(recJSON)))
	tr = sum.Sum(tr)
	tr = append(tr, packMagic...)
	if _, err := w.w.Write(tr); err != nil {
		return missing, err
	}
	if err := w.w.Flush(); err != nil {
		return missing, err
	}
	if err := w.f.Close(); err != nil {
		return missing, err
	}
	if err := os.Rename(w.f.Name(), p); err != nil {
		return missing, err
	}
	return missing, nil
}

// abort closes and removes the temporary file.
func (w *packWriter) abort() {
	_ = w.f.Close()
	_ = os.Remove(w.f.Name())
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
