package segstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
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

// BenchmarkSweepChunks sweeps chunks of 6 shards of 4 KiB (fsync on) in calls of 1024
// IDs; one op is one chunk swept.
func BenchmarkSweepChunks(b *testing.B) {
	const shardsPer, shardSize, perCall = 6, 4 << 10, 1024
	s, err := Open(b.TempDir(), Options{DisableAutoCompact: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	data := benchData(7)[:shardSize]
	ids := make([]chunk.ID, b.N)
	for i := range ids {
		ids[i] = tid(i)
	}
	for start := 0; start < len(ids); start += 64 {
		var batch []chunkstore.Shard
		for _, id := range ids[start:min(start+64, len(ids))] {
			for x := range shardsPer {
				batch = append(batch, chunkstore.Shard{
					Key:  chunkstore.ShardKey{ID: id, Index: uint8(x)},
					Meta: chunkstore.ShardMeta{K: 4, M: 2, ChunkLen: 4 * shardSize, Writer: "agent/bench"},
					Data: data,
				})
			}
		}
		if err := s.PutShards(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	cutoff := time.Now().Add(time.Hour)
	b.ReportAllocs()
	b.ResetTimer()
	for start := 0; start < len(ids); start += perCall {
		res, err := s.SweepChunks(ctx, ids[start:min(start+perCall, len(ids))], cutoff)
		if err != nil {
			b.Fatal(err)
		}
		if res.Spared != 0 {
			b.Fatalf("sweep spared %d chunks", res.Spared)
		}
	}
}

// BenchmarkCompact: 64 MiB of 64 KiB shards in 8 MiB segments, 90% deleted, then one
// Compact (fsync on). Throughput is segment bytes compacted per second.
func BenchmarkCompact(b *testing.B) {
	const shardSize, total = 64 << 10, 64 << 20
	data := benchData(9)[:shardSize]
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		dir := b.TempDir()
		s, err := Open(dir, Options{SegmentSize: 8 << 20, DisableAutoCompact: true})
		if err != nil {
			b.Fatal(err)
		}
		var dels []chunkstore.ShardKey
		for i := range total / shardSize {
			sh := chunkstore.Shard{Key: chunkstore.ShardKey{ID: tid(i)}, Meta: chunkstore.ShardMeta{K: 4, M: 2, Writer: "agent/bench"}, Data: data}
			if err := s.PutShards(ctx, []chunkstore.Shard{sh}); err != nil {
				b.Fatal(err)
			}
			if i%10 != 0 {
				dels = append(dels, sh.Key)
			}
		}
		if err := s.DeleteShards(ctx, dels); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(total)
		b.StartTimer()
		res, err := s.Compact(ctx)
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(100*float64(res.Reclaimed-res.Copied)/float64(total), "%freed")
		s.Close()
		b.StartTimer()
	}
}

// BenchmarkTouchShards: calls of 64 keys (stored, fsync on), serial and from 8
// goroutines, whose touches the writer merges into one synced index batch per group.
func BenchmarkTouchShards(b *testing.B) {
	const stored, perCall = 4096, 64
	s, err := Open(b.TempDir(), Options{DisableAutoCompact: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	keys := make([]chunkstore.ShardKey, stored)
	data := benchData(3)[:512]
	for start := 0; start < stored; start += 256 {
		var batch []chunkstore.Shard
		for i := start; i < start+256; i++ {
			keys[i] = chunkstore.ShardKey{ID: tid(i), Index: uint8(i % 6)}
			batch = append(batch, chunkstore.Shard{Key: keys[i], Meta: chunkstore.ShardMeta{K: 4, M: 2, Writer: "agent/bench"}, Data: data})
		}
		if err := s.PutShards(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	touch := func(i int) error {
		start := (i * perCall) % stored
		_, err := s.TouchShards(ctx, keys[start:start+perCall])
		return err
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if err := touch(i); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("parallel8", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(4) // 4 × GOMAXPROCS(2) goroutines
		var next atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := touch(int(next.Add(1))); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkIndexLookups: calls of 1024 keys against an index of 20k shards (all in the
// memtable) or 200k shards (the memtable and flushed tables), for keys that are all
// stored ("present") or all absent ("absent", the dedup check and first-write-wins check
// of a new backup); "touch/present" is TouchShards of stored keys (a commit check's
// existence query, NoSync).
// "put" stores 1024 new shards per call (NoSync), whose first-write-wins lookups miss;
// "loadFilter" is what Open spends filling the key filter from the index.
func BenchmarkIndexLookups(b *testing.B) {
	for _, stored := range []int{20_000, 200_000} {
		b.Run(fmt.Sprintf("stored=%d", stored), func(b *testing.B) { benchIndexLookups(b, stored) })
	}
}

func benchIndexLookups(b *testing.B, stored int) {
	const perCall = 1024
	s, err := Open(b.TempDir(), Options{NoSync: true, DisableAutoCompact: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	data := benchData(5)[:64]
	meta := chunkstore.ShardMeta{K: 4, M: 2, ChunkLen: 256, Writer: "agent/bench"}
	for start := 0; start < stored; start += perCall {
		batch := make([]chunkstore.Shard, 0, perCall)
		for i := start; i < start+perCall; i++ {
			batch = append(batch, chunkstore.Shard{Key: chunkstore.ShardKey{ID: tid(i / 6), Index: uint8(i % 6)}, Meta: meta, Data: data})
		}
		if err := s.PutShards(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	keys := func(base, i int) []chunkstore.ShardKey {
		out := make([]chunkstore.ShardKey, perCall)
		for j := range out {
			n := base + (i*perCall+j)%stored
			out[j] = chunkstore.ShardKey{ID: tid(n / 6), Index: uint8(n % 6)}
		}
		return out
	}
	for _, bc := range []struct {
		name string
		base int
	}{{"present", 0}, {"absent", 1 << 40}} {
		b.Run("has/"+bc.name, func(b *testing.B) {
			i := 0
			for b.Loop() {
				got, err := s.HasShards(ctx, keys(bc.base, i))
				if err != nil || got[0] != (bc.base == 0) {
					b.Fatalf("HasShards: %v, %v", got[0], err)
				}
				i++
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perCall), "ns/key")
		})
	}
	b.Run("touch/present", func(b *testing.B) {
		i := 0
		for b.Loop() {
			got, err := s.TouchShards(ctx, keys(0, i))
			if err != nil || !got[0] {
				b.Fatalf("TouchShards: %v, %v", got[0], err)
			}
			i++
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perCall), "ns/key")
	})
	b.Run("loadFilter", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.loadFilter(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*stored), "ns/key")
	})
	b.Run("put", func(b *testing.B) {
		i := 0
		for b.Loop() {
			batch := make([]chunkstore.Shard, perCall)
			for j, k := range keys(2<<40, i) {
				batch[j] = chunkstore.Shard{Key: k, Meta: meta, Data: data}
			}
			if err := s.PutShards(ctx, batch); err != nil {
				b.Fatal(err)
			}
			i++
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perCall), "ns/key")
	})
}

// BenchmarkIndexBatch: what the writer spends staging and committing the index updates of
// a group of 1024 new shards (random IDs; NoSync), on a store whose index grows by as much
// each round: the memtable inserts, without segment I/O.
func BenchmarkIndexBatch(b *testing.B) {
	const perGroup = 1024
	s, err := Open(b.TempDir(), Options{NoSync: true, DisableAutoCompact: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ap := &applier{s: s} // NB: the store's own writer goroutine stays idle
	v := &indexValue{loc: location{seg: 1, off: fileHeaderSize, dataLen: 1}, meta: chunkstore.ShardMeta{K: 4, M: 2, Writer: "agent/bench"}}
	keys := make([]chunkstore.ShardKey, perGroup)
	n := 0
	for b.Loop() {
		b.StopTimer()
		for j := range keys {
			keys[j] = chunkstore.ShardKey{ID: tid(n / 6), Index: uint8(n % 6)}
			n++
		}
		b.StartTimer()
		ap.begin(s.opts.Now())
		for _, k := range keys {
			if _, err := ap.put(k, v); err != nil {
				b.Fatal(err)
			}
		}
		if err := ap.commit(checkpoint{seg: 1, off: fileHeaderSize}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perGroup), "ns/key")
}

// BenchmarkRecordBind is what binding a record to its place costs the writer goroutine
// (one HMAC-SHA256 over the header and writer, independent of the data size), next to
// the data CRC every put already pays on its caller's goroutine.
func BenchmarkRecordBind(b *testing.B) {
	sh := chunkstore.Shard{
		Key:  chunkstore.ShardKey{ID: chunk.ID{1}, Index: 2},
		Meta: chunkstore.ShardMeta{K: 4, M: 2, ChunkLen: 4 * benchShardSize, Writer: "agent/bench"},
		Data: benchData(1),
	}
	rec := appendPut(nil, &sh, crcOf(sh.Data))
	bd := newBinder(make([]byte, saltSize))
	b.Run("bind", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			bd.bind(rec, 1, int64(i))
		}
	})
	b.Run("dataCRC", func(b *testing.B) {
		b.SetBytes(int64(len(sh.Data)))
		for b.Loop() {
			crcOf(sh.Data)
		}
	})
}
