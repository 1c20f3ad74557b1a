package client

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/client/tree"
	"github.com/cofferhq/coffer/meta"
)

// putPlain seals plain with a's keys and stores it; it returns the chunk's ID.
func putPlain(t *testing.T, e *env, a *Agent, plain []byte) chunk.ID {
	t.Helper()
	id := a.keys.ChunkID(plain)
	sealed, err := a.keys.Seal(nil, id, plain)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.chunks.Put(context.Background(), []chunkstore.Chunk{{ID: id, Data: sealed}}); err != nil {
		t.Fatal(err)
	}
	return id
}

// putTree encodes tr with the client's tree encoder and stores it.
func putTree(t *testing.T, e *env, a *Agent, tr *tree.Tree) chunk.ID {
	t.Helper()
	b, err := tree.Encode(tr)
	if err != nil {
		t.Fatal(err)
	}
	return putPlain(t, e, a, b)
}

// sharedDAG stores a tree DAG of levels directory levels above a leaf holding one empty
// file, where every level's "a" and "b" are the same subtree: it expands to 2^levels
// files and 2^(levels+1)-2 directories from levels+1 distinct trees.
func sharedDAG(t *testing.T, e *env, a *Agent, levels int) meta.Snapshot {
	t.Helper()
	id := putTree(t, e, a, &tree.Tree{Nodes: []tree.Node{{Name: "f", Type: tree.TypeFile, Mode: 0o644}}})
	for range levels {
		sub := id
		dir := func(name string) tree.Node {
			return tree.Node{Name: name, Type: tree.TypeDir, Mode: uint32(fs.ModeDir | 0o755), Subtree: &sub}
		}
		id = putTree(t, e, a, &tree.Tree{Nodes: []tree.Node{dir("a"), dir("b")}})
	}
	return meta.Snapshot{ID: chunk.ID{byte(levels)}, Vault: "v1", Tree: id}
}

// errListedTooMuch stops a listing that has gone far beyond any bound.
var errListedTooMuch = errors.New("listed more than a million entries")

// dirEntries lists dir's names.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, en := range ents {
		names = append(names, en.Name())
	}
	return names
}

// TestTreeDAGExpansionRefused: 40 levels of a tree pointing twice at the next expand to
// 2^41 entries from 41 distinct trees. List and Restore (which coffer verify runs) must
// refuse it at once with ErrTooManyEntries, before listing or writing anything, instead
// of working for ever; a small part of it, selected by path, still lists and restores.
func TestTreeDAGExpansionRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := newEnv(t)
	a := e.open(t)
	snap := sharedDAG(t, e, a, 40)

	listed := 0
	err := a.List(ctx, snap, "/", func(Entry) error {
		if listed++; listed > 1<<20 {
			return errListedTooMuch
		}
		return nil
	})
	if !errors.Is(err, ErrTooManyEntries) || listed != 0 {
		t.Fatalf("List of the DAG: %v after %d entries, want ErrTooManyEntries before any", err, listed)
	}
	if !strings.Contains(err.Error(), "3298534883326 entries") {
		t.Errorf("error does not say how many entries the snapshot expands to: %v", err)
	}
	if err := a.List(ctx, snap, "/a/b/a", func(Entry) error { return nil }); !errors.Is(err, ErrTooManyEntries) {
		t.Errorf("List of a subdirectory of the DAG: %v, want ErrTooManyEntries", err)
	}

	target := filepath.Join(t.TempDir(), "target")
	_, err = a.Restore(ctx, snap, RestoreOptions{Target: target})
	if !errors.Is(err, ErrTooManyEntries) {
		t.Fatalf("Restore of the DAG: %v, want ErrTooManyEntries", err)
	}
	if ents, err := os.ReadDir(target); len(ents) != 0 || (err != nil && !errors.Is(err, fs.ErrNotExist)) {
		t.Errorf("refused restore wrote %d entries (%v)", len(ents), err)
	}

	// A directory three levels from the bottom: 2^3 files and 14 directories below it,
	// and 36 parent directories above it.
	deep := "/" + strings.Repeat("a/", 36) + "b"
	listed = 0
	if err := a.List(ctx, snap, deep, func(Entry) error { listed++; return nil }); err != nil || listed != 1+8+14 {
		t.Fatalf("List %s: %v, %d entries, want 23", deep, err, listed)
	}
	target = filepath.Join(t.TempDir(), "part")
	res, err := a.Restore(ctx, snap, RestoreOptions{Target: target, Include: []string{deep}})
	if err != nil {
		t.Fatalf("Restore of %s: %v", deep, err)
	}
	if res.Files != 8 || res.Dirs != 36+1+14 {
		t.Errorf("restored %d files and %d directories, want 8 and 51", res.Files, res.Dirs)
	}
	if _, err := os.Lstat(filepath.Join(target, deep, "a", "b", "a", "f")); err != nil {
		t.Error(err)
	}
}

// TestTreeDAGSharingRestores: identical directories legitimately share one tree; a
// snapshot made of them restores and lists every occurrence, and Config.MaxEntries is
// the bound (here set just below and at the expanded count).
func TestTreeDAGSharingRestores(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	a := e.open(t)
	snap := sharedDAG(t, e, a, 8) // 256 files, 510 directories
	const entries = 256 + 510

	var paths []string
	if err := a.List(ctx, snap, "/", func(en Entry) error { paths = append(paths, en.Path); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(paths) != entries || paths[0] != "/a" || paths[len(paths)-1] != "/b/b/b/b/b/b/b/b/f" {
		t.Fatalf("listed %d entries (%q ... %q), want %d", len(paths), paths[0], paths[len(paths)-1], entries)
	}
	target := filepath.Join(t.TempDir(), "target")
	res, err := a.Restore(ctx, snap, RestoreOptions{Target: target})
	if err != nil {
		t.Fatal(err)
	}
	if res.Files != 256 || res.Dirs != 510 {
		t.Errorf("restored %d files and %d directories, want 256 and 510", res.Files, res.Dirs)
	}
	for _, p := range paths {
		if _, err := os.Lstat(filepath.Join(target, p)); err != nil {
			t.Fatal(err)
		}
	}

	cfg := e.cfg
	cfg.MaxEntries = entries - 1
	low, err := Open(ctx, cfg, "v1", testPass)
	if err != nil {
		t.Fatal(err)
	}
	defer low.Close()
	if err := low.List(ctx, snap, "/", func(Entry) error { return nil }); !errors.Is(err, ErrTooManyEntries) {
		t.Errorf("List with MaxEntries %d: %v, want ErrTooManyEntries", cfg.MaxEntries, err)
	}
	if _, err := low.Restore(ctx, snap, RestoreOptions{Target: filepath.Join(t.TempDir(), "low")}); !errors.Is(err, ErrTooManyEntries) {
		t.Errorf("Restore with MaxEntries %d: %v, want ErrTooManyEntries", cfg.MaxEntries, err)
	}
	cfg.MaxEntries = entries
	exact, err := Open(ctx, cfg, "v1", testPass)
	if err != nil {
		t.Fatal(err)
	}
	defer exact.Close()
	if _, err := exact.Restore(ctx, snap, RestoreOptions{Target: filepath.Join(t.TempDir(), "exact")}); err != nil {
		t.Errorf("Restore with MaxEntries %d: %v", cfg.MaxEntries, err)
	}
}

// outsideDir makes a directory beside a restore target holding one file, x1, and
// returns its path and a function that fails the test if anything in it changed.
func outsideDir(t *testing.T) (string, func()) {
	t.Helper()
	outside := filepath.Join(t.TempDir(), "outside")
	writeFile(t, filepath.Join(outside, "x1"), []byte("not yours"), 0o640)
	if err := os.Chmod(outside, 0o750); err != nil {
		t.Fatal(err)
	}
	return outside, func() {
		t.Helper()
		if names := dirEntries(t, outside); !slices.Equal(names, []string{"x1"}) {
			t.Errorf("restore wrote outside its target: %s holds %q", outside, names)
		}
		if fi, err := os.Stat(outside); err != nil || fi.Mode().Perm() != 0o750 {
			t.Errorf("restore changed the mode of a directory outside its target: %v %v", fi.Mode(), err)
		}
		if fi, err := os.Stat(filepath.Join(outside, "x1")); err != nil || fi.Mode().Perm() != 0o640 || fi.Size() != 9 {
			t.Errorf("restore changed a file outside its target: %v %v", fi, err)
		}
		if b, err := os.ReadFile(filepath.Join(outside, "x1")); err != nil || !bytes.Equal(b, []byte("not yours")) {
			t.Errorf("restore changed a file outside its target: %q %v", b, err)
		}
	}
}

// TestRestoreSymlinkThenEntriesBelow: a tree holding a symlink a -> OUTSIDE and a
// directory a with a file below it (written by something other than tree.Encode) must
// not make Restore write through the symlink.
func TestRestoreSymlinkThenEntriesBelow(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	a := e.open(t)
	outside, unchanged := outsideDir(t)
	data := putPlain(t, e, a, []byte("evil"))
	type ext struct {
		_   struct{} `cbor:",toarray"`
		ID  chunk.ID
		Len uint32
		H   bool
	}
	sub := putTree(t, e, a, &tree.Tree{Nodes: []tree.Node{
		{Name: "x1", Type: tree.TypeFile, Mode: 0o777, Size: 4, Content: []tree.Extent{{ID: data, Len: 4}}},
		{Name: "x2", Type: tree.TypeFile, Mode: 0o777, Size: 4, Content: []tree.Extent{{ID: data, Len: 4}}},
	}})
	raw, err := cbor.Marshal(map[int]any{1: 2, 2: []map[int]any{
		{1: "a", 2: "symlink", 3: uint32(fs.ModeSymlink | 0o777), 13: outside},
		{1: "a", 2: "dir", 3: uint32(fs.ModeDir | 0o777), 15: sub},
	}})
	if err != nil {
		t.Fatal(err)
	}
	snap := meta.Snapshot{ID: chunk.ID{3}, Vault: "v1", Tree: putPlain(t, e, a, raw)}
	target := filepath.Join(t.TempDir(), "target")
	if _, err := a.Restore(ctx, snap, RestoreOptions{Target: target}); !errors.Is(err, tree.ErrInvalid) {
		t.Errorf("restore of a symlink and a directory of one name: %v, want tree.ErrInvalid", err)
	}
	unchanged()
}

// plantingStore, on the first Get of chunk id, runs plant once (before answering).
type plantingStore struct {
	*countingStore
	id    chunk.ID
	once  sync.Once
	plant func()
}

func (s *plantingStore) Get(ctx context.Context, id chunk.ID) ([]byte, error) {
	if id == s.id {
		s.once.Do(s.plant)
	}
	return s.countingStore.Get(ctx, id)
}

// TestRestorePlantedSymlink: while Restore runs, another process replaces a directory
// it created (a, holding file x1 and its hardlink x2) with a symlink to OUTSIDE, where
// a file x1 already is. Restore must not link, create or chmod anything there: it
// created a itself and must never follow a link it did not create.
func TestRestorePlantedSymlink(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	a := e.open(t)
	outside, unchanged := outsideDir(t)
	content := []byte("restored content")
	data := putPlain(t, e, a, content)
	file := func(name string) tree.Node {
		return tree.Node{Name: name, Type: tree.TypeFile, Mode: 0o600, Size: int64(len(content)),
			Content: []tree.Extent{{ID: data, Len: uint32(len(content))}}, Inode: 7, DeviceID: 1, Links: 2}
	}
	sub := putTree(t, e, a, &tree.Tree{Nodes: []tree.Node{file("x1"), file("x2")}})
	root := putTree(t, e, a, &tree.Tree{Nodes: []tree.Node{{Name: "a", Type: tree.TypeDir, Mode: uint32(fs.ModeDir | 0o777), Subtree: &sub}}})
	snap := meta.Snapshot{ID: chunk.ID{4}, Vault: "v1", Tree: root}

	// A target that already holds a symlink is not empty: refused, nothing followed.
	target := filepath.Join(t.TempDir(), "target")
	if err := os.Mkdir(target, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(target, "a")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Restore(ctx, snap, RestoreOptions{Target: target}); !errors.Is(err, ErrInvalid) {
		t.Errorf("restore into a target holding a symlink: %v, want ErrInvalid", err)
	}
	unchanged()

	target = filepath.Join(t.TempDir(), "target")
	planted := false
	cfg := e.cfg
	cfg.Chunks = &plantingStore{countingStore: e.chunks, id: data, plant: func() {
		// x1 exists (its content is being fetched): swap its directory for a symlink.
		dir := filepath.Join(target, "a")
		if err := os.Rename(dir, filepath.Join(target, "moved")); err != nil {
			t.Errorf("plant: %v", err)
			return
		}
		if err := os.Symlink(outside, dir); err != nil {
			t.Errorf("plant: %v", err)
			return
		}
		planted = true
	}}
	ra, err := Open(ctx, cfg, "v1", testPass)
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	_, err = ra.Restore(ctx, snap, RestoreOptions{Target: target})
	if !planted {
		t.Fatalf("the symlink was not planted (restore: %v)", err)
	}
	unchanged()
	if err == nil {
		t.Errorf("restore did not notice that a directory it created was replaced")
	} else {
		t.Logf("restore: %v", err)
	}
	if b, rerr := os.ReadFile(filepath.Join(target, "moved", "x1")); rerr != nil || !bytes.Equal(b, content) {
		t.Errorf("x1 in the moved directory: %q, %v", b, rerr)
	}
}

// TestTreeDepthBounded: a chain of distinct trees nested deeper than any backup can
// nest (maxTreeDepth) is refused by List and Restore with tree.ErrInvalid before they
// recurse into it.
func TestTreeDepthBounded(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	a := e.open(t)
	id := putTree(t, e, a, &tree.Tree{})
	for range maxTreeDepth + 1 {
		sub := id
		id = putTree(t, e, a, &tree.Tree{Nodes: []tree.Node{{Name: "d", Type: tree.TypeDir, Mode: uint32(fs.ModeDir | 0o755), Subtree: &sub}}})
	}
	snap := meta.Snapshot{ID: chunk.ID{5}, Vault: "v1", Tree: id}
	listed := 0
	if err := a.List(ctx, snap, "/", func(Entry) error { listed++; return nil }); !errors.Is(err, tree.ErrInvalid) || listed != 0 {
		t.Errorf("List of a too deep snapshot: %v after %d entries, want tree.ErrInvalid before any", err, listed)
	}
	target := filepath.Join(t.TempDir(), "target")
	if _, err := a.Restore(ctx, snap, RestoreOptions{Target: target}); !errors.Is(err, tree.ErrInvalid) {
		t.Errorf("Restore of a too deep snapshot: %v, want tree.ErrInvalid", err)
	}
	if _, err := os.Lstat(target); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("refused restore created its target: %v", err)
	}
}
