package chunkrpc

import (
	"fmt"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/wire"
)

// Method names.
const (
	MethodShardPut       = "shard.Put"
	MethodShardGet       = "shard.Get"
	MethodShardGetMany   = "shard.GetMany"
	MethodShardHas       = "shard.Has"
	MethodShardTouch     = "shard.Touch"
	MethodShardDelete    = "shard.Delete"
	MethodShardEnumerate = "shard.Enumerate"
	MethodShardVersions  = "shard.Versions"
	MethodShardStats     = "shard.Stats"
	MethodChunkPut       = "chunk.Put"
	MethodChunkGet       = "chunk.Get"
	MethodChunkGetMany   = "chunk.GetMany"
	MethodChunkHas       = "chunk.Has"
)

// Limits of one call.
const (
	// MaxCallData bounds the chunk or shard bytes the clients send in one Put call; bigger
	// batches are split. One item may still be up to chunkstore.MaxChunkSize.
	MaxCallData = 16 << 20
	// MaxCallItems bounds the items (chunks, shards, IDs, keys) in one call.
	MaxCallItems = 1 << 16
	// MaxEnumerateLimit bounds one page of shard.Enumerate; DefaultEnumerateLimit is used
	// when the request's limit is zero.
	MaxEnumerateLimit = 4096
	// MaxGetManyItems bounds the chunk IDs of one chunk.GetMany call.
	MaxGetManyItems       = 4096
	DefaultEnumerateLimit = 1024
)

// Sentinels maps chunkstore sentinels to wire codes. ErrClosed travels as Unavailable (a
// closed store is, to a remote caller, an unavailable one) and comes back as
// ErrUnavailable. ErrNoSpace (a full disk) comes after ErrUnavailable, so a coordinator's
// quorum failure that quotes a full node still travels as Unavailable. Immutable: a fixed
// table, never modified.
var Sentinels = transport.SentinelTable{
	{Err: chunkstore.ErrNotFound, Code: transport.NotFound},
	{Err: chunkstore.ErrCorrupt, Code: transport.Corrupt},
	{Err: chunkstore.ErrUnavailable, Code: transport.Unavailable},
	{Err: chunkstore.ErrInvalid, Code: transport.Invalid},
	{Err: chunkstore.ErrClosed, Code: transport.Unavailable},
	{Err: chunkstore.ErrNoSpace, Code: transport.NoSpace},
}

// Wire messages. Field keys are small integers (see FORMAT.md); never reuse a key.

type wKey struct {
	ID    chunk.ID `cbor:"1,keyasint"`
	Index uint8    `cbor:"2,keyasint"`
}

type wMeta struct {
	K        uint8  `cbor:"1,keyasint"`
	M        uint8  `cbor:"2,keyasint"`
	ChunkLen uint32 `cbor:"3,keyasint"`
	ChunkCRC uint32 `cbor:"4,keyasint"`
	Writer   string `cbor:"5,keyasint,omitempty"`
}

type wShard struct {
	Key  wKey       `cbor:"1,keyasint"`
	Meta wMeta      `cbor:"2,keyasint"`
	Data wire.Bytes `cbor:"3,keyasint"` // aliases the decoded frame body
}

type wInfo struct {
	Key  wKey   `cbor:"1,keyasint"`
	Meta wMeta  `cbor:"2,keyasint"`
	Len  uint32 `cbor:"3,keyasint"`
}

type wChunk struct {
	ID   chunk.ID   `cbor:"1,keyasint"`
	Data wire.Bytes `cbor:"2,keyasint"` // aliases the decoded frame body
}

type shardPutReq struct {
	Shards []wShard `cbor:"1,keyasint"`
}

type shardGetReq struct {
	Key wKey `cbor:"1,keyasint"`
}

type shardKeysReq struct {
	Keys []wKey `cbor:"1,keyasint"`
}

type hasResp struct {
	Has []bool `cbor:"1,keyasint"`
}

type enumerateReq struct {
	After *wKey `cbor:"1,keyasint,omitempty"`
	Limit int   `cbor:"2,keyasint,omitempty"`
	// PGCount, when not 0, lists PG PG of PGCount only, in PG order
	// (chunkstore.PGCompare; After is a position in that order).
	PGCount uint32 `cbor:"3,keyasint,omitempty"`
	PG      uint32 `cbor:"4,keyasint,omitempty"`
}

type versionsReq struct {
	PGCount uint32 `cbor:"1,keyasint"`
}

type versionsResp struct {
	Incarnation uint64   `cbor:"1,keyasint"`
	Seqs        []uint64 `cbor:"2,keyasint"`
}

type enumerateResp struct {
	Infos []wInfo `cbor:"1,keyasint"`
	More  bool    `cbor:"2,keyasint,omitempty"`
}

type statsResp struct {
	Shards   int64 `cbor:"1,keyasint"`
	Bytes    int64 `cbor:"2,keyasint"`
	Segments int   `cbor:"3,keyasint"`
	Capacity int64 `cbor:"4,keyasint"`
	Corrupt  int64 `cbor:"5,keyasint,omitempty"`
}

type chunkPutReq struct {
	Chunks []wChunk `cbor:"1,keyasint"`
}

type chunkGetReq struct {
	ID    chunk.ID `cbor:"1,keyasint"`
	Grant []byte   `cbor:"2,keyasint,omitempty"` // restore grant (restore operators)
}

type chunkGetResp struct {
	Data wire.Bytes `cbor:"1,keyasint"` // aliases the decoded frame body
}

// wShardResult is one answer of shard.GetMany: the shard, or an error code and message.
type wShardResult struct {
	Shard *wShard        `cbor:"1,keyasint,omitempty"`
	Code  transport.Code `cbor:"2,keyasint,omitempty"`
	Msg   string         `cbor:"3,keyasint,omitempty"`
}

type shardGetManyResp struct {
	Results []wShardResult `cbor:"1,keyasint"`
}

type chunkGetManyReq struct {
	IDs   getManyIDs `cbor:"1,keyasint"`
	Grant []byte     `cbor:"2,keyasint,omitempty"` // restore grant (restore operators)
}

// getManyIDs are the IDs of a chunk.GetMany request. Decoding reads the array's length
// first and refuses more than MaxGetManyItems IDs (a *tooManyIDsError) before decoding
// any of them.
type getManyIDs []chunk.ID

// tooManyIDsError is a chunk.GetMany array of n IDs, over MaxGetManyItems.
type tooManyIDsError struct{ n uint64 }

func (e *tooManyIDsError) Error() string {
	return fmt.Sprintf("chunkrpc: %d ids exceed the limit of %d per call", e.n, MaxGetManyItems)
}

// UnmarshalCBOR implements cbor.Unmarshaler.
func (ids *getManyIDs) UnmarshalCBOR(data []byte) error {
	if n, ok := cborArrayLen(data); ok && n > MaxGetManyItems {
		return &tooManyIDsError{n: n}
	}
	return wire.Unmarshal(data, (*[]chunk.ID)(ids))
}

// cborArrayLen returns the element count in the head of the CBOR data item data, when
// that item is a definite-length array (major type 4, RFC 8949 §3).
func cborArrayLen(data []byte) (uint64, bool) {
	n, _, ok := wire.Head(data, 4)
	return n, ok
}

// wChunkResult is one answer of chunk.GetMany: the data, or an error code and message.
type wChunkResult struct {
	Data wire.Bytes     `cbor:"1,keyasint,omitempty"` // aliases the decoded frame body
	Code transport.Code `cbor:"2,keyasint,omitempty"`
	Msg  string         `cbor:"3,keyasint,omitempty"`
}

type chunkGetManyResp struct {
	Results []wChunkResult `cbor:"1,keyasint"`
}

type chunkHasReq struct {
	IDs []chunk.ID `cbor:"1,keyasint"`
}

type empty struct{}

func toWKey(k chunkstore.ShardKey) wKey   { return wKey{ID: k.ID, Index: k.Index} }
func fromWKey(k wKey) chunkstore.ShardKey { return chunkstore.ShardKey{ID: k.ID, Index: k.Index} }

func toWMeta(m chunkstore.ShardMeta) wMeta {
	return wMeta{K: m.K, M: m.M, ChunkLen: m.ChunkLen, ChunkCRC: m.ChunkCRC, Writer: m.Writer}
}

func fromWMeta(m wMeta) chunkstore.ShardMeta {
	return chunkstore.ShardMeta{K: m.K, M: m.M, ChunkLen: m.ChunkLen, ChunkCRC: m.ChunkCRC, Writer: m.Writer}
}

func toWShard(s chunkstore.Shard) wShard {
	return wShard{Key: toWKey(s.Key), Meta: toWMeta(s.Meta), Data: s.Data}
}

func fromWShard(s wShard) chunkstore.Shard {
	return chunkstore.Shard{Key: fromWKey(s.Key), Meta: fromWMeta(s.Meta), Data: s.Data}
}
