package segstore

import (
	"hash/maphash"
	"math/bits"
	"sync/atomic"

	"github.com/cofferhq/coffer/chunkstore"
)

// Key filter sizing: filterBitsPerKey bits per shard key the filter is sized for, at
// least filterMinKeys keys, rounded up to a power of two of 512-bit blocks: 512 KiB at
// least, 32 MiB for a store opened with 10 million shards.
const (
	filterBitsPerKey = 10
	filterMinKeys    = 1 << 18
	filterProbes     = 6 // bits set per key, all in one block
	filterBlockWords = 8 // 512 bits: one cache line
)

// keyFilter is an in-memory blocked Bloom filter of the shard keys in the index. A
// negative answer is exact: every key the index holds was added before the index batch
// that holds it was committed, and keys are never removed (deleted keys leave their
// bits). A positive answer may be false and is checked in the index. So lookups of
// absent keys — a new backup's every shard, asked once by the dedup check and once more
// by the first-write-wins check of its put — skip Pebble.
//
// The filter is sized when the store opens, for twice its shards then: past that it
// answers "maybe" more often, never wrongly. Safe for concurrent use: the writer
// goroutine adds while lookups test.
type keyFilter struct {
	seed  maphash.Seed
	words []atomic.Uint64
	mask  uint64 // number of blocks - 1
}

// newKeyFilter returns an empty filter sized for n keys.
func newKeyFilter(n int64) *keyFilter {
	n = max(n, filterMinKeys)
	blocks := uint64(n) * filterBitsPerKey / (filterBlockWords * 64)
	blocks = 1 << bits.Len64(max(blocks, 1)-1) // next power of two
	return &keyFilter{
		seed:  maphash.MakeSeed(),
		words: make([]atomic.Uint64, blocks*filterBlockWords),
		mask:  blocks - 1,
	}
}

// probes returns the block of k and the mask of its bits in each word of the block.
func (f *keyFilter) probes(k chunkstore.ShardKey) (block uint64, masks [filterBlockWords]uint64) {
	var b [shardKeyLen - 1]byte
	copy(b[:], k.ID[:])
	b[len(b)-1] = k.Index
	h := maphash.Bytes(f.seed, b[:])
	block = (h >> 32) & f.mask
	// NB: the probes are 9-bit slices of a second, mixed hash: 6 × 9 = 54 bits.
	g := h * 0x9e3779b97f4a7c15
	for range filterProbes {
		bit := g & 511
		masks[bit>>6] |= 1 << (bit & 63)
		g >>= 9
	}
	return block, masks
}

// add records k.
func (f *keyFilter) add(k chunkstore.ShardKey) {
	block, masks := f.probes(k)
	w := f.words[block*filterBlockWords : (block+1)*filterBlockWords]
	for i, m := range masks {
		if m != 0 && w[i].Load()&m != m {
			w[i].Or(m)
		}
	}
}

// mayContain reports whether k may have been added; false means it never was.
func (f *keyFilter) mayContain(k chunkstore.ShardKey) bool {
	block, masks := f.probes(k)
	w := f.words[block*filterBlockWords : (block+1)*filterBlockWords]
	for i, m := range masks {
		if w[i].Load()&m != m {
			return false
		}
	}
	return true
}
