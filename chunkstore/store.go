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
	"context"
	"errors"
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
