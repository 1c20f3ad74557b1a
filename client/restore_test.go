package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/client/tree"
	"github.com/cofferhq/coffer/meta"
	"golang.org/x/sys/unix"
)

// makeRestoreTree writes a tree for the parallel restore: many small files with distinct
// modification times in several directories (one of them read-only), read-only files, a
// multi-chunk read-only file with a hardlink in another directory, and distinct
// directory times. It returns the multi-chunk file's path.
func makeRestoreTree(t *testing.T, src string) string {
	t.Helper()
	base := time.Unix(1_700_000_000, 0)
	for d := range 8 {
		dir := filepath.Join(src, fmt.Sprintf("d%d", d))
		for f := range 40 {
			p := filepath.Join(dir, fmt.Sprintf("f%02d", f))
			mode := os.FileMode(0o644)
			if f%3 == 0 {
				mode = 0o444
			}
			writeFile(t, p, randBytes(uint64(d*100+f), 100+f*37), mode)
			mt := base.Add(time.Duration(d*100+f) * time.Second)
			if err := os.Chtimes(p, mt, mt); err != nil {
				t.Fatal(err)
			}
		}
	}
	big := filepath.Join(src, "d1", "big.bin")
	writeFile(t, big, randBytes(99, 3<<20), 0o400)
	if err := os.Link(big, filepath.Join(src, "d5", "big-link")); err != nil {
		t.Fatal(err)
	}
	for d := range 8 {
		dir := filepath.Join(src, fmt.Sprintf("d%d", d))
		mt := base.Add(-time.Duration(d+1) * time.Hour)
		if err := os.Chtimes(dir, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(src, "d3"), 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(filepath.Join(src, "d3"), 0o755) })
	return big
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count open files: %v", err)
	}
	return len(ents)
}

// TestRestoreParallelMetadata restores many files through the file and fetch workers,
// with a single fetch in flight and with many, and checks that every file's content,
// mode and time, and every directory's mode and time, match the source: metadata must
// be applied after all of a file's content and directory times after their children.
func TestRestoreParallelMetadata(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	makeRestoreTree(t, src)
	e := newEnv(t)
	res, err := e.open(t).Backup(ctx, BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	for _, fetches := range []int{1, 32} {
		for _, batched := range []bool{false, true} {
			t.Run(fmt.Sprintf("fetches=%d,batched=%v", fetches, batched), func(t *testing.T) {
				cfg := e.cfg
				cfg.Fetches = fetches
				bs := &batchGetStore{failingGetStore: failingGetStore{countingStore: e.chunks}}
				if batched {
					cfg.Chunks = bs
				}
				a, err := Open(ctx, cfg, "v1", testPass)
				if err != nil {
					t.Fatal(err)
				}
				target := filepath.Join(dir, fmt.Sprintf("r%d-%v", fetches, batched))
				fds := openFDs(t)
				rr, err := a.Restore(ctx, res.Snapshot, RestoreOptions{Target: target})
				if err != nil {
					t.Fatal(err)
				}
				if n := len(snapshotChunks(t, a, res.Snapshot, nil)); batched && bs.batched.Load() < int64(n) {
					t.Errorf("%d chunks read in batches, want at least the snapshot's %d data chunks", bs.batched.Load(), n)
				}
				if rr.Files != 8*40+2 || rr.Dirs != 9 {
					t.Errorf("restored %d files and %d dirs, want %d and 9", rr.Files, rr.Dirs, 8*40+2)
				}
				compareTrees(t, src, filepath.Join(target, "src"))
				b1, err1 := os.Stat(filepath.Join(target, "src", "d1", "big.bin"))
				b2, err2 := os.Stat(filepath.Join(target, "src", "d5", "big-link"))
				if err1 != nil || err2 != nil || !os.SameFile(b1, b2) {
					t.Errorf("hardlink not restored as one file: %v %v", err1, err2)
				}
				if got := openFDs(t); got != fds {
					t.Errorf("%d files open after the restore, %d before", got, fds)
				}
				os.Chmod(filepath.Join(target, "src", "d3"), 0o755)
			})
		}
	}
}

// failingGetStore fails every Get of one chunk ID with errGet.
type failingGetStore struct {
	*countingStore
	bad chunk.ID
}

var errGet = errors.New("test: chunk unreadable")

func (s *failingGetStore) Get(ctx context.Context, id chunk.ID) ([]byte, error) {
	if id == s.bad {
		return nil, errGet
	}
	return s.countingStore.Get(ctx, id)
}

// batchGetStore is failingGetStore with batched reads (chunkstore.BatchGetter); it counts
// the chunks read in batches.
type batchGetStore struct {
	failingGetStore
	batched atomic.Int64
}

func (s *batchGetStore) GetMany(ctx context.Context, ids []chunk.ID) []chunkstore.GetResult {
	s.batched.Add(int64(len(ids)))
	return chunkstore.GetEach(ctx, &s.failingGetStore, ids)
}

// TestRestoreChunkFailureStops makes one chunk unreadable in a restore of many files:
// the restore returns that error naming the file, leaves no file open and no goroutine
// blocked, and applies no directory metadata.
func TestRestoreChunkFailureStops(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	makeRestoreTree(t, src)
	e := newEnv(t)
	res, err := e.open(t).Backup(ctx, BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	var bad chunk.ID
	if err := e.open(t).List(ctx, res.Snapshot, "/src/d4/f07", func(en Entry) error {
		bad = en.Node.Content[0].ID
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The small files of d4 share chunks (bundles): the error names one that needs bad.
	users := snapshotChunks(t, e.open(t), res.Snapshot, nil)[bad]
	if len(users) == 0 {
		t.Fatal("no file uses the chunk of /src/d4/f07")
	}
	for _, fetches := range []int{1, 32} {
		for _, batched := range []bool{false, true} {
			t.Run(fmt.Sprintf("fetches=%d,batched=%v", fetches, batched), func(t *testing.T) {
				cfg := e.cfg
				cfg.Fetches = fetches
				cfg.Chunks = &failingGetStore{countingStore: e.chunks, bad: bad}
				if batched {
					cfg.Chunks = &batchGetStore{failingGetStore: failingGetStore{countingStore: e.chunks, bad: bad}}
				}
				a, err := Open(ctx, cfg, "v1", testPass)
				if err != nil {
					t.Fatal(err)
				}
				target := filepath.Join(dir, fmt.Sprintf("r%d-%v", fetches, batched))
				fds := openFDs(t)
				_, err = a.Restore(ctx, res.Snapshot, RestoreOptions{Target: target})
				if !errors.Is(err, errGet) {
					t.Fatalf("restore with an unreadable chunk: %v, want %v", err, errGet)
				}
				if !slices.ContainsFunc(users, func(p string) bool { return strings.Contains(err.Error(), filepath.Join(target, p)+":") }) {
					t.Errorf("error %q names none of the files that use the chunk: %q", err, users)
				}
				if got := openFDs(t); got != fds {
					t.Errorf("%d files open after the failed restore, %d before", got, fds)
				}
				// Directory metadata is applied only after a complete restore.
				fi, err := os.Stat(filepath.Join(target, "src", "d3"))
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode().Perm() != 0o700 {
					t.Errorf("directory mode %v after a failed restore, want the creation mode 0700", fi.Mode().Perm())
				}
			})
		}
	}
}

// TestRestoreCancelled cancels a restore while its chunks are being read: it returns
// context.Canceled with every file it opened closed.
func TestRestoreCancelled(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	makeRestoreTree(t, src)
	e := newEnv(t)
	res, err := e.open(t).Backup(context.Background(), BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := e.cfg
	cfg.Chunks = &cancelOnGetStore{countingStore: e.chunks, after: int64(len(snapshotChunks(t, e.open(t), res.Snapshot, nil)) / 2), cancel: cancel}
	a, err := Open(context.Background(), cfg, "v1", testPass)
	if err != nil {
		t.Fatal(err)
	}
	fds := openFDs(t)
	_, err = a.Restore(ctx, res.Snapshot, RestoreOptions{Target: filepath.Join(dir, "r")})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled restore: %v, want context.Canceled", err)
	}
	if got := openFDs(t); got != fds {
		t.Errorf("%d files open after the cancelled restore, %d before", got, fds)
	}
}

// cancelOnGetStore calls cancel on the after-th Get.
type cancelOnGetStore struct {
	*countingStore
	after  int64
	n      atomic.Int64
	cancel func()
}

func (s *cancelOnGetStore) Get(ctx context.Context, id chunk.ID) ([]byte, error) {
	if s.n.Add(1) == s.after {
		s.cancel()
	}
	return s.countingStore.Get(ctx, id)
}

// snapshotChunks maps each data chunk of snapshot snap to the files that use it (paths
// as in the snapshot, without the leading slash), in listing order; fn, when set, sees
// every file node too.
func snapshotChunks(t *testing.T, a *Agent, snap meta.Snapshot, fn func(Entry)) map[chunk.ID][]string {
	t.Helper()
	out := map[chunk.ID][]string{}
	if err := a.List(context.Background(), snap, "/", func(en Entry) error {
		if en.Node.Type != tree.TypeFile {
			return nil
		}
		if fn != nil {
			fn(en)
		}
		for _, x := range en.Node.Content {
			if !x.Hole {
				p := strings.TrimPrefix(en.Path, "/")
				if u := out[x.ID]; len(u) == 0 || u[len(u)-1] != p {
					out[x.ID] = append(u, p)
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRestoreCreateMode checks which files are created with their final permission bits
// (no chown and no chmod afterwards) and which are created 0600 and set afterwards.
func TestRestoreCreateMode(t *testing.T) {
	node := func(mode os.FileMode, uid, gid uint32) *tree.Node {
		return &tree.Node{Type: tree.TypeFile, Mode: uint32(mode), UID: uid, GID: gid}
	}
	for _, c := range []struct {
		name         string
		r            *restorer
		n            *tree.Node
		mode         uint32
		chown, chmod bool
	}{
		{"plain", &restorer{umask: 0o022}, node(0o644, 5, 5), 0o644, false, false},
		{"read-only", &restorer{umask: 0o022}, node(0o400, 5, 5), 0o400, false, false},
		{"umask strips bits", &restorer{umask: 0o022}, node(0o666, 5, 5), 0o666, false, true},
		{"umask unknown", &restorer{umask: -1}, node(0o644, 5, 5), 0o600, false, true},
		{"setuid", &restorer{umask: 0}, node(0o755|os.ModeSetuid, 5, 5), 0o600, false, true},
		{"setgid", &restorer{umask: 0}, node(0o755|os.ModeSetgid, 5, 5), 0o600, false, true},
		{"sticky", &restorer{umask: 0}, node(0o755|os.ModeSticky, 5, 5), 0o600, false, true},
		{"root, own file", &restorer{root: true, euid: 0, egid: 0, umask: 0o022}, node(0o644, 0, 0), 0o644, false, false},
		{"root, other owner", &restorer{root: true, euid: 0, egid: 0, umask: 0o022}, node(0o644, 7, 0), 0o600, true, true},
		{"root, other group", &restorer{root: true, euid: 0, egid: 0, umask: 0o022}, node(0o644, 0, 7), 0o600, true, true},
		{"root, set-group-ID target", &restorer{root: true, euid: 0, egid: 0, umask: 0o022, topSetgid: true}, node(0o644, 0, 0), 0o600, true, true},
	} {
		mode, chown, chmod := c.r.createMode(c.n)
		if mode != c.mode || chown != c.chown || chmod != c.chmod {
			t.Errorf("%s: createMode = %o, chown %v, chmod %v; want %o, %v, %v", c.name, mode, chown, chmod, c.mode, c.chown, c.chmod)
		}
	}
}

// TestProcessUmask checks the umask read from /proc against the one umask(2) reports.
func TestProcessUmask(t *testing.T) {
	old := unix.Umask(0o027)
	got := processUmask()
	unix.Umask(old)
	if got != 0o027 {
		t.Fatalf("processUmask = %o, want 027", got)
	}
}

// TestRestoreModesUnderUmask restores files whose modes the umask would strip and
// files with setuid and setgid bits, with a umask that strips group and other write:
// every mode must be the source's.
func TestRestoreModesUnderUmask(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	modes := []os.FileMode{0o777, 0o666, 0o644, 0o400, 0o000, 0o755 | os.ModeSetuid, 0o750 | os.ModeSetgid}
	for i, m := range modes {
		p := filepath.Join(src, fmt.Sprintf("f%d", i))
		writeFile(t, p, randBytes(uint64(i), 10+i), 0o600)
		if err := os.Chmod(p, m); err != nil {
			t.Fatal(err)
		}
	}
	e := newEnv(t)
	a := e.open(t)
	res, err := a.Backup(ctx, BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	old := unix.Umask(0o022)
	defer unix.Umask(old)
	target := filepath.Join(dir, "r")
	if _, err := a.Restore(ctx, res.Snapshot, RestoreOptions{Target: target}); err != nil {
		t.Fatal(err)
	}
	compareTrees(t, src, filepath.Join(target, "src"))
}
