package crypt

import (
	"errors"
	"fmt"
	"runtime"
	"slices"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// Compression is a sealing policy: the codec and level Seal compresses bodies with. It
// is not stored anywhere: Open reads the codec from each envelope's compression byte, so
// every policy's chunks can be read by every reader of this format (S2 needs a reader
// that knows compression code 2, FORMAT.md). The stored-bytes cost of each, measured on
// an unpacked Go toolchain and a JDK (FORMAT.md, "Compression"): auto stores 4.7% more
// than zstd's default level (what restic 0.14 and 0.18 use), fast 31% more, off 2.6x;
// max 1.8% less.
type Compression uint8

// Compression policies.
const (
	// CompressionAuto, the default: zstd at its fastest level, and chunks whose first
	// and last 8 KiB do not compress are stored without trying the rest.
	CompressionAuto Compression = iota
	// CompressionFast: S2 (Snappy-compatible, about twice zstd fastest's speed), with
	// the same sampling.
	CompressionFast
	// CompressionMax: zstd at its better-compression level, with the same sampling.
	CompressionMax
	// CompressionOff: bodies are stored uncompressed.
	CompressionOff
)

// CompressionNames are the policies' names, in order of their values; immutable.
var CompressionNames = []string{"auto", "fast", "max", "off"}

// String returns the policy's name.
func (c Compression) String() string {
	if int(c) < len(CompressionNames) {
		return CompressionNames[c]
	}
	return fmt.Sprintf("compression(%d)", uint8(c))
}

// ErrUnknownCompression is returned by ParseCompression for a name it does not know.
var ErrUnknownCompression = errors.New("crypt: unknown compression policy")

// ParseCompression returns the policy named s ("" is auto).
func ParseCompression(s string) (Compression, error) {
	if s == "" {
		return CompressionAuto, nil
	}
	for i, n := range CompressionNames {
		if n == s {
			return Compression(i), nil
		}
	}
	return 0, fmt.Errorf("%w %q (want auto, fast, max or off)", ErrUnknownCompression, s)
}

// MaxPlaintextSize bounds the plaintext of one chunk: Seal refuses more and Open never
// decompresses more (a bound on memory whatever the envelope claims).
const MaxPlaintextSize = 64 << 20

// Compression decisions (FORMAT.md, "Compression").
const (
	// minCompressSize: below this, compression is not tried (a zstd frame header alone
	// eats most of any gain).
	minCompressSize = 64
	// sampleMin and sampleSize: inputs of at least sampleMin first compress only their
	// first sampleSize bytes, then their last; if neither sample shrinks to
	// sampleKeep/sampleDen of its size the whole input is stored uncompressed without
	// trying. (The second sample catches fixed-size blocks of disk images whose data
	// ends in zeros.) An 8 KiB sample decides as a 32 KiB one did on the suite's data
	// and costs a quarter: with fastcdc-v2's chunks of a disk image (346 KiB on
	// average) the 32 KiB sample was a tenth of the agent's compression (FORMAT.md).
	sampleMin  = 64 << 10
	sampleSize = 8 << 10
	sampleKeep = 31
	sampleDen  = 32
)

// compressor holds one shared zstd encoder and decoder. Both are safe for concurrent use
// through EncodeAll/DecodeAll; neither starts goroutines in that mode. policy picks the
// encoder: zstd (enc, nil for CompressionOff) or S2 (s2 set).
type compressor struct {
	policy Compression
	zstd   zstdEncoder // auto's and max's encoder; nil for fast (S2) and off
	s2     bool
	dec    *zstd.Decoder
	maxOut uint64
}

// zstdEncoder is a zstd encoder of one level. auto's is zstd's fastest useful level: from
// libzstd (the C reference library, zstd_cgo.go) in builds with cgo and from
// klauspost/compress otherwise (zstd_nocgo.go); max's is klauspost's
// SpeedBetterCompression. All write standard zstd frames with the content size and no
// checksum, which the one decoder reads. On this project's data libzstd level 1
// compresses about 1.6x faster than klauspost's SpeedFastest at the same ratio
// (docs/benchmarks.md, "libzstd for the auto policy").
type zstdEncoder interface {
	// encode compresses src into dst[:0] and returns the frame; cap(dst) is at least
	// bound(len(src)).
	encode(dst, src []byte) []byte
	// bound is the room encode needs for n bytes of input.
	bound(n int) int
	// name says which library and level encode uses (for status output and tests).
	name() string
}

// newCompressor returns a compressor of the default policy whose decoder refuses output
// beyond maxOut bytes (MaxPlaintextSize in production; tests use less).
func newCompressor(maxOut uint64) *compressor {
	return newPolicyCompressor(CompressionAuto, maxOut, nil)
}

// newPolicyCompressor returns a compressor for policy p; dec, when set, is shared (the
// decoder does not depend on the policy).
func newPolicyCompressor(p Compression, maxOut uint64, dec *zstd.Decoder) *compressor {
	c := &compressor{policy: p, maxOut: maxOut}
	// NB: auto is zstd's fastest level since 2026-12-06: with the agent on the host's own
	// cores (the cluster elsewhere) zstd is most of the agent's CPU, and the fastest level
	// compresses about 1.6x faster for about 4% more stored bytes (docs/benchmarks.md,
	// "Compression policy"); SpeedDefault (restic's level) was the default before.
	switch p {
	case CompressionAuto:
		c.zstd = newFastEncoder()
	case CompressionFast:
		c.s2 = true
	case CompressionMax:
		c.zstd = newGoEncoder(zstd.SpeedBetterCompression)
	}
	if dec == nil {
		var err error
		// NB: DecodeAll takes one of `concurrency` states, as EncodeAll does (zstd_go.go).
		dec, err = zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)),
			zstd.WithDecoderMaxMemory(maxOut),
			zstd.WithDecoderMaxWindow(max(maxOut, zstd.MinWindowSize)),
		)
		if err != nil {
			panic("crypt: zstd decoder options: " + err.Error()) // static options; cannot fail
		}
	}
	c.dec = dec
	return c
}

// encode compresses src into dst[:0] with the policy's codec.
func (c *compressor) encode(dst, src []byte) []byte {
	if c.s2 {
		// NB: s2.Encode needs MaxEncodedLen(len(src)) of room or it allocates; the
		// sealing buffer's compression slack is smaller than S2's worst case, so an
		// input that would not fit is not compressed (an encoding that large would
		// not be kept anyway).
		if m := s2.MaxEncodedLen(len(src)); m < 0 || m > cap(dst) {
			return nil
		}
		return s2.Encode(dst[:cap(dst)], src)
	}
	return c.zstd.encode(dst, src)
}

// code is the envelope's compression byte for what encode produced.
func (c *compressor) code() byte {
	if c.s2 {
		return compS2
	}
	return compZstd
}

// compressBound is the spare room Seal reserves so that an incompressible input's zstd
// frame (raw blocks: 3 bytes per 128 KiB block plus a frame header) never reallocates.
func compressBound(n int) int { return n + n>>10 + 64 }

// bound is the spare room Seal reserves for n bytes under this compressor's codec.
func (c *compressor) bound(n int) int {
	if c != nil && c.zstd != nil {
		return max(c.zstd.bound(n), compressBound(n))
	}
	if c != nil && c.s2 {
		if m := s2.MaxEncodedLen(n); m > 0 {
			return max(m, compressBound(n))
		}
	}
	return compressBound(n)
}

// compress tries to compress plain into space[:0] (cap(space) ≥ compressBound(len(plain))).
// It returns the compressed form, stored at the start of space, only if it pays: at most
// 7/8 of len(plain). Otherwise it returns nil, and space's contents are unspecified.
func (c *compressor) compress(space, plain []byte) []byte {
	if c == nil || c.policy == CompressionOff || len(plain) < minCompressSize { // nil: never compress (tests)
		return nil
	}
	if len(plain) >= sampleMin {
		s := c.encode(space, plain[:sampleSize])
		if s == nil || len(s)*sampleDen > sampleSize*sampleKeep {
			s = c.encode(space, plain[len(plain)-sampleSize:])
			if s == nil || len(s)*sampleDen > sampleSize*sampleKeep {
				return nil
			}
		}
	}
	z := c.encode(space, plain)
	if z == nil || len(z)*8 > len(plain)*7 {
		return nil
	}
	if &z[0] != &space[:1][0] {
		// EncodeAll outgrew space (cannot happen within compressBound, kept for safety).
		copy(space[:len(z)], z)
		z = space[:len(z)]
	}
	return z
}

// decompress appends the decompressed z (compression code comp) to dst, refusing output
// beyond the bound.
func (c *compressor) decompress(dst, z []byte, comp byte) ([]byte, error) {
	if comp == compS2 {
		n, err := s2.DecodedLen(z)
		if err != nil {
			return nil, err
		}
		if uint64(n) > c.maxOut {
			return nil, fmt.Errorf("s2 block decodes to %d bytes, more than %d", n, c.maxOut)
		}
		start := len(dst)
		dst = slices.Grow(dst, n)
		out, err := s2.Decode(dst[start:start+n], z)
		if err != nil {
			return nil, err
		}
		return dst[:start+len(out)], nil
	}
	return c.dec.DecodeAll(z, dst)
}
