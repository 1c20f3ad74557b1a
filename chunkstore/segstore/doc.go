// Package segstore stores one chunk node's shards: shard bytes in append-only segment
// files, and only their index in Pebble.
//
// Layout of a store directory:
//
//	dir/seg-00000001.log …   append-only segment files (format in FORMAT.md)
//	dir/index/               Pebble: shard key → segment, offset, length, meta, CRC
//
// Writes: PutShards and DeleteShards encode their records on the caller's goroutine
// (CRC32C included) and hand them to a single writer goroutine, which merges whatever
// is pending into one group commit: one append, one fsync of the segment file, one
// Pebble batch (committed without sync, with a checkpoint "indexed through segment S
// offset O"), then it acknowledges every caller. An acknowledgement therefore means the
// bytes are on disk; the index can always be rebuilt from the segments past the
// checkpoint, and Open does that replay.
//
// Reads: GetShard looks the key up in the index, preads the record and checks its
// CRC32C, returning chunkstore.ErrCorrupt (naming shard, segment and offset) on a
// mismatch. HasShards and EnumerateShards read the index only; HasShards seeks its keys
// in index order through one iterator. An in-memory Bloom filter of the indexed shard
// keys (filled at Open, kept by the writer) answers lookups of absent keys without
// Pebble: a new backup asks about every shard twice (dedup check, then first-write-wins)
// before it is stored.
//
// Records are bound to their place: each header names its segment and offset and
// carries a tag, a MAC keyed with the store's random salt (dir/salt), which the writer
// goroutine fills in when it appends the record. Bytes inside shard data, which agents
// choose, can never pass for a record.
//
// Recovery: Open replays records after the checkpoint, going from record to record by
// verified lengths and never scanning forward. A torn record at the tail of the last
// segment (a crash mid-write, never acknowledged) is truncated and logged. Other damage
// is reported as chunkstore.ErrCorrupt (Damage, Stats.Corrupt) and left to repair:
// recovery skips a record whose header verifies but whose data does not, and otherwise
// stops reading that segment. When dir/index is missing or empty the whole index is
// rebuilt from the segments (RebuildIndex does the same on demand).
//
// Garbage collection: Store implements chunkstore.GCStore. Per chunk it keeps the last
// time (Options.Now) a shard of it was written or touched, in the index; TouchShards and
// SweepChunks go through the writer goroutine, which orders them with puts. Touch times
// are not in the segments, so a replay or rebuild stamps chunks with the open or rebuild
// time, never an older one (FORMAT.md, "Touch times").
//
// Space: deleted shards leave garbage in their segments; each segment's live bytes are
// tracked (see Store.Segments). Compaction (Store.Compact, also run by a background
// goroutine after deletes and sweeps) copies the live records of segments below
// Options.CompactThreshold to the current segment and removes the old files, without
// stopping writes or readers and without losing anything in a crash (FORMAT.md).
//
// Example:
//
//	st, err := segstore.Open("/var/lib/coffer/chunks", segstore.Options{
//		SegmentSize: 256 << 20, // roll to a new segment file past this size
//		Logger:      logger,
//	})
//	if err != nil {
//		return err
//	}
//	defer st.Close()
package segstore
