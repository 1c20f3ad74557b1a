package client

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/cofferhq/coffer/chunkstore/memstore"
)

// BenchmarkUnchangedRebackup measures an unchanged re-backup of a source tree (default
// the Go toolchain's own src directory; COFFER_BENCH_TREE to choose) against the local
// cache and in-memory store and meta: the agent's walk, compare and tree-encoding cost.
// It reports files/s.
func BenchmarkUnchangedRebackup(b *testing.B) {
	src := os.Getenv("COFFER_BENCH_TREE")
	if src == "" {
		src = filepath.Join(runtime.GOROOT(), "src")
	}
	if _, err := os.Stat(src); err != nil {
		b.Skipf("no source tree: %v", err)
	}
	e := newEnvStore(b, memstore.NewChunks())
	e.cfg.Workers = runtime.GOMAXPROCS(0)
	e.cfg.CacheDir = filepath.Join(b.TempDir(), "cache")
	a := e.open(b)
	ctx := context.Background()
	first, err := a.Backup(ctx, BackupOptions{Paths: []string{src}})
	if err != nil {
		b.Fatal(err)
	}
	files := first.Snapshot.Stats.FilesNew
	b.ResetTimer()
	for range b.N {
		res, err := a.Backup(ctx, BackupOptions{Paths: []string{src}})
		if err != nil {
			b.Fatal(err)
		}
		if st := res.Snapshot.Stats; st.FilesUnmodified != files || res.BytesRead != 0 {
			b.Fatalf("re-backup: %d unmodified of %d, %d bytes read", st.FilesUnmodified, files, res.BytesRead)
		}
	}
	b.ReportMetric(float64(files)*float64(b.N)/b.Elapsed().Seconds(), "files/s")
	b.ReportMetric(float64(files), "files")
}
