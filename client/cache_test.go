package client

import (
	"context"
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/memstore"
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
	pk, err := openPack(p, packReadAll)
	if err != nil {
		t.Fatal(err)
	}
	if len(pk.index) != 12 {
		t.Fatalf("pack indexes %d trees, want 12", len(pk.index))
	}
	e := pk.index[3]
	pk.close()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	off := e.off + int64(e.n)/2
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
	indexAt := func(b []byte) int { return int(binary.BigEndian.Uint64(b[len(b)-packTrailerSize:])) }
	damage := map[string]func(b []byte) []byte{
		"index entry ID":     func(b []byte) []byte { b[indexAt(b)+packEntrySize+3] ^= 1; return b },
		"index entry offset": func(b []byte) []byte { b[indexAt(b)+chunk.Size+7] ^= 1; return b },
		"record":             func(b []byte) []byte { b[len(b)-packTrailerSize-5] ^= 1; return b },
		"trailer count":      func(b []byte) []byte { b[len(b)-packTrailerSize+11] ^= 1; return b },
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

// TestTreeCacheCleansUp checks what a commit removes (the layout before packs and stale
// temporary files) and keeps (a recent temporary file, which may be another backup's),
// and that a backup that ends without a commit leaves no temporary file.
func TestTreeCacheCleansUp(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	makeManyFiles(t, src, 10)
	c := newCacheEnv(t)
	c.backup(t, src)
	sets := filepath.Dir(packOf(t, c.cfg.CacheDir))
	vaultDir := filepath.Dir(sets)
	legacy := filepath.Join(vaultDir, "trees", "ab", "ab01")
	writeFile(t, legacy, []byte("old tree"), 0o600)
	writeFile(t, filepath.Join(sets, "0123.json"), []byte("{}"), 0o600)
	now := c.cfg.Now()
	for name, age := range map[string]time.Duration{".tmp-pack-stale": 2 * staleTempAge, ".tmp-pack-recent": time.Minute} {
		p := filepath.Join(sets, name)
		writeFile(t, p, []byte("x"), 0o600)
		if err := os.Chtimes(p, now.Add(-age), now.Add(-age)); err != nil {
			t.Fatal(err)
		}
	}
	c.backup(t, src)
	var names []string
	ents, err := os.ReadDir(sets)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if len(names) != 2 || names[0] != ".tmp-pack-recent" || !strings.HasSuffix(names[1], ".pack") {
		t.Errorf("sets directory holds %q, want the recent temporary file and the pack", names)
	}
	if _, err := os.Stat(filepath.Join(vaultDir, "trees")); !os.IsNotExist(err) {
		t.Errorf("legacy trees directory kept: %v", err)
	}

	// Filed but never committed: close removes the temporary file.
	tc := c.a.openTreeCache([]string{"/elsewhere"})
	tc.putPlain(chunk.ID{1}, []byte("tree"))
	tc.close()
	tc.putPlain(chunk.ID{2}, []byte("tree")) // after close: files nothing
	ents, err = os.ReadDir(sets)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != len(names) {
		t.Errorf("after an uncommitted cache: %d files in the sets directory, want %d", len(ents), len(names))
	}
}

// TestTreePackReadModes writes a pack and reads every entry back, with the pack in
// memory and one pread per entry; IDs it does not index (among them one it holds but
// was not told to index) are not found.
func TestTreePackReadModes(t *testing.T) {
	dir := t.TempDir()
	w, err := newPackWriter(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := make(map[chunk.ID][]byte)
	var ids []chunk.ID
	for i := range 50 {
		id := chunk.ID{byte(i), 0xaa}
		b := randBytes(uint64(i), 1+i*37)
		if err := w.add(id, b); err != nil {
			t.Fatal(err)
		}
		if err := w.add(id, []byte("again")); err != nil { // a second add of an ID is ignored
			t.Fatal(err)
		}
		if i != 7 {
			want[id] = b
			ids = append(ids, id, id)
		}
	}
	p := filepath.Join(dir, "s.pack")
	rec := setRecord{Host: "h", Paths: []string{"/x"}, Snapshot: "s", Tree: "t"}
	missing, err := w.finish(p, rec, append(ids, chunk.ID{0xff}))
	if err != nil || missing != 1 {
		t.Fatalf("finish: %d missing, %v; want 1 missing", missing, err)
	}
	for _, readAll := range []int64{0, packReadAll} {
		pk, err := openPack(p, readAll)
		if err != nil {
			t.Fatal(err)
		}
		if (pk.data != nil) != (readAll > 0) || pk.rec.Host != "h" || len(pk.index) != len(want) {
			t.Errorf("readAll %d: in memory %v, record %+v, %d entries", readAll, pk.data != nil, pk.rec, len(pk.index))
		}
		for id, b := range want {
			got, err := pk.read(id)
			if err != nil || !slices.Equal(got, b) {
				t.Errorf("readAll %d: tree %x: %d bytes, %v; want %d bytes", readAll, id[:2], len(got), err, len(b))
			}
		}
		for _, id := range []chunk.ID{{7, 0xaa}, {0xff}} {
			if _, err := pk.read(id); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("readAll %d: tree %x not indexed: %v", readAll, id[:2], err)
			}
		}
		pk.close()
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("%d files after finish, want the pack alone", len(ents))
	}
}
