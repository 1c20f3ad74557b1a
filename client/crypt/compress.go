package crypt

import (
	"runtime"

	"github.com/klauspost/compress/zstd"
)

// MaxPlaintextSize bounds the plaintext of one chunk: Seal refuses more and Open never
// decompresses more (a bound on memory whatever the envelope claims).
const MaxPlaintextSize = 64 << 20

// Compression decisions (FORMAT.md, "Compression").
const (
	// minCompressSize: below this, compression is not tried (a zstd frame header alone
	// eats most of any gain).
	minCompressSize = 64
	// sampleSize: inputs of at least 2*sampleSize first compress only their first
	// sampleSize bytes, then their last; if neither sample shrinks to sampleKeep/sampleDen
	// of its size the whole input is stored uncompressed without trying. (The second
	// sample catches fixed-size blocks of disk images whose data ends in zeros.)
	sampleSize = 32 << 10
	sampleKeep = 31
	sampleDen  = 32
)

// compressor holds one shared zstd encoder and decoder. Both are safe for concurrent use
// through EncodeAll/DecodeAll; neither starts goroutines in that mode.
type compressor struct {
	enc *zstd.Encoder
	dec *zstd.Decoder
}

// newCompressor returns a compressor whose decoder refuses output beyond maxOut bytes
// (MaxPlaintextSize in production; tests use less).
func newCompressor(maxOut uint64) *compressor {
	// NB: EncodeAll and DecodeAll each take one of `concurrency` internal states from a
	// channel, so concurrency 1 would serialise every Seal of the process behind one
	// encoder, capping compression at one core (FORMAT.md). One state per P keeps
	// parallel sealing parallel.
	n := runtime.GOMAXPROCS(0)
	// NB: SpeedDefault, not SpeedFastest: on the Go toolchain tree it stores 4.6% fewer
	// bytes (the level restic uses), which the bytes-added target needs, for about 7%
	// more CPU on a backup that is not bound by sealing (docs/benchmarks.md).
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedDefault),
		zstd.WithEncoderConcurrency(n),
		zstd.WithEncoderCRC(false), // AES-GCM authenticates the body
	)
	if err != nil {
		panic("crypt: zstd encoder options: " + err.Error()) // static options; cannot fail
	}
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(n),
		zstd.WithDecoderMaxMemory(maxOut),
		zstd.WithDecoderMaxWindow(max(maxOut, zstd.MinWindowSize)),
	)
	if err != nil {
		panic("crypt: zstd decoder options: " + err.Error()) // static options; cannot fail
	}
	return &compressor{enc: enc, dec: dec}
}

// compressBound is the spare room Seal reserves so that an incompressible input's zstd
// frame (raw blocks: 3 bytes per 128 KiB block plus a frame header) never reallocates.
func compressBound(n int) int { return n + n>>10 + 64 }

// compress tries to compress plain into space[:0] (cap(space) ≥ compressBound(len(plain))).
// It returns the compressed form, stored at the start of space, only if it pays: at most
// 7/8 of len(plain). Otherwise it returns nil, and space's contents are unspecified.
func (c *compressor) compress(space, plain []byte) []byte {
	if c == nil || len(plain) < minCompressSize { // nil: never compress (tests)
		return nil
	}
	if len(plain) >= 2*sampleSize {
		s := c.enc.EncodeAll(plain[:sampleSize], space[:0])
		if len(s)*sampleDen > sampleSize*sampleKeep {
			s = c.enc.EncodeAll(plain[len(plain)-sampleSize:], space[:0])
			if len(s)*sampleDen > sampleSize*sampleKeep {
				return nil
			}
		}
	}
	z := c.enc.EncodeAll(plain, space[:0])
	if len(z)*8 > len(plain)*7 {
		return nil
	}
	if &z[0] != &space[:1][0] {
		// EncodeAll outgrew space (cannot happen within compressBound, kept for safety).
		copy(space[:len(z)], z)
		z = space[:len(z)]
	}
	return z
}

// decompress appends the decompressed z to dst, refusing output beyond the bound.
func (c *compressor) decompress(dst, z []byte) ([]byte, error) {
	return c.dec.DecodeAll(z, dst)
}
