package crypt

import (
	"runtime"

	"github.com/klauspost/compress/zstd"
)

// goFast is the auto policy's encoder without cgo: klauspost/compress at SpeedFastest.
type goFast struct{ enc *zstd.Encoder }

// newGoFastEncoder returns klauspost/compress's SpeedFastest encoder, with one state per
// P (EncodeAll takes a state from a pool of that size, so fewer would serialise
// parallel sealing), no frame checksum (AES-GCM authenticates the body) and a 4 MiB
// window (a chunk is at most 4 MiB; more would only cost each state history).
func newGoFastEncoder() fastEncoder {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
		zstd.WithEncoderCRC(false),
		zstd.WithWindowSize(4<<20),
	)
	if err != nil {
		panic("crypt: zstd encoder options: " + err.Error()) // static options; cannot fail
	}
	return goFast{enc}
}

func (g goFast) encode(dst, src []byte) []byte { return g.enc.EncodeAll(src, dst[:0]) }
func (g goFast) bound(n int) int               { return compressBound(n) }
func (g goFast) name() string                  { return "klauspost/compress zstd SpeedFastest" }
