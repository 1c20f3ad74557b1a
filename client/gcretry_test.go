package client

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/memstore"
)

// sweepingStore plays a garbage collection: Sweep makes every chunk stored so far
// disappear (Has false, Get not found) until it is uploaded again.
type sweepingStore struct {
	chunkstore.Store
	mu    sync.Mutex
	put   map[chunk.ID]bool
	swept map[chunk.ID]bool
}

func (s *sweepingStore) Put(ctx context.Context, cs []chunkstore.Chunk) error {
	s.mu.Lock()
	for _, c := range cs {
		s.put[c.ID] = true
		delete(s.swept, c.ID)
	}
	s.mu.Unlock()
	return s.Store.Put(ctx, cs)
}

func (s *sweepingStore) Has(ctx context.Context, ids []chunk.ID) ([]bool, error) {
	has, err := s.Store.Has(ctx, ids)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, id := range ids {
		if s.swept[id] {
			has[i] = false
		}
	}
	return has, err
}

func (s *sweepingStore) Get(ctx context.Context, id chunk.ID) ([]byte, error) {
	s.mu.Lock()
	gone := s.swept[id]
	s.mu.Unlock()
	if gone {
		return nil, fmt.Errorf("sweeping store: %s: %w", id.Str(), chunkstore.ErrNotFound)
	}
	return s.Store.Get(ctx, id)
}

func (s *sweepingStore) sweepAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id := range s.put {
		s.swept[id] = true
	}
}

// TestBackupRetriesWhenChunksWereSwept: the parent snapshot's chunks are swept (it was
// forgotten and collected) after the agent chose it as parent; the commit, which reuses
// the unchanged files' chunks, is refused for missing chunks, and the agent backs up
// again without the parent, uploads what is missing and commits a restorable snapshot.
func TestBackupRetriesWhenChunksWereSwept(t *testing.T) {
	st := &sweepingStore{Store: memstore.NewChunks(), put: map[chunk.ID]bool{}, swept: map[chunk.ID]bool{}}
	e := newEnvStore(t, st)
	a := e.open(t)
	ctx := context.Background()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	makeTree(t, src)
	first, err := a.Backup(ctx, BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	// The agent's next run finds `first` as its parent; meanwhile GC sweeps everything.
	// The parent's trees are still needed to pick it, so sweep only after they load:
	// sweeping now removes them too, and the backup must still succeed.
	st.sweepAll()
	refusalsBefore := e.meta.refusedCommits()
	second, err := a.Backup(ctx, BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatalf("backup after the sweep: %v", err)
	}
	if e.meta.refusedCommits() == refusalsBefore && second.BytesRead == 0 {
		t.Fatalf("the backup neither read files nor hit a refusal: it cannot have re-uploaded the swept chunks")
	}
	if second.Snapshot.ID == first.Snapshot.ID {
		t.Fatal("same snapshot twice")
	}
	target := filepath.Join(dir, "restore")
	if _, err := a.Restore(ctx, second.Snapshot, RestoreOptions{Target: target}); err != nil {
		t.Fatalf("restore after the retried backup: %v", err)
	}
	compareTrees(t, src, filepath.Join(target, "src"))
}

// TestBackupRetriesAfterParentLoaded sweeps between the parent's trees being read and the
// commit (the agent reuses the unchanged files' chunks without asking): the first commit
// is refused and the retry without parent succeeds.
func TestBackupRetriesAfterParentLoaded(t *testing.T) {
	st := &sweepingStore{Store: memstore.NewChunks(), put: map[chunk.ID]bool{}, swept: map[chunk.ID]bool{}}
	e := newEnvStore(t, st)
	a := e.open(t)
	ctx := context.Background()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	makeTree(t, src)
	if _, err := a.Backup(ctx, BackupOptions{Paths: []string{src}}); err != nil {
		t.Fatal(err)
	}
	e.meta.beforeCommit(func() { st.sweepAll() })
	before := e.meta.refusedCommits()
	res, err := a.Backup(ctx, BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	if got := e.meta.refusedCommits() - before; got != 1 {
		t.Fatalf("%d commits refused, want 1 (then the retry succeeds)", got)
	}
	if res.Snapshot.Parent != nil {
		t.Fatalf("retried snapshot still names parent %s", res.Snapshot.Parent.Str())
	}
	target := filepath.Join(dir, "restore")
	if _, err := a.Restore(ctx, res.Snapshot, RestoreOptions{Target: target}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	compareTrees(t, src, filepath.Join(target, "src"))
}
