package client

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/memstore"
)

// getCounter counts Get calls (tree downloads during a backup).
type getCounter struct {
	chunkstore.Store
	gets atomic.Int64
}

func (g *getCounter) Get(ctx context.Context, id chunk.ID) ([]byte, error) {
	g.gets.Add(1)
	return g.Store.Get(ctx, id)
}

// openRecorder collects the paths a backup opened.
type openRecorder struct {
	mu    sync.Mutex
	paths []string
}

func (r *openRecorder) hook(p string) {
	r.mu.Lock()
	r.paths = append(r.paths, p)
	r.mu.Unlock()
}

func (r *openRecorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.paths
	r.paths = nil
	sort.Strings(out)
	return out
}

// makeManyFiles writes n small files in directories of 100 and returns their paths.
func makeManyFiles(t *testing.T, root string, n int) []string {
	t.Helper()
	paths := make([]string, 0, n)
	for i := range n {
		dir := filepath.Join(root, fmt.Sprintf("d%03d", i/100))
		if i%100 == 0 {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		p := filepath.Join(dir, fmt.Sprintf("f%05d", i))
		if err := os.WriteFile(p, randBytes(uint64(i+1), 64+i%200), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

// TestIncrementalOpensOnlyChanged is the acceptance test of change detection: 10,000
// files backed up, 3 changed, backed up again: exactly those 3 are opened, the parent's
// trees come from the local cache (no download), and the snapshot restores
// bit-identically. Then --force reads everything, and a lost cache is rebuilt from the
// cluster without opening any file.
func TestIncrementalOpensOnlyChanged(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	const n = 10000
	paths := makeManyFiles(t, src, n)

	gc := &getCounter{Store: memstore.NewChunks()}
	e := newEnvStore(t, gc)
	e.cfg.CacheDir = filepath.Join(dir, "cache")
	a := e.open(t)
	rec := &openRecorder{}
	backup := func(opts BackupOptions) BackupResult {
		t.Helper()
		opts.Paths = []string{src}
		opts.OnOpen = rec.hook
		res, err := a.Backup(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}

	first := backup(BackupOptions{})
	if got := len(rec.take()); got != n {
		t.Fatalf("first backup opened %d files, want %d", got, n)
	}
	if st := first.Snapshot.Stats; st.FilesNew != n {
		t.Fatalf("first backup: %d new files, want %d", st.FilesNew, n)
	}

	changed := []string{paths[17], paths[5050], paths[9999]}
	for i, p := range changed {
		// Same size, new content: only the metadata tells.
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b[0] ^= 0xff
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		setTime(t, p, 100+i)
	}
	sort.Strings(changed)

	gc.gets.Store(0)
	second := backup(BackupOptions{})
	if got := rec.take(); !slices.Equal(got, changed) {
		t.Fatalf("second backup opened %d files %q, want exactly %q", len(got), got[:min(len(got), 5)], changed)
	}
	// NB: the fake meta service reads the reference lists through the same store.
	if g := gc.gets.Load() - int64(len(second.Snapshot.Refs)); g != 0 {
		t.Errorf("second backup downloaded %d chunks; the parent's trees should come from the local cache", g)
	}
	st := second.Snapshot.Stats
	if st.FilesChanged != 3 || st.FilesUnmodified != n-3 || st.FilesNew != 0 {
		t.Errorf("second backup: new %d changed %d unmodified %d", st.FilesNew, st.FilesChanged, st.FilesUnmodified)
	}
	if second.Snapshot.Parent == nil || *second.Snapshot.Parent != first.Snapshot.ID {
		t.Errorf("second backup's parent %v, want %s", second.Snapshot.Parent, first.Snapshot.ID.Str())
	}
	target := filepath.Join(dir, "restore")
	if _, err := a.Restore(ctx, second.Snapshot, RestoreOptions{Target: target}); err != nil {
		t.Fatal(err)
	}
	compareTrees(t, src, filepath.Join(target, "src"))

	// --force reads every file again.
	backup(BackupOptions{Force: true})
	if got := len(rec.take()); got != n {
		t.Errorf("forced backup opened %d files, want %d", got, n)
	}

	// A lost cache is rebuilt from the cluster: trees are downloaded, no file is opened.
	if err := os.RemoveAll(e.cfg.CacheDir); err != nil {
		t.Fatal(err)
	}
	gc.gets.Store(0)
	backup(BackupOptions{})
	if got := rec.take(); len(got) != 0 {
		t.Errorf("backup after losing the cache opened %d files", len(got))
	}
	if g := gc.gets.Load(); g < 101 {
		t.Errorf("backup after losing the cache downloaded %d trees, want the parent's 101", g)
	}
	gc.gets.Store(0)
	res := backup(BackupOptions{})
	if g := gc.gets.Load() - int64(len(res.Snapshot.Refs)); g != 0 {
		t.Errorf("backup after the cache was rebuilt downloaded %d chunks", g)
	}

	// --parent picks an older snapshot: the 3 files differ from it again.
	res = backup(BackupOptions{Parent: first.Snapshot.ID.String()})
	if got := rec.take(); !slices.Equal(got, changed) {
		t.Errorf("backup against the first snapshot opened %q, want %q", got, changed)
	}
	if res.Snapshot.Parent == nil || *res.Snapshot.Parent != first.Snapshot.ID {
		t.Errorf("--parent: recorded parent %v, want %s", res.Snapshot.Parent, first.Snapshot.ID.Str())
	}
	if _, err := a.Backup(ctx, BackupOptions{Paths: []string{src}, Parent: "ffffffff"}); err == nil {
		t.Error("backup with an unknown --parent succeeded")
	}
}

// TestChangeDetectionMetadata checks each compared field: a change of size, mtime, ctime
// (chmod and back), inode (replace by rename) or mode makes the file read; only the
// untouched file is reused.
func TestChangeDetectionMetadata(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	names := []string{"size", "mtime", "ctime", "inode", "mode", "same"}
	// Files too large for bundles: re-read small files share chunks, so their content
	// lists change with a neighbour's (TestBundleRereadsOnlyChanged covers those).
	for i, nm := range names {
		writeFile(t, filepath.Join(src, nm), randBytes(uint64(i), bundleFileMax+1000), 0o644)
		setTime(t, filepath.Join(src, nm), i)
	}
	e := newEnv(t)
	a := e.open(t)
	if _, err := a.Backup(ctx, BackupOptions{Paths: []string{src}}); err != nil {
		t.Fatal(err)
	}
	p := func(nm string) string { return filepath.Join(src, nm) }
	if err := os.WriteFile(p("size"), randBytes(0, bundleFileMax+1001), 0o644); err != nil {
		t.Fatal(err)
	}
	setTime(t, p("size"), 0)
	setTime(t, p("mtime"), 50)
	if err := os.Chmod(p("ctime"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p("ctime"), 0o644); err != nil {
		t.Fatal(err)
	}
	tmp := p("inode.new")
	writeFile(t, tmp, randBytes(3, bundleFileMax+1000), 0o644)
	setTime(t, tmp, 3)
	if err := os.Rename(tmp, p("inode")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p("mode"), 0o600); err != nil {
		t.Fatal(err)
	}
	rec := &openRecorder{}
	res, err := a.Backup(ctx, BackupOptions{Paths: []string{src}, OnOpen: rec.hook})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, nm := range names[:5] {
		want = append(want, p(nm))
	}
	sort.Strings(want)
	if got := rec.take(); !slices.Equal(got, want) {
		t.Errorf("opened %q, want %q", got, want)
	}
	// Stats classify by content: only "size" got new bytes.
	if st := res.Snapshot.Stats; st.FilesChanged != 1 || st.FilesUnmodified != 5 {
		t.Errorf("changed %d unmodified %d, want 1 and 5", st.FilesChanged, st.FilesUnmodified)
	}
}

// TestBackupProgressFigures checks the progress callback's last report: the scan found
// every file and byte, bytes read count only what was opened, and the uploaded figures
// match the snapshot's.
func TestBackupProgressFigures(t *testing.T) {
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), "src")
	for i := range 10 {
		writeFile(t, filepath.Join(src, "d", fmt.Sprintf("f%d", i)), randBytes(uint64(i), 100<<10), 0o644)
	}
	e := newEnv(t)
	a := e.open(t)
	var mu sync.Mutex
	var last Progress
	progress := func(p Progress) { mu.Lock(); last = p; mu.Unlock() }
	res, err := a.Backup(ctx, BackupOptions{Paths: []string{src}, Progress: progress})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	p := last
	mu.Unlock()
	if !p.ScanDone || p.TotalFiles != 10 || p.TotalBytes != 10*100<<10 {
		t.Errorf("scan: done %v, %d files, %d bytes", p.ScanDone, p.TotalFiles, p.TotalBytes)
	}
	if p.Files != 10 || p.Bytes != 10*100<<10 || p.BytesRead != 10*100<<10 || res.BytesRead != p.BytesRead {
		t.Errorf("progress %+v, result read %d", p, res.BytesRead)
	}
	if p.BytesAdded != res.Snapshot.Stats.BytesAdded || p.BytesChanged < 10*100<<10 {
		t.Errorf("progress added %d changed %d, snapshot added %d", p.BytesAdded, p.BytesChanged, res.Snapshot.Stats.BytesAdded)
	}
	// Unchanged: nothing read, everything processed.
	res, err = a.Backup(ctx, BackupOptions{Paths: []string{src}, Progress: progress})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	p = last
	mu.Unlock()
	if p.BytesRead != 0 || res.BytesRead != 0 || p.Bytes != 10*100<<10 {
		t.Errorf("unchanged re-backup: read %d (result %d), processed %d", p.BytesRead, res.BytesRead, p.Bytes)
	}
}
