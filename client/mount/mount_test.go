package mount_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore/memstore"
	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/client/crypt"
	"github.com/cofferhq/coffer/client/mount"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/memmeta"
	"github.com/cofferhq/coffer/node/nodetest"
	"github.com/cofferhq/coffer/placement"
)

var pass = []byte("mount test passphrase")

// testClock is a clock the test moves; tick (the vault's clock) moves it a second per
// reading, so that commits get distinct times.
type testClock struct{ ns atomic.Int64 }

func newClock(t time.Time) *testClock {
	c := &testClock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *testClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *testClock) advance(d time.Duration) { c.ns.Add(int64(d)) }
func (c *testClock) tick() time.Time         { return time.Unix(0, c.ns.Add(int64(time.Second))) }

// needFUSE skips the test where FUSE mounts cannot be made.
func needFUSE(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no FUSE here (%v): the mount tests need /dev/fuse", err)
	}
}

func agentConfig(svc meta.Service, chunks *memstore.Chunks, host string, clock *testClock) client.Config {
	return client.Config{Meta: svc, Chunks: chunks, Host: host, Workers: 2, Now: clock.tick, Argon2: crypt.TestArgon2Params()}
}

// vault is an in-memory vault (meta/memmeta, chunkstore/memstore) with an open agent.
func vault(t *testing.T, clock *testClock) (*client.Agent, func(host string) *client.Agent) {
	t.Helper()
	ctx := context.Background()
	chunks := memstore.NewChunks()
	m := placement.Map{Epoch: 1, PGCount: 1, Profile: placement.DefaultProfile}
	svc, err := memmeta.New(memmeta.Config{Chunks: chunks, Map: &m, Now: clock.tick})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.InitVault(ctx, agentConfig(svc, chunks, "h1", clock), "v1", pass); err != nil {
		t.Fatal(err)
	}
	open := func(host string) *client.Agent {
		a, err := client.Open(ctx, agentConfig(svc, chunks, host, clock), "v1", pass)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		return a
	}
	return open("h1"), open
}

// mountAt mounts o at a new directory and unmounts it when the test ends.
func mountAt(t *testing.T, o mount.Options) (*mount.FS, string) {
	t.Helper()
	needFUSE(t)
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	fsys, err := mount.Mount(context.Background(), dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := fsys.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	return fsys, dir
}

// snapshotDirs returns the names in snapshots/, which must be n.
func snapshotDirs(t *testing.T, mnt string, n int) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(mnt, "snapshots"))
	if err != nil || len(ents) != n {
		t.Fatalf("snapshots/: %d entries (%v), want %d", len(ents), err, n)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestMountTreeAndBlockImage mounts a vault with a file-tree snapshot of two hosts and a
// block image: the tree matches the source (nodetest.CompareTrees), hosts/ links to each
// host's snapshots and latest, the image reads back as a file, and the mount refuses
// writes and unmounts.
func TestMountTreeAndBlockImage(t *testing.T) {
	ctx := context.Background()
	clock := newClock(time.Date(2026, 12, 6, 8, 0, 0, 0, time.UTC))
	a, open := vault(t, clock)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	nodetest.MakeTree(t, src, nodetest.TreeOpts{Seed: 3})
	s1, err := a.Backup(ctx, client.BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	img := make([]byte, 3<<20+4096)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 1 << 20 {
		img[i] = byte(r.Uint32())
	}
	copy(img[2<<20:], img[:1<<20])
	if err := os.WriteFile(filepath.Join(dir, "disk.img"), img, 0o600); err != nil {
		t.Fatal(err)
	}
	s2, err := open("h2").BackupBlock(ctx, client.BlockOptions{Path: filepath.Join(dir, "disk.img"), BlockSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	_, mnt := mountAt(t, mount.Options{Agent: a, Now: clock.now})
	names := snapshotDirs(t, mnt, 2)
	name1 := s1.Snapshot.Time.UTC().Format("2006-01-02T15:04:05Z") + "_h1_" + s1.Snapshot.ID.Str()
	name2 := s2.Snapshot.Time.UTC().Format("2006-01-02T15:04:05Z") + "_h2_" + s2.Snapshot.ID.Str()
	if names[0] != name1 || names[1] != name2 {
		t.Fatalf("snapshots/ lists %v, want [%s %s]", names, name1, name2)
	}
	nodetest.CompareTrees(t, src, filepath.Join(mnt, "snapshots", name1, "src"))
	for host, name := range map[string]string{"h1": name1, "h2": name2} {
		for _, l := range []string{"latest", name} {
			if target, err := os.Readlink(filepath.Join(mnt, "hosts", host, l)); err != nil || target != "../../snapshots/"+name {
				t.Errorf("hosts/%s/%s -> %q (%v)", host, l, target, err)
			}
		}
	}
	ents, err := os.ReadDir(filepath.Join(mnt, "snapshots", name2))
	if err != nil || len(ents) != 1 {
		t.Fatalf("block snapshot lists %v (%v), want its one image", ents, err)
	}
	got, err := os.ReadFile(filepath.Join(mnt, "hosts", "h2", "latest", ents[0].Name()))
	if err != nil || !bytes.Equal(got, img) {
		t.Fatalf("block image through the mount: %d bytes (%v), equal %v", len(got), err, bytes.Equal(got, img))
	}
	if err := os.Mkdir(filepath.Join(mnt, "snapshots", "x"), 0o755); !errors.Is(err, syscall.EROFS) {
		t.Errorf("mkdir in the mount: %v, want EROFS", err)
	}
	if err := os.Chmod(filepath.Join(mnt, "snapshots", name1, "src", "docs", "readme.txt"), 0o777); !errors.Is(err, syscall.EROFS) {
		t.Errorf("chmod in the mount: %v, want EROFS", err)
	}
}

// TestMountReadsEachSnapshotThroughItsReader is the restore-isolation attack test. Two
// snapshots of the same tree share every chunk, so the mount's caches, filled through
// the first snapshot's reader, hold everything the second shows; the second's reader is
// refused (as a restore grant would be), and the second snapshot must stay unreadable:
// no listing, no lookup, no content.
func TestMountReadsEachSnapshotThroughItsReader(t *testing.T) {
	ctx := context.Background()
	clock := newClock(time.Date(2026, 12, 6, 8, 0, 0, 0, time.UTC))
	a, _ := vault(t, clock)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	nodetest.MakeTree(t, src, nodetest.TreeOpts{Seed: 4})
	s1, err := a.Backup(ctx, client.BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	s2, err := a.Backup(ctx, client.BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	if s1.Snapshot.Tree != s2.Snapshot.Tree {
		t.Fatalf("the two snapshots have different trees; the test needs them shared")
	}
	var mu sync.Mutex
	calls := map[meta.SnapshotID]int{}
	refuse := map[meta.SnapshotID]bool{s2.Snapshot.ID: true}
	errRefused := errors.New("test: no grant")
	reader := func(_ context.Context, s meta.Snapshot) (*client.Agent, time.Time, error) {
		mu.Lock()
		defer mu.Unlock()
		calls[s.ID]++
		if refuse[s.ID] {
			return nil, time.Time{}, errRefused
		}
		return a, clock.now().Add(time.Hour), nil
	}
	count := func(id meta.SnapshotID) int {
		mu.Lock()
		defer mu.Unlock()
		return calls[id]
	}
	_, mnt := mountAt(t, mount.Options{Agent: a, Reader: reader, Now: clock.now})
	names := snapshotDirs(t, mnt, 2)
	one, two := filepath.Join(mnt, "snapshots", names[0], "src"), filepath.Join(mnt, "snapshots", names[1], "src")
	nodetest.CompareTrees(t, src, one)
	if n := count(s1.Snapshot.ID); n != 1 {
		t.Errorf("first snapshot's reader obtained %d times, want once", n)
	}
	for _, try := range []func() error{
		func() error { _, err := os.ReadDir(filepath.Join(mnt, "snapshots", names[1])); return err },
		func() error { _, err := os.Lstat(two); return err },
		func() error { _, err := os.ReadFile(filepath.Join(two, "docs", "readme.txt")); return err },
	} {
		if err := try(); !errors.Is(err, syscall.EACCES) {
			t.Errorf("second snapshot without a reader: %v, want EACCES", err)
		}
	}
	if count(s2.Snapshot.ID) == 0 {
		t.Error("the second snapshot's reader was never asked for")
	}
}

// TestMountRenewsReaders: a snapshot's reader is renewed when a quarter of its lifetime
// is left, files opened before switch to the new one, and once it has ended and cannot
// be renewed nothing more is read (files not read before; the kernel keeps what it has
// read of a snapshot's files, which never change).
func TestMountRenewsReaders(t *testing.T) {
	ctx := context.Background()
	clock := newClock(time.Date(2026, 12, 6, 8, 0, 0, 0, time.UTC))
	a, _ := vault(t, clock)
	src := filepath.Join(t.TempDir(), "src")
	nodetest.MakeTree(t, src, nodetest.TreeOpts{Seed: 5})
	if _, err := a.Backup(ctx, client.BackupOptions{Paths: []string{src}}); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	var refuse atomic.Bool
	reader := func(context.Context, meta.Snapshot) (*client.Agent, time.Time, error) {
		calls.Add(1)
		if refuse.Load() {
			return nil, time.Time{}, errors.New("test: no grant")
		}
		return a, clock.now().Add(time.Hour), nil
	}
	_, mnt := mountAt(t, mount.Options{Agent: a, Reader: reader, Now: clock.now})
	one := filepath.Join(mnt, "snapshots", snapshotDirs(t, mnt, 1)[0], "src")
	open := func(rel string) (*os.File, []byte) {
		t.Helper()
		f, err := os.Open(filepath.Join(one, rel))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		want, err := os.ReadFile(filepath.Join(src, rel))
		if err != nil {
			t.Fatal(err)
		}
		return f, want
	}
	deep, deepWant := open("data/a/b/c/deep.bin")
	sparse, _ := open("data/sparse.img")
	if n := calls.Load(); n != 1 {
		t.Fatalf("reader obtained %d times, want once", n)
	}
	clock.advance(50 * time.Minute)
	buf := make([]byte, 4096)
	if _, err := deep.ReadAt(buf, 1<<20); err != nil || !bytes.Equal(buf, deepWant[1<<20:1<<20+4096]) {
		t.Fatalf("read with a renewed reader: %v", err)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("reader obtained %d times after 50 minutes, want 2 (renewed once)", n)
	}
	refuse.Store(true)
	clock.advance(2 * time.Hour)
	if _, err := sparse.ReadAt(buf, 0); !errors.Is(err, syscall.EACCES) {
		t.Errorf("reading an open file after its reader ended: %v, want EACCES", err)
	}
	if _, err := os.Open(filepath.Join(one, "data", "secret.key")); !errors.Is(err, syscall.EACCES) {
		t.Errorf("opening a file after the reader ended: %v, want EACCES", err)
	}
}

// TestMountSnapshotListRefreshes: a snapshot committed after the mount appears once the
// refresh interval has passed, by the mount's clock; a bad mount point is refused.
func TestMountSnapshotListRefreshes(t *testing.T) {
	ctx := context.Background()
	clock := newClock(time.Date(2026, 12, 6, 8, 0, 0, 0, time.UTC))
	a, _ := vault(t, clock)
	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(src, "f"), []byte("one"), 0o644)
	if _, err := a.Backup(ctx, client.BackupOptions{Paths: []string{src}}); err != nil {
		t.Fatal(err)
	}
	_, mnt := mountAt(t, mount.Options{Agent: a, Now: clock.now, Refresh: time.Minute})
	snapshotDirs(t, mnt, 1)
	os.WriteFile(filepath.Join(src, "f"), []byte("two"), 0o644)
	if _, err := a.Backup(ctx, client.BackupOptions{Paths: []string{src}}); err != nil {
		t.Fatal(err)
	}
	clock.advance(2 * time.Minute)
	// NB: the kernel may keep the directory's listing for a second (listTimeout); the
	// mount's own list is read again now.
	deadline := time.Now().Add(30 * time.Second)
	for {
		ents, err := os.ReadDir(filepath.Join(mnt, "snapshots"))
		if err == nil && len(ents) == 2 {
			got, err := os.ReadFile(filepath.Join(mnt, "hosts", "h1", "latest", "src", "f"))
			if err != nil || string(got) != "two" {
				t.Fatalf("latest/src/f: %q (%v), want two", got, err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("second snapshot not listed: %d entries (%v)", len(ents), err)
		}
		time.Sleep(50 * time.Millisecond) // polling for the kernel's cached listing to expire
	}

	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o644)
	for _, bad := range []string{file, filepath.Join(t.TempDir(), "missing")} {
		if _, err := mount.Mount(ctx, bad, mount.Options{Agent: a, Now: clock.now}); err == nil {
			t.Errorf("mount at %s succeeded", bad)
		} else if !strings.Contains(err.Error(), "mount") {
			t.Errorf("mount at %s: %v", bad, err)
		}
	}
	if _, err := mount.Mount(ctx, t.TempDir(), mount.Options{Now: clock.now}); !errors.Is(err, mount.ErrInvalid) {
		t.Errorf("mount without an agent: %v, want ErrInvalid", err)
	}
}
