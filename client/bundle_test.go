package client

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/client/tree"
)

// makeSmallFiles writes n small files of varied sizes (one all zeros, one empty) and one
// file too large for a bundle into dir, and returns the small files' names.
func makeSmallFiles(t *testing.T, dir string, n int) []string {
	t.Helper()
	var names []string
	for i := range n {
		nm := fmt.Sprintf("s%03d", i)
		data := randBytes(uint64(1000+i), 1+(i*7919)%4000)
		if i == 9 {
			data = randBytes(9, bundleFileMax-1) // the largest that is bundled
		}
		switch i {
		case 3:
			data = make([]byte, 9000)
		case 5:
			data = nil
		}
		writeFile(t, filepath.Join(dir, nm), data, 0o644)
		setTime(t, filepath.Join(dir, nm), i)
		names = append(names, nm)
	}
	writeFile(t, filepath.Join(dir, "large"), randBytes(7, bundleFileMax+10), 0o644)
	return names
}

// TestBundleSmallFiles: a directory's small files share a few chunks, files begin at
// offsets inside them, and restore and dump give every file back byte for byte.
func TestBundleSmallFiles(t *testing.T) {
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), "src")
	names := makeSmallFiles(t, src, 60)
	e := newEnv(t)
	a := e.open(t)
	res, err := a.Backup(ctx, BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	offsets := 0
	var withOffset string
	uses := snapshotChunks(t, a, res.Snapshot, func(en Entry) {
		if en.Node.Offset != 0 {
			offsets++
			withOffset = en.Path
		}
		if en.Node.Size >= bundleFileMax && en.Node.Offset != 0 {
			t.Errorf("%s (%d bytes) begins inside a chunk", en.Path, en.Node.Size)
		}
	})
	// 59 small files with data (one is empty, one all zeros; about 130 KiB) and one
	// large file.
	if len(uses) >= 20 {
		t.Errorf("%d data chunks for 60 small files and one large one, want far fewer than one per file", len(uses))
	}
	if offsets < 10 {
		t.Errorf("%d files begin at an offset inside a chunk, want most of the small ones", offsets)
	}
	shared := 0
	for _, u := range uses {
		if len(u) > 1 {
			shared++
		}
	}
	if shared == 0 {
		t.Error("no chunk is shared by two files")
	}
	target := filepath.Join(t.TempDir(), "r")
	if _, err := a.Restore(ctx, res.Snapshot, RestoreOptions{Target: target}); err != nil {
		t.Fatal(err)
	}
	compareTrees(t, src, filepath.Join(target, "src"))
	for _, p := range []string{withOffset, "/src/" + names[3], "/src/large"} {
		var buf bytes.Buffer
		if err := a.Dump(ctx, res.Snapshot, p, &buf); err != nil {
			t.Fatalf("dump %s: %v", p, err)
		}
		want, err := os.ReadFile(filepath.Join(filepath.Dir(src), p))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Bytes(), want) {
			t.Errorf("dump %s: %d bytes differ from the file's %d", p, buf.Len(), len(want))
		}
	}
}

// TestBundleRereadsOnlyChanged: an unchanged re-backup reads nothing and keeps every
// bundled file's extents; after one small file changes only it is read, the others keep
// their chunks, and both snapshots restore exactly.
func TestBundleRereadsOnlyChanged(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	names := makeSmallFiles(t, src, 30)
	e := newEnv(t)
	a := e.open(t)
	first, err := a.Backup(ctx, BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	rec := &openRecorder{}
	second, err := a.Backup(ctx, BackupOptions{Paths: []string{src}, OnOpen: rec.hook})
	if err != nil {
		t.Fatal(err)
	}
	if got := rec.take(); len(got) != 0 || second.Snapshot.Tree != first.Snapshot.Tree {
		t.Fatalf("unchanged re-backup opened %q and made tree %s (first %s)", got, second.Snapshot.Tree.Str(), first.Snapshot.Tree.Str())
	}
	before := nodesByPath(t, a, first)
	changed := filepath.Join(src, names[10])
	writeFile(t, changed, randBytes(77, 1234), 0o644)
	third, err := a.Backup(ctx, BackupOptions{Paths: []string{src}, OnOpen: rec.hook})
	if err != nil {
		t.Fatal(err)
	}
	if got := rec.take(); !slices.Equal(got, []string{changed}) {
		t.Errorf("backup after one change opened %q, want only %s", got, changed)
	}
	after := nodesByPath(t, a, third)
	for p, n := range before {
		m := after[p]
		same := n.Offset == m.Offset && slices.Equal(n.Content, m.Content)
		if want := p != "/src/"+names[10]; same != want {
			t.Errorf("%s: content kept %v, want %v", p, same, want)
		}
	}
	if st := third.Snapshot.Stats; st.FilesChanged != 1 {
		t.Errorf("%d files changed, want 1", st.FilesChanged)
	}
	for i, snap := range []BackupResult{first, third} {
		target := filepath.Join(dir, fmt.Sprintf("r%d", i))
		if _, err := a.Restore(ctx, snap.Snapshot, RestoreOptions{Target: target}); err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			compareTrees(t, src, filepath.Join(target, "src"))
		}
	}
}

// nodesByPath lists a snapshot's file nodes by path.
func nodesByPath(t *testing.T, a *Agent, res BackupResult) map[string]tree.Node {
	t.Helper()
	out := map[string]tree.Node{}
	snapshotChunks(t, a, res.Snapshot, func(en Entry) { out[en.Path] = en.Node })
	return out
}

// TestBundleFileVanishesOrShrinks: a bundled file that is gone when its bundle is read is
// skipped and one that shrank is recorded at its new size; the bundle's other files are
// intact.
func TestBundleFileVanishesOrShrinks(t *testing.T) {
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), "src")
	names := makeSmallFiles(t, src, 20)
	gone, shrunk := filepath.Join(src, names[7]), filepath.Join(src, names[8])
	e := newEnv(t)
	a := e.open(t)
	a.beforeRead = func(p string) {
		switch p {
		case gone:
			os.Remove(p)
		case shrunk:
			if err := os.Truncate(p, 100); err != nil {
				t.Error(err)
			}
		}
	}
	srcInfo, err := os.Stat(src)
	if err != nil {
		t.Fatal(err)
	}
	res, err := a.Backup(ctx, BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	// The removal moved the directory's time after it was listed; restore it.
	if err := os.Chtimes(src, srcInfo.ModTime(), srcInfo.ModTime()); err != nil {
		t.Fatal(err)
	}
	if len(res.Skipped) != 1 || res.Skipped[0].Path != gone {
		t.Fatalf("skipped %+v, want only %s", res.Skipped, gone)
	}
	target := filepath.Join(t.TempDir(), "r")
	if _, err := a.Restore(ctx, res.Snapshot, RestoreOptions{Target: target}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(target, "src", names[8]))
	if err != nil || len(got) != 100 {
		t.Fatalf("shrunk file restored with %d bytes (%v), want 100", len(got), err)
	}
	setTime(t, shrunk, 8) // the truncation moved its time; the content must match
	compareTrees(t, src, filepath.Join(target, "src"))
}

// TestBundleExtents maps stream ranges onto bundle chunks, holes included.
func TestBundleExtents(t *testing.T) {
	id := func(b byte) chunk.ID { return chunk.ID{b} }
	chunks := []bundleChunk{{0, 100, id(1)}, {100, 50, chunk.ID{}}, {150, 80, id(3)}, {230, 20, id(4)}}
	cases := []struct {
		start, end int64
		want       []tree.Extent
		offset     uint32
		lo         int
	}{
		{0, 10, []tree.Extent{{ID: id(1), Len: 10}}, 0, 0},
		{10, 100, []tree.Extent{{ID: id(1), Len: 90}}, 10, 0},
		{90, 160, []tree.Extent{{ID: id(1), Len: 10}, {Len: 50, Hole: true}, {ID: id(3), Len: 10}}, 90, 0},
		{120, 140, []tree.Extent{{Len: 20, Hole: true}}, 0, 1},
		{120, 250, []tree.Extent{{Len: 30, Hole: true}, {ID: id(3), Len: 80}, {ID: id(4), Len: 20}}, 0, 1},
		{230, 230, nil, 0, 3},
	}
	for _, c := range cases {
		ext, off, lo := bundleExtents(chunks, 0, c.start, c.end)
		if !slices.Equal(ext, c.want) || off != c.offset || lo != c.lo {
			t.Errorf("[%d,%d): %v offset %d lo %d, want %v offset %d lo %d", c.start, c.end, ext, off, lo, c.want, c.offset, c.lo)
		}
	}
}
