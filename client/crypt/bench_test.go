package crypt

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func BenchmarkChunkID1MiB(b *testing.B) {
	k := DeriveKeys(testMaster(40))
	data := randomBytes(1, 1<<20)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		k.ChunkID(data)
	}
}

func benchInputs() []struct {
	name string
	data []byte
} {
	return []struct {
		name string
		data []byte
	}{
		{"text", textBytes(41, 1<<20)},
		{"random", randomBytes(41, 1<<20)},
	}
}

func BenchmarkSeal1MiB(b *testing.B) {
	k := DeriveKeys(testMaster(41))
	for _, in := range benchInputs() {
		b.Run(in.name, func(b *testing.B) {
			id := k.ChunkID(in.data)
			dst := make([]byte, 0, k.SealCap(len(in.data)))
			b.SetBytes(int64(len(in.data)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := k.Seal(dst[:0], id, in.data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSeal1MiBParallel shows that sealing scales across cores (the shared zstd
// encoder holds one state per P, see compress.go).
func BenchmarkSeal1MiBParallel(b *testing.B) {
	k := DeriveKeys(testMaster(41))
	data := textBytes(41, 1<<20)
	id := k.ChunkID(data)
	b.SetBytes(int64(len(data)))
	b.RunParallel(func(pb *testing.PB) {
		dst := make([]byte, 0, k.SealCap(len(data)))
		for pb.Next() {
			if _, err := k.Seal(dst[:0], id, data); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkOpen1MiB(b *testing.B) {
	k := DeriveKeys(testMaster(42))
	for _, in := range benchInputs() {
		b.Run(in.name, func(b *testing.B) {
			id := k.ChunkID(in.data)
			sealed, err := k.Seal(nil, id, in.data)
			if err != nil {
				b.Fatal(err)
			}
			dst := make([]byte, 0, len(in.data))
			b.SetBytes(int64(len(in.data)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := k.Open(dst[:0], id, sealed); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSealSmall measures the fixed per-chunk cost (key derivation, AES key schedule,
// GCM setup, nonce) on a 4 KiB random chunk; compare BenchmarkChunkAEAD.
func BenchmarkSealSmall(b *testing.B) {
	k := DeriveKeys(testMaster(43))
	data := randomBytes(43, 4<<10)
	id := k.ChunkID(data)
	dst := make([]byte, 0, 8<<10)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Seal(dst[:0], id, data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkChunkAEAD is the per-chunk key cost alone: HKDF-Expand + AES-256 + GCM setup,
// against building the AEAD from a fixed key (the alternative design).
func BenchmarkChunkAEAD(b *testing.B) {
	k := DeriveKeys(testMaster(44))
	id := k.ChunkID([]byte("x"))
	b.Run("per-chunk-key", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := k.chunkAEAD(id); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fixed-key", func(b *testing.B) {
		block, _ := aes.NewCipher(k.cur.prk[:])
		aead, _ := cipher.NewGCM(block)
		b.ReportAllocs()
		for b.Loop() {
			_ = aead
		}
	})
}

// BenchmarkZstdEncoders compresses the same inputs with auto's encoder of this build
// (libzstd with cgo), klauspost's SpeedFastest (auto without cgo) and klauspost's
// default level (restic's), in 1 MiB and 16 KiB (bundle-sized) pieces, and reports each
// one's compression ratio beside its speed: docs/benchmarks.md, "libzstd for the auto
// policy", compares them on a Go toolchain.
func BenchmarkZstdEncoders(b *testing.B) {
	encs := []zstdEncoder{newFastEncoder(), newGoEncoder(zstd.SpeedFastest), newGoEncoder(zstd.SpeedDefault)}
	for _, size := range []int{1 << 20, 16 << 10} {
		in := textBytes(43, size)
		for _, enc := range encs {
			b.Run(fmt.Sprintf("%s/%dKiB", strings.ReplaceAll(enc.name(), " ", "_"), size>>10), func(b *testing.B) {
				dst := make([]byte, 0, enc.bound(len(in)))
				b.SetBytes(int64(len(in)))
				var out int
				for b.Loop() {
					out = len(enc.encode(dst, in))
				}
				b.ReportMetric(float64(len(in))/float64(out), "ratio")
			})
		}
	}
}

// BenchmarkCompressSample: the auto policy's compression of a 346 KiB compressible chunk
// (the mean chunk of the suite's disk image under fastcdc-v2) with its samples, and the
// same chunk encoded whole without them; the difference is what the samples cost.
func BenchmarkCompressSample(b *testing.B) {
	c := newCompressor(MaxPlaintextSize)
	in := textBytes(44, 346<<10)
	space := make([]byte, 0, c.bound(len(in)))
	b.Run("sampled", func(b *testing.B) {
		b.SetBytes(int64(len(in)))
		for b.Loop() {
			if c.compress(space, in) == nil {
				b.Fatal("not compressed")
			}
		}
	})
	b.Run("whole", func(b *testing.B) {
		b.SetBytes(int64(len(in)))
		for b.Loop() {
			if c.encode(space, in) == nil {
				b.Fatal("not compressed")
			}
		}
	})
}
