//go:build cgo

package crypt

import (
	"sync"

	cz "github.com/DataDog/zstd"
)

// cFastLevel is the auto policy's libzstd level: level 1, which on this project's data
// stores what klauspost's SpeedFastest stores (ratio 3.36 against 3.38 on a Go
// toolchain) at about 1.6x its speed (docs/benchmarks.md, "libzstd for the auto policy").
const cFastLevel = 1

// cFast is the auto policy's encoder in builds with cgo: libzstd (the zstd reference
// implementation, as vendored by github.com/DataDog/zstd) at cFastLevel. A compression
// context holds about a megabyte of C memory; the pool keeps one per concurrent Seal.
type cFast struct{ ctxs sync.Pool }

func newFastEncoder() zstdEncoder {
	return &cFast{ctxs: sync.Pool{New: func() any { return cz.NewCtx() }}}
}

// encode compresses src into dst[:0]. libzstd wants ZSTD_compressBound(len(src)) of
// room, which bound reserves; should it ever fail (it cannot, given that room), encode
// returns nil and the chunk is stored uncompressed.
func (c *cFast) encode(dst, src []byte) []byte {
	ctx := c.ctxs.Get().(cz.Ctx)
	defer c.ctxs.Put(ctx)
	out, err := ctx.CompressLevel(dst[:cap(dst)], src, cFastLevel)
	if err != nil {
		return nil
	}
	return out
}

func (c *cFast) bound(n int) int { return cz.CompressBound(n) }
func (c *cFast) name() string    { return "libzstd 1.5.7 level 1" }
