// Package upload is the agent's chunk upload pipeline: it deduplicates chunks against the
// store in batches, seals the new ones in parallel and writes them in batched Puts.
//
// The caller computes chunk IDs (they are needed for trees before the upload finishes)
// and hands plaintext chunks to Add; Close flushes everything and reports figures:
//
//	up := upload.New(ctx, upload.Config{Store: chunks, Sealer: keys, MaxChunk: 4 << 20})
//	buf := up.Buffer(len(plain))
//	buf = append(buf, plain...)
//	if err := up.Add(ctx, keys.ChunkID(buf), buf); err != nil { ... }
//	stats, err := up.Close()
//
// Stages, each a fixed pool of goroutines joined by Close, connected by bounded channels:
//
//	Add → dedup (batched Store.Has, IDs already seen skipped) → seal workers → put
//	workers (batches of up to PutBatchBytes / PutBatchChunks, PutInFlight calls at once)
//
// The chunk buffers held inside the pipeline, plaintext and sealed alike, are bounded by
// MaxInFlight bytes: Add blocks until there is room, and a chunk's room is given back
// when the Put that stores it returns.
package upload
