package client

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/memstore"
	"github.com/cofferhq/coffer/client/crypt"
	"github.com/cofferhq/coffer/client/tree"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/memmeta"
	"github.com/cofferhq/coffer/placement"
)

// countingStore counts the chunks written through it.
type countingStore struct {
	chunkstore.Store
	puts atomic.Int64
}

func (c *countingStore) Put(ctx context.Context, chunks []chunkstore.Chunk) error {
	c.puts.Add(int64(len(chunks)))
	return c.Store.Put(ctx, chunks)
}

// probeMeta is the in-memory meta service (meta/memmeta, on a clock that ticks a second
// per reading) with the probes these tests need: a count of successful writes, a hook
// run before the next commit, and a count of commits refused for missing chunks.
type probeMeta struct {
	*memmeta.Service
	now     func() time.Time // the service's clock
	writes  atomic.Int64
	refused atomic.Int64
	mu      sync.Mutex
	before  func() // run once at the start of the next CommitSnapshot
}

func newProbeMeta(t testing.TB, chunks chunkstore.Store) *probeMeta {
	t.Helper()
	var tick atomic.Int64
	now := func() time.Time { return time.Unix(1_700_000_000+tick.Add(1), 0).UTC() }
	m := placement.Map{Epoch: 1, PGCount: 1, Profile: placement.DefaultProfile}
	svc, err := memmeta.New(memmeta.Config{Chunks: chunks, Map: &m, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return &probeMeta{Service: svc, now: now}
}

// beforeCommit sets fn to run once at the start of the next CommitSnapshot.
func (m *probeMeta) beforeCommit(fn func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.before = fn
}

// refusedCommits is how many commits were refused for missing chunks.
func (m *probeMeta) refusedCommits() int64 { return m.refused.Load() }

func (m *probeMeta) CreateVault(ctx context.Context, v meta.Vault) (meta.Vault, error) {
	v, err := m.Service.CreateVault(ctx, v)
	if err == nil {
		m.writes.Add(1)
	}
	return v, err
}

func (m *probeMeta) CommitSnapshot(ctx context.Context, s meta.Snapshot) (meta.Snapshot, error) {
	m.mu.Lock()
	hook := m.before
	m.before = nil
	m.mu.Unlock()
	if hook != nil {
		hook()
	}
	s, err := m.Service.CommitSnapshot(ctx, s)
	switch {
	case err == nil:
		m.writes.Add(1)
	case errors.Is(err, meta.ErrMissingChunks):
		m.refused.Add(1)
	}
	return s, err
}

type env struct {
	chunks *countingStore
	meta   *probeMeta
	cfg    Config
}

var testPass = []byte("correct horse battery staple")

func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvStore(t, memstore.NewChunks())
}

func newEnvStore(t testing.TB, s chunkstore.Store) *env {
	t.Helper()
	cs := &countingStore{Store: s}
	m := newProbeMeta(t, cs)
	var clock atomic.Int64
	e := &env{chunks: cs, meta: m, cfg: Config{
		Meta:    m,
		Chunks:  cs,
		Host:    "testhost",
		Workers: 2,
		Now:     func() time.Time { return time.Unix(1_800_000_000+clock.Add(1), 0) },
		Argon2:  crypt.TestArgon2Params(),
	}}
	if _, err := InitVault(context.Background(), e.cfg, "v1", testPass); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) open(t testing.TB) *Agent {
	t.Helper()
	a, err := Open(context.Background(), e.cfg, "v1", testPass)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func writeFile(t testing.TB, p string, data []byte, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for k := range 8 {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	return b
}

// makeTree builds a source tree with every kind of file and fixed mtimes. It reports
// whether the file system made sparse.bin sparse.
func makeTree(t *testing.T, root string) (sparse bool) {
	t.Helper()
	writeFile(t, filepath.Join(root, "hello.txt"), []byte("hello, coffer\n"), 0o644)
	writeFile(t, filepath.Join(root, "empty"), nil, 0o644)
	writeFile(t, filepath.Join(root, "random.bin"), randBytes(1, 3<<20), 0o644)
	writeFile(t, filepath.Join(root, "zeros.bin"), make([]byte, 1<<20), 0o644)
	writeFile(t, filepath.Join(root, "secret"), []byte("only me"), 0o600)
	writeFile(t, filepath.Join(root, "setuid-prog"), []byte("#!/bin/sh\n"), 0o4755)
	writeFile(t, filepath.Join(root, "with space ünïcødé 文件"), []byte("names"), 0o644)
	writeFile(t, filepath.Join(root, "-dash\nnewline"), []byte("odd"), 0o644)
	writeFile(t, filepath.Join(root, "a", "b", "c", "deep.txt"), []byte("deep"), 0o644)
	writeFile(t, filepath.Join(root, "hard1"), []byte("linked content"), 0o640)
	if err := os.MkdirAll(filepath.Join(root, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(root, "hard1"), filepath.Join(root, "sub", "hard2")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "emptydir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "setgid-dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(root, "setgid-dir"), 0o2775|fs.ModeSetgid); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "setgid-dir", "f"), []byte("g"), 0o644)
	if err := os.Symlink("hello.txt", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/nonexistent/target", filepath.Join(root, "dangling")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(root, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Sparse: 4 KiB data, a 4 MiB hole, 4 KiB data.
	f, err := os.Create(filepath.Join(root, "sparse.bin"))
	if err != nil {
		t.Fatal(err)
	}
	head, tail := randBytes(2, 4096), randBytes(3, 4096)
	if _, err := f.WriteAt(head, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(tail, 4096+4<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	fi, _ := os.Stat(filepath.Join(root, "sparse.bin"))
	sparse = fi.Sys().(*syscall.Stat_t).Blocks*512 < fi.Size()/2

	// Fixed times, directories after their content.
	var dirs []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if d.IsDir() {
			dirs = append(dirs, p)
			return nil
		}
		setTime(t, p, len(p))
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		setTime(t, dirs[i], i)
	}
	return sparse
}

func setTime(t testing.TB, p string, k int) {
	t.Helper()
	ts := unix.NsecToTimespec(time.Date(2021, 3, 4, 5, 6, 7, 123456789, time.UTC).UnixNano() + int64(k)*1_000_000_007)
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatal(err)
	}
}

// compareTrees checks that got is a bit-identical copy of want: names, types, modes,
// mtimes, content, symlink targets and (as root) ownership.
func compareTrees(t *testing.T, want, got string) {
	t.Helper()
	list := func(root string) []string {
		var out []string
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				t.Fatal(err)
			}
			rel, _ := filepath.Rel(root, p)
			out = append(out, rel)
			return nil
		})
		return out
	}
	wl, gl := list(want), list(got)
	if !slices.Equal(wl, gl) {
		t.Fatalf("restored names differ:\nwant %q\n got %q", wl, gl)
	}
	for _, rel := range wl {
		wp, gp := filepath.Join(want, rel), filepath.Join(got, rel)
		wi, err := os.Lstat(wp)
		if err != nil {
			t.Fatal(err)
		}
		gi, err := os.Lstat(gp)
		if err != nil {
			t.Fatal(err)
		}
		if wi.Mode() != gi.Mode() {
			t.Errorf("%s: mode %v, want %v", rel, gi.Mode(), wi.Mode())
		}
		if !wi.ModTime().Equal(gi.ModTime()) {
			t.Errorf("%s: mtime %v, want %v", rel, gi.ModTime(), wi.ModTime())
		}
		ws, gs := wi.Sys().(*syscall.Stat_t), gi.Sys().(*syscall.Stat_t)
		if os.Geteuid() == 0 && (ws.Uid != gs.Uid || ws.Gid != gs.Gid) {
			t.Errorf("%s: owner %d:%d, want %d:%d", rel, gs.Uid, gs.Gid, ws.Uid, ws.Gid)
		}
		switch {
		case wi.Mode().IsRegular():
			wb, _ := os.ReadFile(wp)
			gb, _ := os.ReadFile(gp)
			if !bytes.Equal(wb, gb) {
				t.Errorf("%s: content differs (%d vs %d bytes)", rel, len(gb), len(wb))
			}
		case wi.Mode()&fs.ModeSymlink != 0:
			wl, _ := os.Readlink(wp)
			gl, _ := os.Readlink(gp)
			if wl != gl {
				t.Errorf("%s: link target %q, want %q", rel, gl, wl)
			}
		}
	}
}

func TestBackupRestoreEveryKind(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	sparse := makeTree(t, src)
	e := newEnv(t)
	a := e.open(t)

	var progressCalls atomic.Int64
	res, err := a.Backup(ctx, BackupOptions{Paths: []string{src}, Tags: []string{"t1"}, Progress: func(Progress) { progressCalls.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	st := res.Snapshot.Stats
	if st.Status != StatusCompleted || len(res.Skipped) != 0 {
		t.Fatalf("status %q, skipped %v", st.Status, res.Skipped)
	}
	if progressCalls.Load() == 0 {
		t.Error("progress never reported")
	}
	const files = 13 // regular files in makeTree, hardlinks counted per name
	if st.FilesNew != files || st.FilesChanged != 0 || st.FilesUnmodified != 0 {
		t.Errorf("first backup: new %d changed %d unmodified %d, want %d/0/0", st.FilesNew, st.FilesChanged, st.FilesUnmodified, files)
	}
	if st.DirsTotal != 7 {
		t.Errorf("dirs %d, want 7", st.DirsTotal)
	}
	// 3 MiB random must be stored; 1 MiB zeros and the 4 MiB hole must not.
	if st.BytesAdded < 3<<20 || st.BytesAdded > 3<<20+64<<10 {
		t.Errorf("bytes added %d, want about 3 MiB", st.BytesAdded)
	}
	if res.Snapshot.Time.IsZero() || res.Snapshot.Paths[0] != src || res.Snapshot.Host != "testhost" || res.Snapshot.Tags[0] != "t1" {
		t.Errorf("snapshot fields: %+v", res.Snapshot)
	}

	target := filepath.Join(dir, "restore")
	rr, err := a.Restore(ctx, res.Snapshot, RestoreOptions{Target: target})
	if err != nil {
		t.Fatal(err)
	}
	if rr.Files != files {
		t.Errorf("restored %d files, want %d", rr.Files, files)
	}
	compareTrees(t, src, filepath.Join(target, "src"))
	h1, _ := os.Stat(filepath.Join(target, "src", "hard1"))
	h2, _ := os.Stat(filepath.Join(target, "src", "sub", "hard2"))
	if !os.SameFile(h1, h2) {
		t.Error("hardlinks restored as separate files")
	}
	if sparse {
		fi, _ := os.Stat(filepath.Join(target, "src", "sparse.bin"))
		if blocks := fi.Sys().(*syscall.Stat_t).Blocks * 512; blocks > fi.Size()/2 {
			t.Errorf("sparse file restored with %d bytes allocated for %d bytes", blocks, fi.Size())
		}
	} else {
		t.Log("file system does not make sparse files; sparse allocation not checked")
	}
	zi, _ := os.Stat(filepath.Join(target, "src", "zeros.bin"))
	if blocks := zi.Sys().(*syscall.Stat_t).Blocks * 512; sparse && blocks > zi.Size()/2 {
		t.Errorf("all-zero file restored with %d bytes allocated", blocks)
	}

	// A second backup of the same tree stores (almost) nothing.
	putsBefore := e.chunks.puts.Load()
	res2, err := a.Backup(ctx, BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	st2 := res2.Snapshot.Stats
	if st2.BytesAdded > 16<<10 {
		t.Errorf("second backup added %d bytes", st2.BytesAdded)
	}
	if got := e.chunks.puts.Load() - putsBefore; got != st2.ChunksAdded || got > 2 {
		t.Errorf("second backup put %d chunks, stats say %d", got, st2.ChunksAdded)
	}
	if st2.FilesUnmodified != files || st2.FilesNew != 0 || st2.FilesChanged != 0 {
		t.Errorf("second backup: new %d changed %d unmodified %d", st2.FilesNew, st2.FilesChanged, st2.FilesUnmodified)
	}
	if res2.Snapshot.Parent == nil || *res2.Snapshot.Parent != res.Snapshot.ID {
		t.Errorf("parent %v, want %s", res2.Snapshot.Parent, res.Snapshot.ID.Str())
	}

	// Change one file, add one: counted as changed and new.
	writeFile(t, filepath.Join(src, "hello.txt"), []byte("changed"), 0o644)
	writeFile(t, filepath.Join(src, "a", "new.txt"), []byte("new"), 0o644)
	res3, err := a.Backup(ctx, BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	st3 := res3.Snapshot.Stats
	if st3.FilesNew != 1 || st3.FilesChanged != 1 || st3.FilesUnmodified != files-1 {
		t.Errorf("third backup: new %d changed %d unmodified %d", st3.FilesNew, st3.FilesChanged, st3.FilesUnmodified)
	}

	// List shows every path of the source.
	var listed []string
	if err := a.List(ctx, res.Snapshot, "/", func(en Entry) error { listed = append(listed, en.Path); return nil }); err != nil {
		t.Fatal(err)
	}
	var want []string
	filepath.WalkDir(dir+"/src", func(p string, d fs.DirEntry, err error) error {
		if p != src && !strings.HasSuffix(p, "new.txt") {
			rel, _ := filepath.Rel(dir, p)
			want = append(want, "/"+rel)
		}
		return nil
	})
	want = append([]string{"/src"}, want...)
	sort.Strings(want)
	sort.Strings(listed)
	if !slices.Equal(listed, want) {
		t.Errorf("List:\n got %q\nwant %q", listed, want)
	}
	var sub []string
	if err := a.List(ctx, res.Snapshot, "/src/a", func(en Entry) error { sub = append(sub, en.Path); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sub, []string{"/src/a", "/src/a/b", "/src/a/b/c", "/src/a/b/c/deep.txt"}) {
		t.Errorf("List /src/a: %q", sub)
	}
	if err := a.List(ctx, res.Snapshot, "/src/nope", func(Entry) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Errorf("List of a missing path: %v", err)
	}

	// Dump one file, a sparse one and refuse a directory.
	for _, name := range []string{"random.bin", "sparse.bin", "zeros.bin", "empty"} {
		var buf bytes.Buffer
		if err := a.Dump(ctx, res.Snapshot, "/src/"+name, &buf); err != nil {
			t.Fatal(err)
		}
		wantB, _ := os.ReadFile(filepath.Join(target, "src", name))
		if !bytes.Equal(buf.Bytes(), wantB) {
			t.Errorf("Dump %s: %d bytes differ from the source", name, buf.Len())
		}
	}
	if err := a.Dump(ctx, res.Snapshot, "/src/a", &bytes.Buffer{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Dump of a directory: %v", err)
	}

	// Include restores only the chosen subtree (with its parents).
	t2 := filepath.Join(dir, "partial")
	rr2, err := a.Restore(ctx, res.Snapshot, RestoreOptions{Target: t2, Include: []string{"/src/a/b"}})
	if err != nil {
		t.Fatal(err)
	}
	if rr2.Files != 1 {
		t.Errorf("partial restore: %d files, want 1", rr2.Files)
	}
	if b, err := os.ReadFile(filepath.Join(t2, "src", "a", "b", "c", "deep.txt")); err != nil || string(b) != "deep" {
		t.Errorf("partial restore: deep.txt: %q %v", b, err)
	}
	if _, err := os.Lstat(filepath.Join(t2, "src", "hello.txt")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("partial restore wrote hello.txt: %v", err)
	}
	if _, err := a.Restore(ctx, res.Snapshot, RestoreOptions{Target: filepath.Join(dir, "p3"), Include: []string{"/src/missing"}}); !errors.Is(err, ErrNotFound) {
		t.Errorf("include of a missing path: %v", err)
	}
	// A non-empty target is refused.
	if _, err := a.Restore(ctx, res.Snapshot, RestoreOptions{Target: target}); !errors.Is(err, ErrInvalid) {
		t.Errorf("restore into a non-empty target: %v", err)
	}
}

func TestDeviceNodeRoundTrip(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("device nodes need root")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "dev")
	os.Mkdir(src, 0o755)
	if err := unix.Mknod(filepath.Join(src, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Skipf("mknod not permitted here: %v", err)
	}
	e := newEnv(t)
	a := e.open(t)
	res, err := a.Backup(context.Background(), BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "r")
	if _, err := a.Restore(context.Background(), res.Snapshot, RestoreOptions{Target: target}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(filepath.Join(target, "dev", "null"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&fs.ModeCharDevice == 0 || fi.Sys().(*syscall.Stat_t).Rdev != unix.Mkdev(1, 3) {
		t.Errorf("restored device: mode %v rdev %d", fi.Mode(), fi.Sys().(*syscall.Stat_t).Rdev)
	}
}

func TestWrongPassphraseChangesNothing(t *testing.T) {
	e := newEnv(t)
	writes, puts := e.meta.writes.Load(), e.chunks.puts.Load()
	_, err := Open(context.Background(), e.cfg, "v1", []byte("wrong"))
	if !errors.Is(err, ErrWrongPassphrase) || !errors.Is(err, crypt.ErrWrongPassphrase) {
		t.Fatalf("got %v, want ErrWrongPassphrase", err)
	}
	if e.meta.writes.Load() != writes || e.chunks.puts.Load() != puts {
		t.Error("a failed open changed state")
	}
	if _, err := Open(context.Background(), e.cfg, "nope", testPass); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("open of a missing vault: %v", err)
	}
	if _, err := InitVault(context.Background(), e.cfg, "v1", testPass); !errors.Is(err, meta.ErrExists) {
		t.Errorf("init of an existing vault: %v", err)
	}
	bad := e.cfg
	bad.Now = nil
	if _, err := Open(context.Background(), bad, "v1", testPass); !errors.Is(err, ErrInvalid) {
		t.Errorf("config without clock: %v", err)
	}
}

// prefixRand yields snapshot IDs that all start with 0xab 0xcd.
type prefixRand struct {
	mu sync.Mutex
	n  byte
}

func (r *prefixRand) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	for i := range p {
		p[i] = r.n
	}
	if len(p) >= 2 {
		p[0], p[1] = 0xab, 0xcd
	}
	return len(p), nil
}

func TestFindSnapshot(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.cfg.Rand = &prefixRand{}
	a := e.open(t)
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "f"), []byte("x"), 0o644)
	if _, err := a.FindSnapshot(ctx, "latest"); !errors.Is(err, ErrSnapshotNotFound) {
		t.Errorf("latest in an empty vault: %v", err)
	}
	var snaps []meta.Snapshot
	for range 2 {
		r, err := a.Backup(ctx, BackupOptions{Paths: []string{src}})
		if err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, r.Snapshot)
	}
	for ref, want := range map[string]meta.SnapshotID{
		snaps[0].ID.String():                      snaps[0].ID,
		strings.ToUpper(snaps[1].ID.String()[:8]): snaps[1].ID,
		"latest": snaps[1].ID,
	} {
		got, err := a.FindSnapshot(ctx, ref)
		if err != nil || got.ID != want {
			t.Errorf("FindSnapshot(%q) = %s, %v; want %s", ref, got.ID.Str(), err, want.Str())
		}
	}
	if _, err := a.FindSnapshot(ctx, "abcd"); !errors.Is(err, ErrAmbiguous) || !strings.Contains(err.Error(), "abcd") {
		t.Errorf("ambiguous prefix: %v", err)
	}
	for _, ref := range []string{"ffffffff", "ab", "xyz!", strings.Repeat("0", 64), ""} {
		if _, err := a.FindSnapshot(ctx, ref); !errors.Is(err, ErrSnapshotNotFound) {
			t.Errorf("FindSnapshot(%q): %v, want ErrSnapshotNotFound", ref, err)
		}
	}
	all, err := a.Snapshots(ctx)
	if err != nil || len(all) != 2 {
		t.Errorf("Snapshots: %d, %v", len(all), err)
	}
}

func TestUnreadableFileIsSkipped(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	writeFile(t, filepath.Join(src, "keep"), []byte("keep"), 0o644)
	writeFile(t, filepath.Join(src, "vanishes"), []byte("gone soon"), 0o644)
	locked := os.Geteuid() != 0
	if locked {
		writeFile(t, filepath.Join(src, "locked"), []byte("no"), 0o000)
		writeFile(t, filepath.Join(src, "lockeddir", "x"), []byte("no"), 0o644)
		os.Chmod(filepath.Join(src, "lockeddir"), 0o000)
		t.Cleanup(func() { os.Chmod(filepath.Join(src, "lockeddir"), 0o755) })
	}
	e := newEnv(t)
	a := e.open(t)
	a.beforeRead = func(p string) {
		if filepath.Base(p) == "vanishes" {
			os.Remove(p)
		}
	}
	res, err := a.Backup(ctx, BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(src, "vanishes")}
	if locked {
		want = append(want, filepath.Join(src, "locked"), filepath.Join(src, "lockeddir"))
		sort.Strings(want)
	}
	var got []string
	for _, s := range res.Skipped {
		got = append(got, s.Path)
		if s.Err == "" {
			t.Errorf("%s skipped without a reason", s.Path)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("skipped %q, want %q", got, want)
	}
	if st := res.Snapshot.Stats; st.Status != StatusPartiallyFailed || st.Skipped != int64(len(want)) {
		t.Errorf("status %q skipped %d", st.Status, st.Skipped)
	}
	target := filepath.Join(dir, "r")
	if _, err := a.Restore(ctx, res.Snapshot, RestoreOptions{Target: target}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(target, "src", "keep")); string(b) != "keep" {
		t.Errorf("keep restored as %q", b)
	}
	if _, err := os.Lstat(filepath.Join(target, "src", "vanishes")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("vanished file restored: %v", err)
	}
}

func TestBackupRefusesBadPaths(t *testing.T) {
	e := newEnv(t)
	a := e.open(t)
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "x", "data"), 0o755)
	os.MkdirAll(filepath.Join(dir, "y", "data"), 0o755)
	for name, paths := range map[string][]string{
		"none":      nil,
		"missing":   {filepath.Join(dir, "nope")},
		"same base": {filepath.Join(dir, "x", "data"), filepath.Join(dir, "y", "data")},
		"root+more": {"/", dir},
	} {
		_, err := a.Backup(context.Background(), BackupOptions{Paths: paths})
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", name, err)
		}
	}
	if s, _ := a.Snapshots(context.Background()); len(s) != 0 {
		t.Errorf("refused backups committed %d snapshots", len(s))
	}
}

func TestTwoPathsAndFileArgument(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "one", "a"), []byte("a"), 0o644)
	writeFile(t, filepath.Join(dir, "two.txt"), []byte("two"), 0o644)
	e := newEnv(t)
	a := e.open(t)
	res, err := a.Backup(ctx, BackupOptions{Paths: []string{filepath.Join(dir, "two.txt"), filepath.Join(dir, "one")}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	a.List(ctx, res.Snapshot, "", func(en Entry) error { got = append(got, en.Path); return nil })
	if !slices.Equal(got, []string{"/one", "/one/a", "/two.txt"}) {
		t.Errorf("listing %q", got)
	}
	if !slices.IsSorted(res.Snapshot.Paths) || len(res.Snapshot.Paths) != 2 {
		t.Errorf("paths %q", res.Snapshot.Paths)
	}
}

// TestMaliciousTreeRefused: a tree naming "../evil" (written by something other than
// tree.Encode) must not make Restore write outside its target.
func TestMaliciousTreeRefused(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	a := e.open(t)
	dataID := a.keys.ChunkID([]byte("evil"))
	sealed, err := a.keys.Seal(nil, dataID, []byte("evil"))
	if err != nil {
		t.Fatal(err)
	}
	type ext struct {
		_   struct{} `cbor:",toarray"`
		ID  chunk.ID
		Len uint32
		H   bool
	}
	raw, err := cbor.Marshal(map[int]any{1: 1, 2: []map[int]any{{1: "../evil", 2: "file", 3: 0o644, 8: 4, 14: []ext{{ID: dataID, Len: 4}}}}})
	if err != nil {
		t.Fatal(err)
	}
	treeID := a.keys.ChunkID(raw)
	sealedTree, err := a.keys.Seal(nil, treeID, raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.chunks.Put(ctx, []chunkstore.Chunk{{ID: dataID, Data: sealed}, {ID: treeID, Data: sealedTree}}); err != nil {
		t.Fatal(err)
	}
	snap := meta.Snapshot{ID: chunk.ID{1}, Vault: "v1", Tree: treeID}
	dir := t.TempDir()
	target := filepath.Join(dir, "inner", "target")
	_, err = a.Restore(ctx, snap, RestoreOptions{Target: target})
	if !errors.Is(err, tree.ErrInvalid) {
		t.Fatalf("restore of a malicious tree: %v, want tree.ErrInvalid", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "inner", "evil")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("restore wrote outside its target: %v", err)
	}
	if err := a.List(ctx, snap, "/", func(Entry) error { return nil }); !errors.Is(err, tree.ErrInvalid) {
		t.Errorf("List of a malicious tree: %v", err)
	}
}

func TestClosedAgent(t *testing.T) {
	e := newEnv(t)
	a := e.open(t)
	a.Close()
	if _, err := a.Snapshots(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
}

func BenchmarkBackup64MiB(b *testing.B) {
	benchmarkBackup(b, func() chunkstore.Store { return memstore.NewChunks() })
}

func benchmarkBackup(b *testing.B, newStore func() chunkstore.Store) {
	dir := b.TempDir()
	var total int64
	for i := range 12 {
		data := randBytes(uint64(100+i), 4<<20)
		writeFile(b, filepath.Join(dir, "big", string(rune('a'+i))+".bin"), data, 0o644)
		total += int64(len(data))
	}
	for i := range 1024 {
		data := randBytes(uint64(1000+i), 16<<10)
		writeFile(b, filepath.Join(dir, "small", string(rune('a'+i%26)), strings.Repeat("x", 1+i/26)), data, 0o644)
		total += int64(len(data))
	}
	b.SetBytes(total)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		e := newEnvStore(b, newStore())
		a, err := Open(context.Background(), e.cfg, "v1", testPass)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := a.Backup(context.Background(), BackupOptions{Paths: []string{dir}}); err != nil {
			b.Fatal(err)
		}
	}
}
