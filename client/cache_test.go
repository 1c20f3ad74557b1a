package client

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/memstore"
	"github.com/cofferhq/coffer/client/snapshot"
	"github.com/cofferhq/coffer/client/tree"
)

// packOf returns the path of the only tree pack below cacheDir.
func packOf(t *testing.T, cacheDir string) string {
	t.Helper()
	ps, err := filepath.Glob(filepath.Join(cacheDir, "*", "sets", "*.pack"))
	if err != nil || len(ps) != 1 {
		t.Fatalf("tree packs in %s: %q (%v), want one", cacheDir, ps, err)
	}
	return ps[0]
}

// cacheEnv is an agent with a local cache over a store that counts downloads.
type cacheEnv struct {
	*env
	a  *Agent
	gc *getCounter
}

func newCacheEnv(t *testing.T) *cacheEnv {
	gc := &getCounter{Store: memstore.NewChunks()}
	e := newEnvStore(t, gc)
	e.cfg.CacheDir = filepath.Join(t.TempDir(), "cache")
	return &cacheEnv{env: e, a: e.open(t), gc: gc}
}

// backup backs src up and returns the result and how many tree chunks it downloaded
// (the fake meta service reads the reference lists through the same store).
func (c *cacheEnv) backup(t *testing.T, src string) (BackupResult, int64) {
	t.Helper()
	c.gc.gets.Store(0)
	res, err := c.a.Backup(context.Background(), BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	return res, c.gc.gets.Load() - int64(len(res.Snapshot.Refs))
}

// TestTreePackCorruptEntryRefetched damages one tree inside the pack: the next backup
// fetches exactly that tree from the cluster, makes the same snapshot tree, and writes a
// pack that the backup after it uses without any download.
func TestTreePackCorruptEntryRefetched(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	makeManyFiles(t, src, 1000) // the root tree, src and 10 directories below it
	c := newCacheEnv(t)
	first, _ := c.backup(t, src)

	p := packOf(t, c.cfg.CacheDir)
	pb, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	// The index, as client/snapshot/FORMAT.md lays it out.
	be := binary.BigEndian
	tr := pb[len(pb)-snapshot.PackTrailerSize:]
	if n := be.Uint32(tr[8:]); n != 12 {
		t.Fatalf("pack indexes %d trees, want 12", n)
	}
	e := pb[be.Uint64(tr)+3*snapshot.PackEntrySize:]
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	off := int64(be.Uint64(e[chunk.Size:]) + uint64(be.Uint32(e[chunk.Size+8:]))/2)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	f.Close()

	second, got := c.backup(t, src)
	if got != 1 {
		t.Errorf("backup over a pack with one damaged tree downloaded %d trees, want 1", got)
	}
	if second.Snapshot.Tree != first.Snapshot.Tree || second.Snapshot.Stats.FilesUnmodified != 1000 {
		t.Errorf("backup over a damaged pack: tree %s (want %s), %d unmodified", second.Snapshot.Tree.Str(), first.Snapshot.Tree.Str(), second.Snapshot.Stats.FilesUnmodified)
	}
	if _, got := c.backup(t, src); got != 0 {
		t.Errorf("backup after the pack was rewritten downloaded %d trees", got)
	}
}

// TestTreePackDamagedIndexIgnored checks that a pack whose index, trailer or whole
// content is damaged is not used: every tree is fetched, the snapshot is the same, and
// the pack written instead serves the next backup.
func TestTreePackDamagedIndexIgnored(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	makeManyFiles(t, src, 300)
	c := newCacheEnv(t)
	first, _ := c.backup(t, src)
	indexAt := func(b []byte) int { return int(binary.BigEndian.Uint64(b[len(b)-snapshot.PackTrailerSize:])) }
	damage := map[string]func(b []byte) []byte{
		"index entry ID":     func(b []byte) []byte { b[indexAt(b)+snapshot.PackEntrySize+3] ^= 1; return b },
		"index entry offset": func(b []byte) []byte { b[indexAt(b)+chunk.Size+7] ^= 1; return b },
		"record":             func(b []byte) []byte { b[len(b)-snapshot.PackTrailerSize-5] ^= 1; return b },
		"trailer count":      func(b []byte) []byte { b[len(b)-snapshot.PackTrailerSize+11] ^= 1; return b },
		"magic":              func(b []byte) []byte { b[0] = 'X'; return b },
		"truncated":          func(b []byte) []byte { return b[:len(b)-1] },
		"garbage":            func([]byte) []byte { return []byte("not a pack") },
		"empty":              func([]byte) []byte { return nil },
	}
	for name, fn := range damage {
		p := packOf(t, c.cfg.CacheDir)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, fn(b), 0o600); err != nil {
			t.Fatal(err)
		}
		res, got := c.backup(t, src)
		if got != 5 || res.Snapshot.Tree != first.Snapshot.Tree {
			t.Errorf("%s: downloaded %d trees (want 5), tree %s (want %s)", name, got, res.Snapshot.Tree.Str(), first.Snapshot.Tree.Str())
		}
		if _, got := c.backup(t, src); got != 0 {
			t.Errorf("%s: backup after the pack was rewritten downloaded %d trees", name, got)
		}
	}
}

// hasCounter counts the IDs asked about with Has.
type hasCounter struct {
	chunkstore.Store
	asked atomic.Int64
}

func (h *hasCounter) Has(ctx context.Context, ids []chunk.ID) ([]bool, error) {
	h.asked.Add(int64(len(ids)))
	return h.Store.Has(ctx, ids)
}

// TestUnchangedDirectoryKeepsTreeID checks tree reuse: an unchanged re-backup makes the
// same trees without asking the cluster about any of them, and a change to one entry
// (a file's mtime, a directory's mode, a new file) gives new trees from that directory
// up to the root while the untouched directories keep theirs.
func TestUnchangedDirectoryKeepsTreeID(t *testing.T) {
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), "src")
	// Files too large for bundles: a forced backup bundles every small file of a
	// directory, where the backup before read only the changed ones.
	for i, p := range []string{"a/x", "a/y", "b/z", "c/d/w", "e/v"} {
		writeFile(t, filepath.Join(src, p), randBytes(uint64(i), bundleFileMax+500), 0o644)
		setTime(t, filepath.Join(src, p), i)
	}
	hc := &hasCounter{Store: memstore.NewChunks()}
	e := newEnvStore(t, hc)
	e.cfg.CacheDir = filepath.Join(t.TempDir(), "cache")
	a := e.open(t)
	// backup returns the result and how many IDs the backup asked about before its commit.
	backup := func(force bool) (BackupResult, int64) {
		t.Helper()
		var asked int64
		e.meta.beforeCommit(func() { asked = hc.asked.Load() })
		hc.asked.Store(0)
		res, err := a.Backup(ctx, BackupOptions{Paths: []string{src}, Force: force})
		if err != nil {
			t.Fatal(err)
		}
		return res, asked
	}
	// subtrees maps each directory below src (and "." for src) to its tree ID.
	subtrees := func(snap BackupResult) map[string]chunk.ID {
		t.Helper()
		out := make(map[string]chunk.ID)
		var walk func(rel string, id chunk.ID)
		walk = func(rel string, id chunk.ID) {
			out[rel] = id
			tr, err := a.trees.Load(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range tr.Nodes {
				if n.Type == tree.TypeDir {
					walk(filepath.Join(rel, n.Name), *n.Subtree)
				}
			}
		}
		root, err := a.trees.Load(ctx, snap.Snapshot.Tree)
		if err != nil {
			t.Fatal(err)
		}
		walk(".", *root.Nodes[0].Subtree)
		return out
	}

	first, _ := backup(false)
	before := subtrees(first)
	second, asked := backup(false)
	if second.Snapshot.Tree != first.Snapshot.Tree {
		t.Fatalf("unchanged re-backup made root tree %s, want %s", second.Snapshot.Tree.Str(), first.Snapshot.Tree.Str())
	}
	if asked > int64(len(second.Snapshot.Refs)) {
		t.Errorf("unchanged re-backup asked about %d chunks before its commit; want only its %d reference lists", asked, len(second.Snapshot.Refs))
	}

	setTime(t, filepath.Join(src, "a", "x"), 50)                          // same size and content
	if err := os.Chmod(filepath.Join(src, "c", "d"), 0o700); err != nil { // c's entry for d
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(src, "e", "new"), []byte("n"), 0o644)
	third, _ := backup(false)
	after := subtrees(third)
	for dir, changed := range map[string]bool{".": true, "a": true, "b": false, "c": true, "c/d": false, "e": true} {
		if got := after[dir] != before[dir]; got != changed {
			t.Errorf("%s: tree changed %v, want %v", dir, got, changed)
		}
	}
	ta, err := a.trees.Load(ctx, after["a"])
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(filepath.Join(src, "a", "x"))
	if err != nil {
		t.Fatal(err)
	}
	if ta.Nodes[0].Name != "x" || ta.Nodes[0].ModTime != fi.ModTime().UnixNano() {
		t.Errorf("a/x recorded with mtime %d, want %d", ta.Nodes[0].ModTime, fi.ModTime().UnixNano())
	}

	// Force encodes and asks about every tree again, and makes the same ones.
	forced, n := backup(true)
	if forced.Snapshot.Tree != third.Snapshot.Tree {
		t.Errorf("forced backup made root tree %s, want %s", forced.Snapshot.Tree.Str(), third.Snapshot.Tree.Str())
	}
	if n < int64(len(after)) {
		t.Errorf("forced backup asked about %d chunks, want at least its %d trees", n, len(after))
	}
}

// TestSameNodeComparesEveryField changes each field of a tree.Node in turn: sameNode
// must see every change, or an unchanged directory's tree ID could stand for a changed
// listing.
func TestSameNodeComparesEveryField(t *testing.T) {
	sub := chunk.ID{7}
	base := tree.Node{Name: "n", Type: tree.TypeFile, Mode: 0o644, UID: 1, GID: 2, ModTime: 3, ChangeTime: 4,
		Size: 5, Inode: 6, Links: 7, DeviceID: 8, Rdev: 9, LinkTarget: "t", BlockSize: 10,
		Content: []tree.Extent{{ID: chunk.ID{1}, Len: 5}}, Subtree: &sub}
	typ := reflect.TypeOf(base)
	for i := range typ.NumField() {
		m := base
		m.Content = slices.Clone(base.Content)
		f := reflect.ValueOf(&m).Elem().Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString(f.String() + "x")
		case reflect.Uint32, reflect.Uint64:
			f.SetUint(f.Uint() + 1)
		case reflect.Int64:
			f.SetInt(f.Int() + 1)
		case reflect.Slice:
			m.Content[0].Hole = true
		case reflect.Pointer:
			other := chunk.ID{8}
			f.Set(reflect.ValueOf(&other))
		default:
			t.Fatalf("field %s of kind %s: teach this test to change it", typ.Field(i).Name, f.Kind())
		}
		if sameNode(&base, &m) {
			t.Errorf("sameNode misses a change of %s", typ.Field(i).Name)
		}
	}
	m := base
	m.Subtree = nil
	if sameNode(&base, &m) || sameNode(&m, &base) {
		t.Error("sameNode equates a nil and a set Subtree")
	}
	copySub := sub
	m.Subtree, m.Content = &copySub, slices.Clone(base.Content)
	if !sameNode(&base, &m) {
		t.Error("sameNode separates equal nodes")
	}
	x, y := tree.Node{Name: "e"}, tree.Node{Name: "e", Content: []tree.Extent{}}
	if !sameNode(&x, &y) {
		t.Error("sameNode separates nil and empty Content, which encode alike")
	}
}

// TestHardlinksAcrossDirectories links one file from many directories, which the walk
// lists in parallel: the file is read once and every link gets its content.
func TestHardlinksAcrossDirectories(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	writeFile(t, filepath.Join(src, "orig"), randBytes(9, 5000), 0o644)
	for i := range 200 {
		d := filepath.Join(src, fmt.Sprintf("d%d", i%8), fmt.Sprintf("s%03d", i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Link(filepath.Join(src, "orig"), filepath.Join(d, "link")); err != nil {
			t.Fatal(err)
		}
	}
	e := newEnv(t)
	e.cfg.Workers = 4
	a := e.open(t)
	rec := &openRecorder{}
	res, err := a.Backup(ctx, BackupOptions{Paths: []string{src}, OnOpen: rec.hook})
	if err != nil {
		t.Fatal(err)
	}
	if got := rec.take(); len(got) != 1 {
		t.Errorf("opened %d links of one file, want 1", len(got))
	}
	if res.Snapshot.Stats.FilesNew != 201 {
		t.Errorf("%d new files, want 201", res.Snapshot.Stats.FilesNew)
	}
	target := filepath.Join(dir, "restore")
	if _, err := a.Restore(ctx, res.Snapshot, RestoreOptions{Target: target}); err != nil {
		t.Fatal(err)
	}
	compareTrees(t, src, filepath.Join(target, "src"))
}

// TestRestoreReadsTreesFromLocalCache: a restore and a listing on the host that backed
// the set up read its trees from the local pack (12 fewer downloads than an agent
// without the cache), file nothing in it, and still restore and list bit-identically
// when the pack is damaged (the damaged tree is fetched).
func TestRestoreReadsTreesFromLocalCache(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	makeManyFiles(t, src, 1000) // the root tree, src and 10 directories below it
	c := newCacheEnv(t)
	res, _ := c.backup(t, src)
	snap := res.Snapshot
	p := packOf(t, c.cfg.CacheDir)
	before, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	noCache := c.cfg
	noCache.CacheDir = ""
	cold, err := Open(context.Background(), noCache, "v1", testPass)
	if err != nil {
		t.Fatal(err)
	}
	defer cold.Close()

	restore := func(a *Agent) int64 {
		t.Helper()
		target := filepath.Join(t.TempDir(), "out")
		c.gc.gets.Store(0)
		if _, err := a.Restore(context.Background(), snap, RestoreOptions{Target: target}); err != nil {
			t.Fatal(err)
		}
		compareTrees(t, src, filepath.Join(target, "src"))
		return c.gc.gets.Load()
	}
	list := func(a *Agent) (int, int64) {
		t.Helper()
		c.gc.gets.Store(0)
		n := 0
		if err := a.List(context.Background(), snap, "/", func(Entry) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		return n, c.gc.gets.Load()
	}
	fetched, warm := restore(cold), restore(c.a)
	if fetched-warm != 12 {
		t.Errorf("restore downloaded %d chunks with the local cache and %d without; want 12 trees fewer", warm, fetched)
	}
	if n, gets := list(c.a); n != 1011 || gets != 0 {
		t.Errorf("listing with the local cache: %d entries, %d downloads; want 1011 entries and none", n, gets)
	}
	if n, gets := list(cold); n != 1011 || gets != 12 {
		t.Errorf("listing without the cache: %d entries, %d downloads; want 1011 and 12", n, gets)
	}
	after, err := os.ReadFile(p)
	if err != nil || !slices.Equal(before, after) {
		t.Fatalf("restore and listing changed the pack (%v)", err)
	}
	if ps, _ := filepath.Glob(filepath.Join(filepath.Dir(p), "*")); len(ps) != 1 {
		t.Errorf("restore and listing left files in the cache: %q", ps)
	}

	// A damaged tree in the pack: fetched from the cluster, the restore is still exact.
	damaged := slices.Clone(before)
	damaged[len(damaged)/3] ^= 0x40
	if err := os.WriteFile(p, damaged, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := restore(c.a); got <= warm || got > fetched {
		t.Errorf("restore over a damaged pack downloaded %d chunks; want more than %d (the damaged tree) and at most %d", got, warm, fetched)
	}
}
