package client

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/memstore"
)

// cancellingStore stores chunks and cancels a context once the stored sealed bytes pass
// a threshold: an agent killed mid-backup.
type cancellingStore struct {
	chunkstore.Store
	stored    atomic.Int64 // sealed bytes of successful puts
	threshold int64
	cancel    context.CancelFunc
	mu        sync.Mutex
	puts      map[chunk.ID]int // chunk ID → times put
}

func (c *cancellingStore) Put(ctx context.Context, chunks []chunkstore.Chunk) error {
	if err := c.Store.Put(ctx, chunks); err != nil {
		return err
	}
	var n int64
	c.mu.Lock()
	for _, ch := range chunks {
		n += int64(len(ch.Data))
		c.puts[ch.ID]++
	}
	c.mu.Unlock()
	if c.stored.Add(n) >= c.threshold && c.cancel != nil {
		c.cancel()
	}
	return nil
}

// TestResumeUploadsOnlyWhatWasMissing kills a backup (cancels its context) once about a
// third of the data is stored, reruns it, and checks that the rerun uploads exactly the
// bytes the first run had not stored, and that the snapshot restores bit-identically.
func TestResumeUploadsOnlyWhatWasMissing(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	for i := range 24 {
		writeFile(t, filepath.Join(src, "f"+string(rune('a'+i))), randBytes(uint64(100+i), 1<<20), 0o644)
	}

	// The full size of this backup, measured on a fresh vault.
	full := newEnv(t).open(t)
	ref, err := full.Backup(context.Background(), BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	total := ref.Snapshot.Stats.BytesAdded

	cs := &cancellingStore{Store: memstore.NewChunks(), threshold: 8 << 20, puts: make(map[chunk.ID]int)}
	e := newEnvStore(t, cs)
	a := e.open(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cs.cancel = cancel
	if _, err := a.Backup(ctx, BackupOptions{Paths: []string{src}}); !errors.Is(err, context.Canceled) {
		t.Fatalf("killed backup: %v", err)
	}
	if s, _ := a.Snapshots(context.Background()); len(s) != 0 {
		t.Fatalf("killed backup committed %d snapshots", len(s))
	}
	kept := cs.stored.Load()
	if kept < 8<<20 || kept >= total {
		t.Fatalf("killed backup stored %d bytes of %d; want a part", kept, total)
	}
	cs.cancel = nil

	res, err := a.Backup(context.Background(), BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	added := res.Snapshot.Stats.BytesAdded
	t.Logf("full backup %d bytes; killed run stored %d; rerun added %d", total, kept, added)
	// No chunk was uploaded twice; the byte figures agree up to the tree chunks, whose
	// compressed size differs between the reference vault and this one.
	for id, n := range cs.puts {
		if n > 1 {
			t.Errorf("chunk %s uploaded %d times", id.Str(), n)
		}
	}
	if want := total - kept; added < want-4096 || added > want+4096 {
		t.Errorf("rerun added %d bytes, want about %d (total %d - already stored %d)", added, want, total, kept)
	}
	target := filepath.Join(dir, "restore")
	if _, err := a.Restore(context.Background(), res.Snapshot, RestoreOptions{Target: target}); err != nil {
		t.Fatal(err)
	}
	compareTrees(t, src, filepath.Join(target, "src"))
}
