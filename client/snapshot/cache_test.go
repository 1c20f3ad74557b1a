package snapshot

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/memstore"
	"github.com/cofferhq/coffer/client/crypt"
	"github.com/cofferhq/coffer/client/tree"
	"github.com/cofferhq/coffer/meta"
)

// testKeys returns the keys of a fixed master key.
func testKeys() *crypt.Keys {
	var mk crypt.MasterKey
	for i := range mk {
		mk[i] = byte(i)
	}
	return crypt.DeriveKeys(mk)
}

// cacheConfig is the cache of backup set paths below dir, at time now.
func cacheConfig(dir string, keys Keys, now time.Time, paths ...string) CacheConfig {
	return CacheConfig{Dir: dir, Vault: "v", Host: "h", Paths: paths, Keys: keys,
		Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return now }}
}

// getCounter counts Gets.
type getCounter struct {
	chunkstore.Store
	gets atomic.Int64
}

func (g *getCounter) Get(ctx context.Context, id chunk.ID) ([]byte, error) {
	g.gets.Add(1)
	return g.Store.Get(ctx, id)
}

// storeTree seals and stores t and returns its ID.
func storeTree(t *testing.T, s chunkstore.Store, keys *crypt.Keys, tr *tree.Tree) chunk.ID {
	t.Helper()
	enc, err := tree.Encode(tr)
	if err != nil {
		t.Fatal(err)
	}
	id := keys.ChunkID(enc)
	sealed, err := keys.Seal(nil, id, enc)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(context.Background(), []chunkstore.Chunk{{ID: id, Data: sealed}}); err != nil {
		t.Fatal(err)
	}
	return id
}

// TestTreesLoad loads a stored tree; a chunk stored under another tree's ID fails with
// crypt.ErrCorrupt and a missing one with the store's error. With a cache, a tree
// loaded once and committed is read from the cache by the next backup, not the store.
func TestTreesLoad(t *testing.T) {
	ctx := context.Background()
	keys := testKeys()
	store := &getCounter{Store: memstore.NewChunks()}
	want := &tree.Tree{Nodes: []tree.Node{{Name: "a", Type: tree.TypeFile, Size: 0}}}
	id := storeTree(t, store, keys, want)
	other := storeTree(t, store, keys, &tree.Tree{Nodes: []tree.Node{{Name: "b", Type: tree.TypeFile}}})

	trees := New(store, keys)
	got, n, err := trees.LoadSized(ctx, id)
	if err != nil || len(got.Nodes) != 1 || got.Nodes[0].Name != "a" || n == 0 {
		t.Fatalf("LoadSized: %+v, %d bytes, %v", got, n, err)
	}
	sealedOther, err := store.Store.Get(ctx, other)
	if err != nil {
		t.Fatal(err)
	}
	forged := chunk.ID{0xee}
	if err := store.Put(ctx, []chunkstore.Chunk{{ID: forged, Data: sealedOther}}); err != nil {
		t.Fatal(err)
	}
	if _, err := trees.Load(ctx, forged); !errors.Is(err, crypt.ErrCorrupt) {
		t.Errorf("tree under a wrong ID: %v, want crypt.ErrCorrupt", err)
	}
	if _, err := trees.Load(ctx, chunk.ID{0xdd}); !errors.Is(err, chunkstore.ErrNotFound) {
		t.Errorf("missing tree: %v, want chunkstore.ErrNotFound", err)
	}

	dir := t.TempDir()
	now := time.Unix(1e9, 0)
	for i, wantGets := range []int64{1, 0} {
		c := OpenCache(cacheConfig(dir, keys, now, "/src"))
		store.gets.Store(0)
		got, err := trees.WithCache(c).Load(ctx, id)
		if err != nil || got.Nodes[0].Name != "a" {
			t.Fatalf("backup %d: Load through the cache: %+v, %v", i, got, err)
		}
		if g := store.gets.Load(); g != wantGets {
			t.Errorf("backup %d: %d reads from the store, want %d", i, g, wantGets)
		}
		c.Commit(meta.Snapshot{Tree: id}, []chunk.ID{id})
		c.Close()
	}
}

// TestTreeCacheCleansUp checks what a commit removes (the layout before packs and stale
// temporary files) and keeps (a recent temporary file, which may be another backup's),
// and that a backup that ends without a commit leaves no temporary file.
func TestTreeCacheCleansUp(t *testing.T) {
	dir := t.TempDir()
	keys := testKeys()
	now := time.Now()
	commit := func(paths ...string) *Cache {
		t.Helper()
		c := OpenCache(cacheConfig(dir, keys, now, paths...))
		if c == nil {
			t.Fatal("no cache with a directory")
		}
		id, _, err := New(memstore.NewChunks(), keys).WithCache(c).Encode(&tree.Tree{})
		if err != nil {
			t.Fatal(err)
		}
		c.Commit(meta.Snapshot{Tree: id}, []chunk.ID{id})
		c.Close()
		return c
	}
	first := commit("/src")
	sets := filepath.Dir(first.packFile)
	vaultDir := filepath.Dir(sets)
	write := func(p string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(vaultDir, "trees", "ab", "ab01"))
	write(filepath.Join(sets, "0123.json"))
	for name, age := range map[string]time.Duration{".tmp-pack-stale": 2 * staleTempAge, ".tmp-pack-recent": time.Minute} {
		p := filepath.Join(sets, name)
		write(p)
		if err := os.Chtimes(p, now.Add(-age), now.Add(-age)); err != nil {
			t.Fatal(err)
		}
	}
	commit("/src")

	// Filed after the commit: nothing is written.
	tc := OpenCache(cacheConfig(dir, keys, now, "/committed"))
	tc.putPlain(chunk.ID{1}, []byte("tree"))
	tc.Commit(meta.Snapshot{}, []chunk.ID{{1}})
	tc.putPlain(chunk.ID{2}, []byte("tree"))
	if tc.mu.w != nil {
		t.Error("a tree filed after the commit started another pack")
	}
	tc.Close()
	if err := os.Remove(tc.packFile); err != nil {
		t.Fatalf("no pack after a commit: %v", err)
	}
	ents, err := os.ReadDir(sets)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if len(names) != 2 || names[0] != ".tmp-pack-recent" || !strings.HasSuffix(names[1], ".pack") {
		t.Errorf("sets directory holds %q, want the recent temporary file and the pack", names)
	}
	if _, err := os.Stat(filepath.Join(vaultDir, "trees")); !os.IsNotExist(err) {
		t.Errorf("legacy trees directory kept: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "CACHEDIR.TAG")); err != nil {
		t.Errorf("no cache directory tag: %v", err)
	}

	// Filed but never committed: Close removes the temporary file.
	tc = OpenCache(cacheConfig(dir, keys, now, "/elsewhere"))
	tc.putPlain(chunk.ID{1}, []byte("tree"))
	tc.Close()
	tc.putPlain(chunk.ID{2}, []byte("tree")) // after Close: files nothing
	ents, err = os.ReadDir(sets)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != len(names) {
		t.Errorf("after an uncommitted cache: %d files in the sets directory, want %d", len(ents), len(names))
	}
	if OpenCache(cacheConfig("", keys, now, "/src")) != nil {
		t.Error("a cache without a directory")
	}
}

// TestCacheReaderNeedsAPackAndFilesNothing: OpenCacheReader gives nil without a cache
// directory or a pack of the set (and creates no directory looking), and a reader over
// a pack serves its trees without filing or writing anything.
func TestCacheReaderNeedsAPackAndFilesNothing(t *testing.T) {
	keys := testKeys()
	now := time.Unix(1_800_000_000, 0)
	dir := filepath.Join(t.TempDir(), "cache")
	if c := OpenCacheReader(cacheConfig("", keys, now, "/src")); c != nil {
		t.Fatal("reader without a cache directory")
	}
	if c := OpenCacheReader(cacheConfig(dir, keys, now, "/src")); c != nil {
		t.Fatal("reader of a set without a pack")
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("looking for a pack created %s (%v)", dir, err)
	}

	store := memstore.NewChunks()
	tr := &tree.Tree{Nodes: []tree.Node{{Name: "a", Type: tree.TypeFile, Mode: 0o644}}}
	id := storeTree(t, store, keys, tr)
	w := OpenCache(cacheConfig(dir, keys, now, "/src"))
	if _, err := New(store, keys).WithCache(w).Load(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	w.Commit(meta.Snapshot{Tree: id}, []chunk.ID{id})
	w.Close()

	r := OpenCacheReader(cacheConfig(dir, keys, now, "/src"))
	if r == nil {
		t.Fatal("no reader of a set with a pack")
	}
	defer r.Close()
	if OpenCacheReader(cacheConfig(dir, keys, now, "/other")) != nil {
		t.Fatal("reader of another set")
	}
	gc := &getCounter{Store: store}
	trees := New(gc, keys).WithCache(r)
	got, err := trees.Load(context.Background(), id)
	if err != nil || len(got.Nodes) != 1 || got.Nodes[0].Name != "a" || gc.gets.Load() != 0 || r.hits.Load() != 1 {
		t.Fatalf("Load through the reader: %v %v, %d downloads, %d hits; want the tree from the pack", got, err, gc.gets.Load(), r.hits.Load())
	}
	other := storeTree(t, store, keys, &tree.Tree{Nodes: []tree.Node{{Name: "b", Type: tree.TypeFile, Mode: 0o644}}})
	if _, err := trees.Load(context.Background(), other); err != nil || gc.gets.Load() != 1 {
		t.Fatalf("Load of a tree not in the pack: %v, %d downloads; want it fetched", err, gc.gets.Load())
	}
	r.Commit(meta.Snapshot{Tree: other}, []chunk.ID{other})
	ents, err := os.ReadDir(r.setsDir)
	if err != nil || len(ents) != 1 {
		t.Fatalf("a reader filed something: %v (%v)", ents, err)
	}
}
