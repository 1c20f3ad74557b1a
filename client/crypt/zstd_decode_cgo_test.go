//go:build cgo

package crypt

import (
	"bytes"
	"testing"

	cz "github.com/DataDog/zstd"
	"github.com/klauspost/compress/zstd"
)

// BenchmarkZstdDecoders compares the decoder Open uses (klauspost) with libzstd's
// DecompressInto on a reused context, on libzstd level 1 frames (what the auto policy
// writes) of 1 MiB: the measurement behind keeping klauspost for decoding
// (docs/benchmarks.md, eighth session).
func BenchmarkZstdDecoders(b *testing.B) {
	in := textBytes(44, 1<<20)
	frame := newFastEncoder().encode(make([]byte, 0, cz.CompressBound(len(in))), in)
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(MaxPlaintextSize))
	if err != nil {
		b.Fatal(err)
	}
	defer dec.Close()
	out := make([]byte, len(in))
	b.Run("klauspost", func(b *testing.B) {
		b.SetBytes(int64(len(in)))
		for b.Loop() {
			got, err := dec.DecodeAll(frame, out[:0])
			if err != nil || !bytes.Equal(got, in) {
				b.Fatalf("decode: %v", err)
			}
		}
	})
	b.Run("libzstd", func(b *testing.B) {
		ctx := cz.NewCtx()
		b.SetBytes(int64(len(in)))
		for b.Loop() {
			n, err := ctx.DecompressInto(out, frame)
			if err != nil || !bytes.Equal(out[:n], in) {
				b.Fatalf("decode: %v", err)
			}
		}
	})
}
