// Package memstore holds chunks and shards in memory: map-backed implementations of
// chunkstore.Store (Chunks) and chunkstore.GCStore (Shards) for tests and caches.
//
// Both types are safe for concurrent use and their zero values are ready to use. They copy
// data on the way in and on the way out, so callers own every slice they pass or receive.
// Nothing is persisted: "durable" here means "held by this process". Shards keeps per-chunk
// touch times for garbage collection from an injectable clock (WithClock).
package memstore
