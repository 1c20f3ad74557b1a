package client

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/memstore"
	"github.com/cofferhq/coffer/meta"
)

// optimisticStore is the agent's view of a cluster whose dedup check (Has through one
// coordinator) says every chunk is stored while the meta leader's commit check (Has
// through its own coordinator) disagrees: a holder was paused between the two, or the
// chunk is a partial stripe of a failed put. The agent's Has answers yes for every ID;
// the meta service checks the real store underneath.
type optimisticStore struct {
	chunkstore.Store
	has atomic.Int64
}

func (s *optimisticStore) Has(ctx context.Context, ids []chunk.ID) ([]bool, error) {
	s.has.Add(1)
	have := make([]bool, len(ids))
	for i := range have {
		have[i] = true
	}
	return have, nil
}

// TestBackupReputsChunksTheCommitReportsMissing: the agent's Has keeps saying yes for
// chunks the commit check says are missing. A retry that asks Has again skips them again
// and is refused again; the retry must upload every referenced chunk without the dedup
// skip, so the backup ends committed and restorable.
func TestBackupReputsChunksTheCommitReportsMissing(t *testing.T) {
	e := newEnvStore(t, memstore.NewChunks())
	opt := &optimisticStore{Store: e.chunks}
	e.cfg.Chunks = opt
	a := e.open(t)
	ctx := context.Background()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	makeTree(t, src)
	putsBefore := e.chunks.puts.Load()
	res, err := a.Backup(ctx, BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatalf("backup with a dedup check that disagrees with the commit check: %v", err)
	}
	if got := e.meta.refusedCommits(); got != 1 {
		t.Fatalf("%d commits refused, want 1 (then the re-put retry commits)", got)
	}
	if e.chunks.puts.Load() == putsBefore {
		t.Fatal("no chunk was re-put")
	}
	for _, id := range res.Snapshot.Refs {
		have, err := e.chunks.Has(ctx, []chunk.ID{id})
		if err != nil || !have[0] {
			t.Fatalf("reference list chunk %s not stored after the retry (err %v)", id.Str(), err)
		}
	}
	target := filepath.Join(dir, "restore")
	if _, err := a.Restore(ctx, res.Snapshot, RestoreOptions{Target: target}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	compareTrees(t, src, filepath.Join(target, "src"))
}

// blindStore is a chunk store the commit check never finds anything in.
type blindStore struct{ chunkstore.Store }

func (s blindStore) Has(ctx context.Context, ids []chunk.ID) ([]bool, error) {
	return make([]bool, len(ids)), nil
}

// TestBackupReputRetriesAreBounded: when the commit check keeps refusing, the backup
// gives up after a bounded number of commits with an error that still says
// ErrMissingChunks.
func TestBackupReputRetriesAreBounded(t *testing.T) {
	chunks := memstore.NewChunks()
	e := newEnvStore(t, chunks)
	e.meta = newProbeMeta(t, blindStore{chunks})
	e.cfg.Meta = e.meta
	if _, err := InitVault(context.Background(), e.cfg, "v1", testPass); err != nil {
		t.Fatal(err)
	}
	a := e.open(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	makeTree(t, src)
	_, err := a.Backup(context.Background(), BackupOptions{Paths: []string{src}})
	if !errors.Is(err, meta.ErrMissingChunks) {
		t.Fatalf("backup = %v, want ErrMissingChunks", err)
	}
	if got := e.meta.refusedCommits(); got != maxCommitAttempts {
		t.Fatalf("%d commits refused, want %d", got, maxCommitAttempts)
	}
	if !strings.Contains(err.Error(), "commit attempts") {
		t.Errorf("error does not say the commit was retried: %v", err)
	}
}
