package crypt

import (
	"runtime"

	"github.com/klauspost/compress/zstd"
)

// goZstd is a klauspost/compress zstd encoder: auto's without cgo, and max's.
type goZstd struct {
	enc   *zstd.Encoder
	level zstd.EncoderLevel
}

// newGoEncoder returns klauspost/compress's encoder at level, with one state per P
// (EncodeAll takes one of `concurrency` states from a channel, so fewer would serialise
// every Seal of the process behind them), no frame checksum (AES-GCM authenticates the
// body) and a 4 MiB window (a chunk is at most 4 MiB, the chunker's maximum; a larger
// window buys nothing and costs each state twice its size in history).
func newGoEncoder(level zstd.EncoderLevel) zstdEncoder {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(level),
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
		zstd.WithEncoderCRC(false),
		zstd.WithWindowSize(4<<20),
	)
	if err != nil {
		panic("crypt: zstd encoder options: " + err.Error()) // static options; cannot fail
	}
	return goZstd{enc, level}
}

func (g goZstd) encode(dst, src []byte) []byte { return g.enc.EncodeAll(src, dst[:0]) }
func (g goZstd) bound(n int) int               { return compressBound(n) }
func (g goZstd) name() string                  { return "klauspost/compress zstd " + g.level.String() }
