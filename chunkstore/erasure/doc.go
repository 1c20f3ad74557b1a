// Package erasure splits chunks into Reed-Solomon stripes and rebuilds them, and reduces
// per-shard results to one quorum error.
//
// A stripe of profile k+m is k data shards and m parity shards of equal length
// ceil(len(chunk)/k); the last data shard is zero-padded, so decoding needs the chunk
// length (stored in every shard's chunkstore.ShardMeta). Any k of the k+m shards rebuild
// the chunk. Coding uses github.com/klauspost/reedsolomon (the classic GF(2^8) codec,
// k+m ≤ 256); the parity bytes are part of the repository format (see FORMAT.md).
package erasure
