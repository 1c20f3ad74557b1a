package node_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/node/nodetest"
)

// ackStore records the chunks (and sealed bytes) whose Put the cluster acknowledged, and
// cancels a context once enough bytes are acknowledged: an agent killed mid-backup.
type ackStore struct {
	chunkstore.Store
	mu        sync.Mutex
	acked     map[chunk.ID]int
	bytes     int64
	threshold int64
	cancel    context.CancelFunc
	// unacked is the data of Puts that failed: interrupted, they may or may not have
	// been stored.
	unacked int64
}

func (s *ackStore) Put(ctx context.Context, chunks []chunkstore.Chunk) error {
	if err := s.Store.Put(ctx, chunks); err != nil {
		s.mu.Lock()
		for _, c := range chunks {
			s.unacked += int64(len(c.Data))
		}
		s.mu.Unlock()
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range chunks {
		s.acked[c.ID] = len(c.Data)
		s.bytes += int64(len(c.Data))
	}
	if s.cancel != nil && s.bytes >= s.threshold {
		s.cancel()
	}
	return nil
}

// TestResumeAfterKillOnCluster interrupts a backup over QUIC once 6 MiB are acknowledged,
// then reruns it: no chunk acknowledged by the killed run is sent again, the rerun sends
// less than the whole, and the snapshot restores bit-identically.
func TestResumeAfterKillOnCluster(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	var total int64
	for i := range 16 {
		b := make([]byte, 1<<20)
		r := rand.NewChaCha8([32]byte{byte(i), 4})
		r.Read(b)
		if err := os.WriteFile(filepath.Join(src, string(rune('a'+i))), b, 0o644); err != nil {
			t.Fatal(err)
		}
		total += int64(len(b))
	}
	c := nodetest.New(t, nodetest.Opts{})
	cfg := c.Connect(t)
	if _, err := client.InitVault(ctxT(t, time.Minute), cfg, "default", passphrase); err != nil {
		t.Fatalf("init: %v", err)
	}
	first := &ackStore{Store: cfg.Chunks, acked: map[chunk.ID]int{}, threshold: 6 << 20}
	kcfg := cfg
	kcfg.Chunks = first
	a, err := client.Open(ctxT(t, time.Minute), kcfg, "default", passphrase)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctxT(t, 5*time.Minute))
	defer cancel()
	first.cancel = cancel
	if _, err := a.Backup(ctx, client.BackupOptions{Paths: []string{src}}); !errors.Is(err, context.Canceled) {
		t.Fatalf("killed backup: %v", err)
	}
	a.Close()
	first.mu.Lock()
	kept, keptChunks, inFlight := first.bytes, len(first.acked), first.unacked
	first.mu.Unlock()
	if kept < 6<<20 {
		t.Fatalf("killed run stored only %d bytes", kept)
	}

	second := &ackStore{Store: cfg.Chunks, acked: map[chunk.ID]int{}}
	rcfg := cfg
	rcfg.Chunks = second
	a2, err := client.Open(ctxT(t, time.Minute), rcfg, "default", passphrase)
	if err != nil {
		t.Fatal(err)
	}
	defer a2.Close()
	res, err := a2.Backup(ctxT(t, 5*time.Minute), client.BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatalf("rerun: %v", err)
	}
	for id := range second.acked {
		if _, ok := first.acked[id]; ok {
			t.Errorf("chunk %s acknowledged in the killed run was sent again", id.Str())
		}
	}
	added := res.Snapshot.Stats.BytesAdded
	t.Logf("killed run stored %d bytes in %d chunks; rerun added %d bytes (%d chunks); data %d bytes", kept, keptChunks, added, len(second.acked), total)
	// NB: a Put interrupted by the kill may still have been stored (the server had the
	// whole request), so the rerun need not send it again: every byte was acknowledged
	// by the killed run, in flight when it was killed, or sent by the rerun.
	if added != second.bytes || added+kept+inFlight < total || added > total-kept+1<<20 {
		t.Errorf("rerun added %d bytes (sent %d); killed run kept %d and had %d in flight, of about %d", added, second.bytes, kept, inFlight, total)
	}
	restoreAndCompare(t, a2, res.Snapshot, src)
}
