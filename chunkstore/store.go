// Package chunkstore defines the storage contracts for chunks and their erasure-coded shards.
//
// Two contracts live here:
//   - Store holds whole sealed chunks keyed by chunk ID. It is what agents and meta nodes
//     use. Implementations: chunkstore/coord (coordinates over the shard stores of the PG's
//     nodes) and the chunkrpc client (a Store on a remote coordinator).
//   - ShardStore holds the shards of one node. Implementations: chunkstore/memstore (tests,
//     caches) and chunkstore/segstore (Pebble index + append-only segment files).
//
// Nodes never interpret chunk bytes: they are ciphertext sealed by the agent.
package chunkstore

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"math/bits"
	"time"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/gcorder"
	"github.com/cofferhq/coffer/chunkstore/nodestat"
)

// Sentinel errors. Callers branch on them with errors.Is; they survive wrapping and
// cross the wire as transport codes (see chunkstore/chunkrpc).
var (
	// ErrNotFound: the chunk or shard is not stored.
	ErrNotFound = errors.New("chunkstore: not found")
	// ErrCorrupt marks data that failed an integrity check (CRC, digest, decode).
	ErrCorrupt = errors.New("chunkstore: corrupt")
	// ErrUnavailable: too few nodes answered to reach a quorum.
	ErrUnavailable = errors.New("chunkstore: unavailable")
	// ErrInvalid: a malformed request (bad shard index, empty data, oversize chunk).
	ErrInvalid = errors.New("chunkstore: invalid argument")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("chunkstore: closed")
	// ErrNoSpace: the node's disk is full (the write failed with ENOSPC). Nothing of the
	// failed write is acknowledged; the store takes writes again once space returns. A
	// coordinator writes the node's shards to substitutes, as for a down node.
	ErrNoSpace = errors.New("chunkstore: no space: disk full")
)

// MaxChunkSize bounds a sealed chunk (the chunker's 4 MiB maximum plus envelope and slack).
const MaxChunkSize = 16 << 20

// Chunk is one whole sealed chunk.
type Chunk struct {
	ID   chunk.ID
	Data []byte
}

// Store holds whole chunks. All methods are safe for concurrent use.
//
// Ownership: slices passed in are not retained after a method returns; returned slices
// belong to the caller.
type Store interface {
	// Put stores chunks durably. When it returns nil every chunk is durable (for a
	// distributed store: a write quorum of fsynced shards). The first write of an ID wins:
	// putting an ID that exists succeeds and changes nothing. Chunks with empty data or
	// data above MaxChunkSize fail with ErrInvalid and nothing of the batch is stored.
	Put(ctx context.Context, chunks []Chunk) error
	// Get returns the chunk's bytes, ErrNotFound, ErrCorrupt (more damage than
	// redundancy can repair) or ErrUnavailable.
	Get(ctx context.Context, id chunk.ID) ([]byte, error)
	// Has reports for each id whether it is durably stored. The result has len(ids)
	// entries, in order.
	Has(ctx context.Context, ids []chunk.ID) ([]bool, error)
}

// ShardKey names one shard: shard Index (0..k+m-1) of chunk ID.
type ShardKey struct {
	ID    chunk.ID
	Index uint8
}

// ShardMeta describes the stripe a shard belongs to. It is stored with every shard so that
// any k shards are enough to rebuild the chunk without consulting anything else.
type ShardMeta struct {
	K, M     uint8  // erasure profile of the stripe
	ChunkLen uint32 // length of the whole sealed chunk
	ChunkCRC uint32 // CRC32C (Castagnoli) of the whole sealed chunk (deep scrub)
	Writer   string // principal that first wrote the chunk (provenance)
}

// Shard is one stored shard with its stripe metadata.
type Shard struct {
	Key  ShardKey
	Meta ShardMeta
	Data []byte
}

// ShardInfo is what Enumerate reports: key, metadata and stored length, no data.
type ShardInfo struct {
	Key  ShardKey
	Meta ShardMeta
	Len  uint32
}

// ShardStats summarises one node's shard store (nodestat.Shards, the type the node.Status
// answer carries).
type ShardStats = nodestat.Shards

// ShardStore is one node's shard storage. All methods are safe for concurrent use.
type ShardStore interface {
	// PutShards stores a batch. When it returns nil every shard is durable (fsynced). A
	// key that exists keeps its first value (first write wins) and counts as success.
	PutShards(ctx context.Context, shards []Shard) error
	// GetShard returns a shard after checking its CRC: ErrNotFound, or ErrCorrupt when the
	// stored bytes do not match.
	GetShard(ctx context.Context, key ShardKey) (Shard, error)
	// HasShards reports for each key whether it is stored (no CRC check).
	HasShards(ctx context.Context, keys []ShardKey) ([]bool, error)
	// DeleteShards removes shards; missing keys are not an error.
	DeleteShards(ctx context.Context, keys []ShardKey) error
	// EnumerateShards calls fn for every shard with key > after (chunk ID, then index), in
	// order, in the caller's goroutine. fn returning an error stops and returns it.
	EnumerateShards(ctx context.Context, after *ShardKey, fn func(ShardInfo) error) error
	// Stats returns current counts.
	Stats(ctx context.Context) (ShardStats, error)
}

// GCStore is a ShardStore that remembers, per chunk, the last time (this node's clock) one of
// its shards here was written or touched, so that garbage collection spares chunks a backup
// in flight relies on (DESIGN "Immutability, retention and garbage collection"). segstore
// and memstore implement it. Times come from the store's injected clock.
type GCStore interface {
	ShardStore
	// TouchShards answers like HasShards and records now as the touch time of the chunk of
	// every stored key. The touches are durable when it returns nil.
	TouchShards(ctx context.Context, keys []ShardKey) ([]bool, error)
	// GCCandidates calls fn, in chunk-ID order, once per chunk ID > after (nil: from the
	// start) that has shards here and whose last write or touch is before cutoff, with the
	// bytes its shards here occupy. fn returning an error stops and returns it.
	GCCandidates(ctx context.Context, after *chunk.ID, cutoff time.Time, fn func(id chunk.ID, bytes int64) error) error
	// SweepChunks deletes every shard here of each id whose last write or touch is before
	// cutoff, and skips the others. It is atomic with respect to PutShards and TouchShards:
	// a write or touch that returned before SweepChunks examined the chunk spares it, and
	// one that starts later sees it gone. Deletions are durable when it returns nil.
	SweepChunks(ctx context.Context, ids []chunk.ID, cutoff time.Time) (SweepResult, error)
}

// SweepResult reports what SweepChunks did. It is the GC order vocabulary's type
// (chunkstore/gcorder), which the meta leader reads too.
type SweepResult = gcorder.SweepResult

// Less orders shard keys by chunk ID, then index.
func (k ShardKey) Less(o ShardKey) bool {
	if k.ID != o.ID {
		return k.ID.Less(o.ID)
	}
	return k.Index < o.Index
}

// PGLister is a ShardStore that lists the shards of one placement group and tells which
// PGs changed, so that repair's cost grows with the PGs that changed rather than with the
// shards stored (segstore, memstore and the chunkrpc ShardClient implement it). PGs are
// placement.Map.PG's: pg = first 8 bytes of the chunk ID, big-endian, mod pgCount, with
// pgCount a power of two ≥ 1.
type PGLister interface {
	ShardStore
	// EnumeratePG calls fn for every shard of PG pg of pgCount whose key is after after
	// in PG order (nil: from the start; see PGLess), in PG order, in the caller's
	// goroutine. fn returning an error stops and returns it. A pgCount that is not a
	// power of two, or pg ≥ pgCount, fails with ErrInvalid.
	EnumeratePG(ctx context.Context, pgCount, pg uint32, after *ShardKey, fn func(ShardInfo) error) error
	// PGVersions returns the store's change marks for pgCount PGs. Read before a listing
	// (EnumeratePG or EnumerateShards), equal marks on a later call mean that nothing of
	// that PG was put or deleted since: the listing is still what the store holds.
	PGVersions(ctx context.Context, pgCount uint32) (PGVersions, error)
}

// PGBuckets is the granularity of PG change marks: PGs are tracked by the low 16 bits of
// their number (the low 16 bits of the chunk ID's first 8 bytes, big-endian).
const PGBuckets = 1 << 16

// PGVersions is a store's change marks. Two marks are comparable only under the same
// Incarnation, which a store draws anew whenever its marks restart (at every open, after
// an index rebuild).
type PGVersions struct {
	Incarnation uint64
	// Seqs has min(pgCount, PGBuckets) entries; PG pg's mark is Seqs[pg%len(Seqs)].
	// A mark changes whenever a shard of its PGs is put or deleted.
	Seqs []uint64
}

// Of returns PG pg's mark (0 when Seqs is empty).
func (v PGVersions) Of(pg uint32) uint64 {
	if len(v.Seqs) == 0 {
		return 0
	}
	return v.Seqs[int(pg)%len(v.Seqs)]
}

// PGOf is placement.Map.PG for a power-of-two pgCount (0 counts as 1).
func PGOf(id chunk.ID, pgCount uint32) uint32 {
	if pgCount == 0 {
		return 0
	}
	return uint32(binary.BigEndian.Uint64(id[:8]) % uint64(pgCount))
}

// PGBucket is the low 16 bits of id's PG number under any pgCount ≥ PGBuckets (and id's
// PG under a smaller pgCount is PGBucket(id) % pgCount).
func PGBucket(id chunk.ID) uint16 { return binary.BigEndian.Uint16(id[6:8]) }

// PGSortKey orders the buckets so that the chunks of one PG are contiguous under every
// power-of-two PG count up to PGBuckets: it is PGBucket with its 16 bits reversed, so a
// PG's low bits, which are the PG number, lead.
func PGSortKey(id chunk.ID) uint16 { return bits.Reverse16(PGBucket(id)) }

// PGRange returns the PGSortKey range [lo, hi) of the chunks of PG pg of pgCount (for a
// pgCount above PGBuckets, the range of its bucket, which holds other PGs too: filter with
// PGOf). hi may be PGBuckets.
func PGRange(pgCount, pg uint32) (lo, hi uint32) {
	if pgCount >= PGBuckets {
		k := uint32(bits.Reverse16(uint16(pg)))
		return k, k + 1
	}
	b := bits.TrailingZeros32(pgCount) // pgCount = 1 << b
	if b == 0 {
		return 0, PGBuckets
	}
	k := uint32(bits.Reverse16(uint16(pg))) >> (16 - b) // pg's b bits reversed
	span := uint32(1) << (16 - b)
	return k * span, (k + 1) * span
}

// ValidPGCount reports whether pgCount is a power of two ≥ 1 and pg < pgCount.
func ValidPGCount(pgCount, pg uint32) bool {
	return pgCount != 0 && pgCount&(pgCount-1) == 0 && pg < pgCount
}

// PGCompare orders shard keys in PG order: by PGSortKey, then chunk ID, then index.
func PGCompare(a, b ShardKey) int {
	if ka, kb := PGSortKey(a.ID), PGSortKey(b.ID); ka != kb {
		return cmp.Compare(ka, kb)
	}
	if c := bytes.Compare(a.ID[:], b.ID[:]); c != 0 {
		return c
	}
	return cmp.Compare(a.Index, b.Index)
}
