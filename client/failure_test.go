package client

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/client/crypt"
	"github.com/cofferhq/coffer/meta"
)

// corruptingStore flips a byte of every chunk it returns for one ID.
type corruptingStore struct {
	*countingStore
	bad chunk.ID
}

func (c *corruptingStore) Get(ctx context.Context, id chunk.ID) ([]byte, error) {
	b, err := c.countingStore.Get(ctx, id)
	if err == nil && id == c.bad {
		b[len(b)/2] ^= 0x40
	}
	return b, err
}

func TestRestoreFailsLoudlyOnCorruptChunk(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	writeFile(t, filepath.Join(src, "data.bin"), randBytes(7, 600<<10), 0o644)
	e := newEnv(t)
	a := e.open(t)
	res, err := a.Backup(ctx, BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	var bad chunk.ID
	if err := a.List(ctx, res.Snapshot, "/src/data.bin", func(en Entry) error {
		bad = en.Node.Content[0].ID
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	cfg := e.cfg
	cfg.Chunks = &corruptingStore{countingStore: e.chunks, bad: bad}
	b, err := Open(ctx, cfg, "v1", testPass)
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Restore(ctx, res.Snapshot, RestoreOptions{Target: filepath.Join(dir, "r")})
	if !errors.Is(err, crypt.ErrCorrupt) {
		t.Fatalf("restore of a corrupt chunk: %v, want crypt.ErrCorrupt", err)
	}
	if err := b.Dump(ctx, res.Snapshot, "/src/data.bin", discard{}); !errors.Is(err, crypt.ErrCorrupt) {
		t.Fatalf("dump of a corrupt chunk: %v, want crypt.ErrCorrupt", err)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func TestBackupCancelledCommitsNothing(t *testing.T) {
	dir := t.TempDir()
	for i := range 20 {
		writeFile(t, filepath.Join(dir, "src", string(rune('a'+i))), randBytes(uint64(i), 64<<10), 0o644)
	}
	e := newEnv(t)
	a := e.open(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a.beforeRead = func(p string) {
		if filepath.Base(p) == "e" {
			cancel()
		}
	}
	_, err := a.Backup(ctx, BackupOptions{Paths: []string{filepath.Join(dir, "src")}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled backup: %v", err)
	}
	if s, _ := a.Snapshots(context.Background()); len(s) != 0 {
		t.Fatalf("cancelled backup committed %d snapshots", len(s))
	}
}

// retriedMeta answers every commit the way a meta client does that retried it after
// the first attempt went through (the leader crashed before answering): it commits,
// then commits again and returns that second answer, ErrExists.
type retriedMeta struct{ *probeMeta }

func (m retriedMeta) CommitSnapshot(ctx context.Context, s meta.Snapshot) (meta.Snapshot, error) {
	if _, err := m.probeMeta.CommitSnapshot(ctx, s); err != nil {
		return meta.Snapshot{}, err
	}
	return m.probeMeta.CommitSnapshot(ctx, s)
}

// TestBackupAcknowledgedWhenRetriedCommitExists: a commit that went through but whose
// answer was lost, retried and answered ErrExists, is this backup's own snapshot (its ID
// is fresh and random, the tree the same): the backup succeeds instead of failing
// although its snapshot was committed.
func TestBackupAcknowledgedWhenRetriedCommitExists(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "src", "a"), randBytes(3, 64<<10), 0o644)
	e := newEnv(t)
	cfg := e.cfg
	cfg.Meta = retriedMeta{e.meta}
	a, err := Open(context.Background(), cfg, "v1", testPass)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	res, err := a.Backup(context.Background(), BackupOptions{Paths: []string{filepath.Join(dir, "src")}})
	if err != nil {
		t.Fatalf("backup whose retried commit found its snapshot: %v", err)
	}
	snaps, err := a.Snapshots(context.Background())
	if err != nil || len(snaps) != 1 || snaps[0].ID != res.Snapshot.ID {
		t.Fatalf("snapshots %v (%v), want just %s", snaps, err, res.Snapshot.ID.Str())
	}
}
