package segstore

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cofferhq/coffer/chunkstore"
)

const benchShardSize = 1 << 20

func benchData(seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, benchShardSize)
	for i := 0; i < len(b); i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// BenchmarkPutShards: 1 MiB shards from 4 concurrent writers, one shard per call, so
// group commit is what merges fsyncs.
func BenchmarkPutShards(b *testing.B) {
	for _, bc := range []struct {
		name   string
		noSync bool
	}{{"fsync", false}, {"nosync", true}} {
		b.Run(bc.name, func(b *testing.B) {
			const writers = 4
			s, err := Open(b.TempDir(), Options{NoSync: bc.noSync})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			data := make([][]byte, writers)
			for w := range data {
				data[w] = benchData(uint64(w))
			}
			var next atomic.Int64
			var wg sync.WaitGroup
			ctx := context.Background()
			b.SetBytes(benchShardSize)
			b.ReportAllocs()
			b.ResetTimer()
			for w := range writers {
				wg.Go(func() {
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						sh := chunkstore.Shard{
							Key:  chunkstore.ShardKey{ID: tid(int(i))},
							Meta: chunkstore.ShardMeta{K: 4, M: 2, ChunkLen: 4 * benchShardSize, Writer: "agent/bench"},
							Data: data[w],
						}
						if err := s.PutShards(ctx, []chunkstore.Shard{sh}); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
		})
	}
}

// BenchmarkGetShard reads 1 MiB shards (from the page cache) with CRC checks.
func BenchmarkGetShard(b *testing.B) {
	const stored = 32
	s, err := Open(b.TempDir(), Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	keys := make([]chunkstore.ShardKey, stored)
	for i := range keys {
		keys[i] = chunkstore.ShardKey{ID: tid(i), Index: 1}
		sh := chunkstore.Shard{Key: keys[i], Meta: chunkstore.ShardMeta{K: 4, M: 2, Writer: "agent/bench"}, Data: benchData(uint64(i))}
		if err := s.PutShards(ctx, []chunkstore.Shard{sh}); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("serial", func(b *testing.B) {
		b.SetBytes(benchShardSize)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := s.GetShard(ctx, keys[i%stored]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.SetBytes(benchShardSize)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if _, err := s.GetShard(ctx, keys[i%stored]); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	})
}
