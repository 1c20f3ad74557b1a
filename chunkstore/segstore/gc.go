package segstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
)

// sweepBatch is how many chunk IDs one sweep request examines in the writer goroutine;
// SweepChunks splits longer lists so that puts are not held up behind a huge sweep.
const sweepBatch = 1024

// TouchShards reports for each key whether it is stored, like HasShards, and records
// Options.Now as the touch time of the chunk of every stored key; keys not stored touch
// nothing. The touches go through the writer goroutine, merged into a group commit whose
// index batch is synced, so they are durable when it returns nil and ordered with
// SweepChunks: a touch that returned before a sweep examined the chunk spares it, and one
// that starts after the sweep deleted the chunk reports its keys missing. The result has
// len(keys) entries, in order. If ctx ends while the call waits, it returns ctx's error and
// the touch may or may not happen.
func (s *Store) TouchShards(ctx context.Context, keys []chunkstore.ShardKey) ([]bool, error) {
	if err := s.enter(); err != nil {
		return nil, fmt.Errorf("segstore: touch shards: %w", err)
	}
	defer s.exit()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("segstore: touch shards: %w", err)
	}
	if len(keys) == 0 {
		return []bool{}, nil
	}
	req := &request{
		kind:  kindWrite,
		touch: slices.Clone(keys), // the writer may still read them after a ctx return
		found: make([]bool, len(keys)),
		done:  make(chan error, 1),
	}
	if err := s.submit(ctx, req); err != nil {
		return nil, fmt.Errorf("segstore: touch shards: %w", err)
	}
	return req.found, nil
}

// GCCandidates calls fn, in chunk-ID order, once per chunk ID > after (all when after is
// nil) with shards here whose last write or touch is before cutoff, with the data bytes
// of its shards here. It reads a consistent snapshot of the index taken at the start, in
// the caller's goroutine; fn may call other methods of s. An error from fn stops it and is
// returned unchanged. A zero cutoff fails with chunkstore.ErrInvalid.
//
// A chunk's time is the later of its touch entry and the store's touch floor: the time
// the index was last rebuilt from the segments (or upgraded from a version without touch
// times). A chunk with no touch entry counts as written at the floor, never earlier;
// records replayed past the index checkpoint at Open count as written at Open.
func (s *Store) GCCandidates(ctx context.Context, after *chunk.ID, cutoff time.Time, fn func(id chunk.ID, bytes int64) error) error {
	if err := s.enter(); err != nil {
		return fmt.Errorf("segstore: gc candidates: %w", err)
	}
	defer s.exit()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("segstore: gc candidates: %w", err)
	}
	if cutoff.IsZero() {
		return fmt.Errorf("segstore: gc candidates: zero cutoff: %w", chunkstore.ErrInvalid)
	}
	lower := shardLower
	if after != nil {
		_, lower = chunkShardBounds(*after) // the smallest key of any later chunk
	}
	s.indexMu.RLock()
	err := s.indexErr
	var snap *pebble.Snapshot
	floor := s.floor.Load()
	if err == nil {
		snap = s.db.NewSnapshot()
	}
	s.indexMu.RUnlock()
	if err != nil {
		return fmt.Errorf("segstore: gc candidates: %w", err)
	}
	defer snap.Close()
	iter, err := snap.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: shardUpper})
	if err != nil {
		return fmt.Errorf("segstore: gc candidates: %w", err)
	}
	defer iter.Close()

	var (
		cur     chunk.ID
		curSize int64
		have    bool
		kb      []byte
	)
	emit := func() error {
		if !have {
			return nil
		}
		kb = appendTouchKey(kb[:0], cur)
		t, err := touchTime(snap, kb, floor)
		if err != nil {
			return fmt.Errorf("segstore: gc candidates %s: %w", cur.Str(), err)
		}
		if !time.Unix(0, t).Before(cutoff) {
			return nil
		}
		return fn(cur, curSize)
	}
	n := 0
	for valid := iter.First(); valid; valid = iter.Next() {
		if n++; n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("segstore: gc candidates: %w", err)
			}
		}
		key, err := parseShardKey(iter.Key())
		if err != nil {
			return err
		}
		loc, err := parseLocation(iter.Value())
		if err != nil {
			return fmt.Errorf("segstore: gc candidates %s: %w", keyStr(key), err)
		}
		if !have || key.ID != cur {
			if err := emit(); err != nil {
				return err
			}
			cur, curSize, have = key.ID, 0, true
		}
		curSize += int64(loc.dataLen)
	}
	if err := iter.Error(); err != nil {
		return fmt.Errorf("segstore: gc candidates: %w", err)
	}
	return emit()
}

// pebbleReader is what touchTime needs: the DB or a snapshot of it.
type pebbleReader interface {
	Get(key []byte) ([]byte, io.Closer, error)
}

// touchTime returns the chunk's touch time in Unix nanoseconds: its entry at key (a touch
// key), but never earlier than floor.
func touchTime(r pebbleReader, key []byte, floor int64) (int64, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return floor, nil
	}
	if err != nil {
		return 0, err
	}
	t, err := parseNanos(v)
	closer.Close()
	if err != nil {
		return 0, err
	}
	return max(t, floor), nil
}

// SweepChunks deletes every shard of each listed chunk whose last write or touch (see
// GCCandidates for how recovery affects it) is before cutoff, and spares the others; IDs
// with no shards here, and repeats, are ignored. The check and the deletion of a chunk
// happen together in the writer goroutine, so they are atomic with respect to PutShards
// and TouchShards. The deletions are delete records fsynced like DeleteShards, and the
// swept chunks' touch entries are removed with them.
//
// Lists longer than 1024 IDs are swept in several steps; if one fails (or ctx ends
// between steps) SweepChunks returns what the earlier steps did with the error. A zero
// cutoff or a zero ID fails with chunkstore.ErrInvalid before anything is deleted.
func (s *Store) SweepChunks(ctx context.Context, ids []chunk.ID, cutoff time.Time) (chunkstore.SweepResult, error) {
	var total chunkstore.SweepResult
	if err := s.enter(); err != nil {
		return total, fmt.Errorf("segstore: sweep: %w", err)
	}
	defer s.exit()
	if err := ctx.Err(); err != nil {
		return total, fmt.Errorf("segstore: sweep: %w", err)
	}
	if cutoff.IsZero() {
		return total, fmt.Errorf("segstore: sweep: zero cutoff: %w", chunkstore.ErrInvalid)
	}
	for i, id := range ids {
		if id.IsZero() {
			return total, fmt.Errorf("segstore: sweep: ID #%d is the zero chunk ID: %w", i, chunkstore.ErrInvalid)
		}
	}
	seen := make(map[chunk.ID]struct{}, len(ids))
	uniq := make([]chunk.ID, 0, len(ids))
	for _, id := range ids {
		if _, dup := seen[id]; !dup {
			seen[id] = struct{}{}
			uniq = append(uniq, id)
		}
	}
	for len(uniq) > 0 {
		n := min(len(uniq), sweepBatch)
		req := &request{kind: kindSweep, sweepIDs: uniq[:n], cutoff: cutoff, done: make(chan error, 1)}
		if err := s.submit(ctx, req); err != nil {
			return total, fmt.Errorf("segstore: sweep: %w", err)
		}
		total.Chunks += req.swept.Chunks
		total.Shards += req.swept.Shards
		total.Bytes += req.swept.Bytes
		total.Spared += req.swept.Spared
		uniq = uniq[n:]
	}
	if total.Chunks > 0 {
		s.kickCompactor()
	}
	return total, nil
}

// sweep runs in the writer goroutine: it examines each chunk's shards and touch time and
// commits delete records for those last touched before cutoff, as one group commit. ids
// holds no repeats.
func (s *Store) sweep(ids []chunk.ID, cutoff time.Time) (chunkstore.SweepResult, error) {
	var res chunkstore.SweepResult
	if s.w.fatal != nil {
		return res, s.w.fatal
	}
	s.indexMu.RLock()
	ierr := s.indexErr
	s.indexMu.RUnlock()
	if ierr != nil {
		return res, ierr
	}
	iter, err := s.db.NewIter(&pebble.IterOptions{LowerBound: shardLower, UpperBound: shardUpper})
	if err != nil {
		return res, fmt.Errorf("segstore: sweep: %w", err)
	}
	defer iter.Close()
	req := s.newRequest(0, 0)
	buf := *req.buf
	floor := s.floor.Load()
	var kb []byte
	for _, id := range ids {
		keys, bytes, err := chunkShards(iter, id)
		if err != nil {
			s.releaseBuf(req.buf)
			return chunkstore.SweepResult{}, fmt.Errorf("segstore: sweep %s: %w", id.Str(), err)
		}
		if len(keys) == 0 {
			continue
		}
		kb = appendTouchKey(kb[:0], id)
		t, err := touchTime(s.db, kb, floor)
		if err != nil {
			s.releaseBuf(req.buf)
			return chunkstore.SweepResult{}, fmt.Errorf("segstore: sweep %s: %w", id.Str(), err)
		}
		if !time.Unix(0, t).Before(cutoff) {
			res.Spared++
			continue
		}
		for _, k := range keys {
			start := len(buf)
			buf = appendDelete(buf, k)
			req.recs = append(req.recs, recRef{typ: recDelete, key: k, start: start, end: len(buf)})
		}
		req.untouch = append(req.untouch, id)
		res.Chunks++
		res.Shards += int64(len(keys))
		res.Bytes += bytes
	}
	*req.buf = buf
	defer s.releaseBuf(req.buf)
	if len(req.recs) == 0 {
		return res, nil
	}
	if err := s.commitGroup([]*request{req}); err != nil {
		return chunkstore.SweepResult{}, err
	}
	return res, nil
}

// chunkShards returns the stored keys of id's shards and their data bytes, read with
// iter over the shard keys of the index as the writer goroutine sees it (no group is
// staged while a sweep runs).
func chunkShards(iter *pebble.Iterator, id chunk.ID) ([]chunkstore.ShardKey, int64, error) {
	lower, _ := chunkShardBounds(id)
	var keys []chunkstore.ShardKey
	var bytes int64
	for valid := iter.SeekGE(lower); valid; valid = iter.Next() {
		key, err := parseShardKey(iter.Key())
		if err != nil {
			return nil, 0, err
		}
		if key.ID != id {
			break
		}
		loc, err := parseLocation(iter.Value())
		if err != nil {
			return nil, 0, err
		}
		keys = append(keys, key)
		bytes += int64(loc.dataLen)
	}
	return keys, bytes, iter.Error()
}
