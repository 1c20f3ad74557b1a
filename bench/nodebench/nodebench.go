// Package nodebench holds the node-side stage micro-benchmarks of the benchmark suite:
// segment appends with group fsync and Pebble index batches. It links Pebble, so only
// cofferd imports it (`cofferd bench-stages --json`); `coffer bench` reads its output,
// which keeps the agent binary free of node dependencies.
package nodebench

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/cofferhq/coffer/bench"
	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/segstore"
)

// Run measures the node stages under dir (created, and emptied afterwards), each for
// about d.
func Run(ctx context.Context, dir string, d time.Duration) ([]bench.Stage, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("nodebench: %w", err)
	}
	defer os.RemoveAll(dir)
	var out []bench.Stage
	for _, c := range []struct {
		size, writers int
		ref           string
	}{
		{1 << 20, 1, "464-643 (plain file, fsync per 64 MiB)"},
		{1 << 20, 4, "464-643 (plain file, fsync per 64 MiB)"},
		{64 << 10, 4, ""},
		{1 << 10, 4, ""},
	} {
		s, err := segAppend(ctx, filepath.Join(dir, fmt.Sprintf("seg-%d-%d", c.size, c.writers)), c.size, c.writers, d)
		if err != nil {
			return nil, err
		}
		s.Reference = c.ref
		out = append(out, s)
	}
	for _, batch := range []int{100, 1000, 10000} {
		s, err := pebbleBatches(filepath.Join(dir, fmt.Sprintf("pebble-%d", batch)), batch, d)
		if err != nil {
			return nil, err
		}
		if batch == 1000 {
			s.Reference = "0.24-0.46 M keys/s (random keys, Sync)"
		}
		out = append(out, s)
	}
	return out, nil
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// segAppend writes size-byte shards from writers goroutines, one shard per PutShards
// call, so the store's group commit merges the fsyncs.
func segAppend(ctx context.Context, dir string, size, writers int, d time.Duration) (bench.Stage, error) {
	s, err := segstore.Open(dir, segstore.Options{})
	if err != nil {
		return bench.Stage{}, fmt.Errorf("nodebench: %w", err)
	}
	defer s.Close()
	data := randomBytes(size)
	var n, seq atomic.Int64
	var firstErr error
	var mu sync.Mutex
	start := time.Now()
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for i := 0; i == 0 || time.Since(start) < d; i++ {
				var id chunk.ID
				binary.BigEndian.PutUint64(id[:], uint64(seq.Add(1)))
				sh := chunkstore.Shard{
					Key:  chunkstore.ShardKey{ID: id},
					Meta: chunkstore.ShardMeta{K: 4, M: 2, ChunkLen: uint32(4 * size), Writer: "agent/bench"},
					Data: data,
				}
				if err := s.PutShards(ctx, []chunkstore.Shard{sh}); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return bench.Stage{}, fmt.Errorf("nodebench: segment append: %w", firstErr)
	}
	el := time.Since(start).Seconds()
	ops := float64(n.Load()) / el
	return bench.Stage{
		Name: fmt.Sprintf("segment append %s shards, fsync, %d writers", sizeName(size), writers),
		Side: "node", MBps1: ops * float64(size) / 1e6, OpsPerSec: ops, Cores: 1,
		Note: fmt.Sprintf("%.0f shards/s", ops),
	}, nil
}

func sizeName(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d KiB", n>>10)
}

// pebbleBatches commits batches of random 32-byte keys with 24-byte values (the shard
// index pattern) with Sync, on one goroutine.
func pebbleBatches(dir string, batch int, d time.Duration) (bench.Stage, error) {
	db, err := pebble.Open(dir, &pebble.Options{FormatMajorVersion: pebble.FormatNewest, MemTableSize: 64 << 20, Logger: quietLogger{}})
	if err != nil {
		return bench.Stage{}, fmt.Errorf("nodebench: pebble: %w", err)
	}
	defer db.Close()
	val := randomBytes(24)
	key := make([]byte, 32)
	n := 0
	start := time.Now()
	for time.Since(start) < d || n == 0 {
		b := db.NewBatch()
		for range batch {
			_, _ = rand.Read(key)
			if err := b.Set(key, val, nil); err != nil {
				return bench.Stage{}, fmt.Errorf("nodebench: pebble: %w", err)
			}
		}
		if err := b.Commit(pebble.Sync); err != nil {
			return bench.Stage{}, fmt.Errorf("nodebench: pebble: %w", err)
		}
		b.Close()
		n += batch
	}
	ops := float64(n) / time.Since(start).Seconds()
	return bench.Stage{
		Name: fmt.Sprintf("Pebble index batch of %d, Sync", batch), Side: "node",
		MBps1: ops * 56 / 1e6, OpsPerSec: ops, Cores: 1,
		Note: fmt.Sprintf("%.2f M keys/s", ops/1e6),
	}, nil
}

// quietLogger drops Pebble's informational chatter (it would pollute the JSON
// consumer's stderr); errors still surface as returned errors.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}
