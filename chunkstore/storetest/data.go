package storetest

import (
	"crypto/sha256"
	"encoding/binary"
	"math/rand/v2"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
)

// testID returns a deterministic, non-zero chunk ID for n.
func testID(n int) chunk.ID {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(n))
	return chunk.ID(sha256.Sum256(append([]byte("storetest-id-"), b[:]...)))
}

// testData returns size deterministic pseudo-random bytes for seed.
func testData(seed uint64, size int) []byte {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// testShard returns shard index of chunk n with data derived from (n, index, variant).
func testShard(n int, index uint8, size int, variant uint64) chunkstore.Shard {
	return chunkstore.Shard{
		Key: chunkstore.ShardKey{ID: testID(n), Index: index},
		Meta: chunkstore.ShardMeta{
			K:        4,
			M:        2,
			ChunkLen: uint32(size * 4),
			ChunkCRC: uint32(n)*7919 + uint32(variant),
			Writer:   "agent/host-" + string(rune('a'+n%26)),
		},
		Data: testData(uint64(n)<<16|uint64(index)<<8|variant, size),
	}
}

// sizeFor returns a small, varying shard size for test item i.
func sizeFor(i int) int { return 1 + (i*797)%3000 }
