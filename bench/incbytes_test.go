package bench

import (
	"context"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/memstore"
	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/client/crypt"
	"github.com/cofferhq/coffer/meta/memmeta"
	"github.com/cofferhq/coffer/placement"
)

// sizeStore records the sealed size of every chunk put through it.
type sizeStore struct {
	*memstore.Chunks
	mu   sync.Mutex
	size map[chunk.ID]int
}

func (s *sizeStore) Put(ctx context.Context, cs []chunkstore.Chunk) error {
	s.mu.Lock()
	for _, c := range cs {
		s.size[c.ID] = len(c.Data)
	}
	s.mu.Unlock()
	return s.Chunks.Put(ctx, cs)
}

// BenchmarkIncrementalBytesByKind backs up a copy of this Go's GOROOT into an in-memory
// store, changes it as the host-budget suite's incremental scenario does (MutateTree,
// every 20th file, seed 1) and backs it up again, then reports the bytes the second
// backup added by kind: data chunks of files of 16 KiB and more, small-file bundles,
// trees and reference-list chunks (docs/benchmarks.md, "Incremental bytes: where they
// go"; restic's figure for the same change comes from the suite).
func BenchmarkIncrementalBytesByKind(b *testing.B) {
	ctx := context.Background()
	for b.Loop() {
		dir := b.TempDir()
		if out, err := exec.Command("cp", "-a", runtime.GOROOT(), filepath.Join(dir, "go")).CombinedOutput(); err != nil {
			b.Fatal(err, string(out))
		}
		st := &sizeStore{Chunks: memstore.NewChunks(), size: map[chunk.ID]int{}}
		m := placement.Map{Epoch: 1, PGCount: 1, Profile: placement.DefaultProfile}
		mm, err := memmeta.New(memmeta.Config{Chunks: st, Now: time.Now, Map: &m})
		if err != nil {
			b.Fatal(err)
		}
		cfg := client.Config{Meta: mm, Chunks: st, Host: "bench", Now: time.Now, Argon2: crypt.TestArgon2Params()}
		if _, err := client.InitVault(ctx, cfg, "bench", []byte("bench")); err != nil {
			b.Fatal(err)
		}
		a, err := client.Open(ctx, cfg, "bench", []byte("bench"))
		if err != nil {
			b.Fatal(err)
		}
		opts := client.BackupOptions{Paths: []string{filepath.Join(dir, "go")}}
		if _, err := a.Backup(ctx, opts); err != nil {
			b.Fatal(err)
		}
		before := make(map[chunk.ID]bool, len(st.size))
		for id := range st.size {
			before[id] = true
		}
		if _, err := MutateTree(filepath.Join(dir, "go"), 20, 1); err != nil {
			b.Fatal(err)
		}
		res, err := a.Backup(ctx, opts)
		if err != nil {
			b.Fatal(err)
		}
		kind := map[chunk.ID]string{}
		for _, id := range res.Snapshot.Refs {
			kind[id] = "reflist"
		}
		var walk func(id chunk.ID)
		walk = func(id chunk.ID) {
			kind[id] = "trees"
			t, err := a.LoadTree(ctx, id)
			if err != nil {
				b.Fatal(err)
			}
			for _, n := range t.Nodes {
				if n.Subtree != nil {
					walk(*n.Subtree)
				}
				for _, e := range n.Content {
					if _, ok := kind[e.ID]; !ok && !e.Hole {
						kind[e.ID] = "data"
						if n.Size < 16<<10 {
							kind[e.ID] = "bundles"
						}
					}
				}
			}
		}
		walk(res.Snapshot.Tree)
		sum := map[string]int{}
		for id, n := range st.size {
			if !before[id] {
				sum[kind[id]] += n
			}
		}
		a.Close()
		if sum[""] != 0 {
			b.Fatalf("%d bytes added in chunks the snapshot does not reference", sum[""])
		}
		for _, k := range []string{"data", "bundles", "trees", "reflist"} {
			b.ReportMetric(float64(sum[k]), k+"-B")
		}
		b.ReportMetric(float64(res.Snapshot.Stats.BytesAdded), "added-B")
	}
}
