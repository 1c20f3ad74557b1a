package node_test

import (
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/node/nodetest"
)

// TestIncrementalBackupOnCluster backs up a tree over real QUIC, changes two files and
// backs up again with the local cache: only the two files are opened, nothing but their
// new chunks and the changed trees is stored, and the snapshot restores bit-identically.
func TestIncrementalBackupOnCluster(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	nodetest.MakeTree(t, src, nodetest.TreeOpts{Seed: 3, BigFile: 4 << 20})
	for i := range 200 {
		p := filepath.Join(src, "many", string(rune('a'+i%26))+string(rune('a'+i/26)))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c := nodetest.New(t, nodetest.Opts{})
	cfg := c.Connect(t)
	cfg.CacheDir = filepath.Join(t.TempDir(), "cache")
	if _, err := client.InitVault(ctxT(t, time.Minute), cfg, "default", passphrase); err != nil {
		t.Fatalf("init: %v", err)
	}
	a, err := client.Open(ctxT(t, time.Minute), cfg, "default", passphrase)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer a.Close()

	var mu sync.Mutex
	var opened []string
	run := func() client.BackupResult {
		t.Helper()
		res, err := a.Backup(ctxT(t, 5*time.Minute), client.BackupOptions{Paths: []string{src}, OnOpen: func(p string) {
			mu.Lock()
			opened = append(opened, p)
			mu.Unlock()
		}})
		if err != nil {
			t.Fatalf("backup: %v", err)
		}
		return res
	}
	first := run()
	if len(opened) < 200 {
		t.Fatalf("first backup opened %d files", len(opened))
	}
	opened = nil

	changed := []string{filepath.Join(src, "many", "aa"), filepath.Join(src, "many", "zb")}
	for _, p := range changed {
		if err := os.WriteFile(p, []byte("changed "+p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	second := run()
	slices.Sort(opened)
	if !slices.Equal(opened, changed) {
		t.Fatalf("second backup opened %q, want %q", opened, changed)
	}
	st := second.Snapshot.Stats
	if st.FilesChanged != 2 || st.FilesNew != 0 {
		t.Errorf("second backup: %d changed, %d new", st.FilesChanged, st.FilesNew)
	}
	// Two small data chunks, the changed trees (many/, src/, the root) and the reference
	// list: far below what the first backup stored (over a MiB of random content).
	t.Logf("first backup added %d bytes, second %d", first.Snapshot.Stats.BytesAdded, st.BytesAdded)
	if st.BytesAdded > 256<<10 || first.Snapshot.Stats.BytesAdded < 1<<20 {
		t.Errorf("second backup added %d bytes (first %d)", st.BytesAdded, first.Snapshot.Stats.BytesAdded)
	}
	restoreAndCompare(t, a, second.Snapshot, src)
}
