package memstore

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
)

var _ chunkstore.GCStore = (*Shards)(nil)

// Shards is a map-backed chunkstore.GCStore. The zero value is an empty store whose clock
// is time.Now. It is safe for concurrent use; data is copied in and out.
//
// Touch times: every PutShards (including a put of a key already stored) and every
// TouchShards of a stored key records the clock's now as the last touch of that key's
// chunk. One mutex serialises every method, so SweepChunks is trivially atomic with
// respect to writes and touches.
//
// Validation (all failures wrap chunkstore.ErrInvalid and leave the batch unstored): the
// chunk ID is not zero, data is 1..chunkstore.MaxChunkSize bytes, Meta.K >= 1,
// Key.Index < K+M, and Meta.Writer is at most 65535 bytes.
type Shards struct {
	now func() time.Time // nil means time.Now

	mu struct {
		sync.RWMutex
		m      map[chunkstore.ShardKey]storedShard
		bytes  int64
		chunks map[chunk.ID]chunkState // one entry per chunk with shards here
		// PG change marks (PGVersions): per PG bucket, the value of seq at its last
		// put or delete; incarnation is drawn when the store is first used.
		pgSeq       map[uint16]uint64
		seq         uint64
		incarnation uint64
	}
}

// chunkState is what the store knows about one chunk with shards here.
type chunkState struct {
	touched time.Time // last write or touch of any of its shards
	shards  int       // shards of it stored here
	bytes   int64     // their data bytes
}

type storedShard struct {
	meta chunkstore.ShardMeta
	data []byte // owned by the store, never handed out
}

// ShardsOption configures NewShards.
type ShardsOption func(*Shards)

// WithClock makes the store read touch times from now instead of time.Now.
func WithClock(now func() time.Time) ShardsOption {
	return func(s *Shards) { s.now = now }
}

// NewShards returns an empty shard store.
func NewShards(opts ...ShardsOption) *Shards {
	s := new(Shards)
	for _, o := range opts {
		o(s)
	}
	return s
}

func (s *Shards) clock() time.Time {
	if s.now == nil {
		return time.Now()
	}
	return s.now()
}

// initLocked makes the maps of the zero value usable; s.mu is held for writing.
func (s *Shards) initLocked() {
	if s.mu.m == nil {
		s.mu.m = make(map[chunkstore.ShardKey]storedShard)
	}
	if s.mu.chunks == nil {
		s.mu.chunks = make(map[chunk.ID]chunkState)
	}
	if s.mu.pgSeq == nil {
		s.mu.pgSeq = make(map[uint16]uint64)
		var b [8]byte
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (it panics instead)
		s.mu.incarnation = binary.BigEndian.Uint64(b[:])
	}
}

// changedLocked bumps the PG change mark of id's bucket; s.mu is held for writing.
func (s *Shards) changedLocked(id chunk.ID) {
	s.mu.seq++
	s.mu.pgSeq[chunkstore.PGBucket(id)] = s.mu.seq
}

// PutShards stores copies of the shards. A key already stored (or earlier in the same
// batch) keeps its first value, but the put still counts as a touch of its chunk. A shard
// that fails validation fails the whole batch with chunkstore.ErrInvalid before anything
// is stored.
func (s *Shards) PutShards(ctx context.Context, shards []chunkstore.Shard) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memstore: put shards: %w", err)
	}
	for i := range shards {
		if err := shards[i].Validate(); err != nil {
			return fmt.Errorf("memstore: put shards: %w", err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	now := s.clock()
	for i := range shards {
		sh := &shards[i]
		cs := s.mu.chunks[sh.Key.ID]
		cs.touched = now
		if _, ok := s.mu.m[sh.Key]; !ok {
			s.mu.m[sh.Key] = storedShard{meta: sh.Meta, data: slices.Clone(sh.Data)}
			s.changedLocked(sh.Key.ID)
			s.mu.bytes += int64(len(sh.Data))
			cs.shards++
			cs.bytes += int64(len(sh.Data))
		}
		s.mu.chunks[sh.Key.ID] = cs
	}
	return nil
}

// GetShard returns a copy of the shard, or an error wrapping chunkstore.ErrNotFound.
func (s *Shards) GetShard(ctx context.Context, key chunkstore.ShardKey) (chunkstore.Shard, error) {
	if err := ctx.Err(); err != nil {
		return chunkstore.Shard{}, fmt.Errorf("memstore: get %s/%d: %w", key.ID.Str(), key.Index, err)
	}
	s.mu.RLock()
	st, ok := s.mu.m[key]
	s.mu.RUnlock()
	if !ok {
		return chunkstore.Shard{}, fmt.Errorf("memstore: get %s/%d: %w", key.ID.Str(), key.Index, chunkstore.ErrNotFound)
	}
	return chunkstore.Shard{Key: key, Meta: st.meta, Data: slices.Clone(st.data)}, nil
}

// HasShards reports for each key whether it is stored; the result has len(keys) entries.
func (s *Shards) HasShards(ctx context.Context, keys []chunkstore.ShardKey) ([]bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memstore: has shards: %w", err)
	}
	out := make([]bool, len(keys))
	s.mu.RLock()
	defer s.mu.RUnlock()
	for i, k := range keys {
		_, out[i] = s.mu.m[k]
	}
	return out, nil
}

// DeleteShards removes the keys; missing keys are ignored.
func (s *Shards) DeleteShards(ctx context.Context, keys []chunkstore.ShardKey) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memstore: delete shards: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	for _, k := range keys {
		s.deleteLocked(k)
	}
	return nil
}

// deleteLocked removes key if stored, and its chunk's entry with its last shard. It
// returns the data bytes removed (0 if key was not stored). s.mu is held for writing.
func (s *Shards) deleteLocked(k chunkstore.ShardKey) int64 {
	st, ok := s.mu.m[k]
	if !ok {
		return 0
	}
	n := int64(len(st.data))
	s.mu.bytes -= n
	delete(s.mu.m, k)
	s.changedLocked(k.ID)
	cs := s.mu.chunks[k.ID]
	cs.shards--
	cs.bytes -= n
	if cs.shards <= 0 {
		delete(s.mu.chunks, k.ID)
	} else {
		s.mu.chunks[k.ID] = cs
	}
	return n
}

// EnumerateShards calls fn for every shard with key > after (all shards when after is
// nil), ordered by chunk ID then index, in the caller's goroutine. It works on a copy of
// the key set taken at the start, so fn may call other methods of s. An error from fn
// stops the enumeration and is returned unchanged.
func (s *Shards) EnumerateShards(ctx context.Context, after *chunkstore.ShardKey, fn func(chunkstore.ShardInfo) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memstore: enumerate shards: %w", err)
	}
	s.mu.RLock()
	infos := make([]chunkstore.ShardInfo, 0, len(s.mu.m))
	for k, st := range s.mu.m {
		if after != nil && !after.Less(k) {
			continue
		}
		infos = append(infos, chunkstore.ShardInfo{Key: k, Meta: st.meta, Len: uint32(len(st.data))})
	}
	s.mu.RUnlock()
	slices.SortFunc(infos, func(a, b chunkstore.ShardInfo) int {
		switch {
		case a.Key.Less(b.Key):
			return -1
		case b.Key.Less(a.Key):
			return 1
		}
		return 0
	})
	for _, info := range infos {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("memstore: enumerate shards: %w", err)
		}
		if err := fn(info); err != nil {
			return err
		}
	}
	return nil
}

var _ chunkstore.PGLister = (*Shards)(nil)

// EnumeratePG calls fn for every shard of PG pg of pgCount with key after after in PG
// order (chunkstore.PGCompare; all when after is nil), in that order, in the caller's
// goroutine, from a copy taken at the start. It filters the whole map: the in-memory
// store lists a PG at the cost of every shard.
func (s *Shards) EnumeratePG(ctx context.Context, pgCount, pg uint32, after *chunkstore.ShardKey, fn func(chunkstore.ShardInfo) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memstore: enumerate pg: %w", err)
	}
	if !chunkstore.ValidPGCount(pgCount, pg) {
		return fmt.Errorf("memstore: enumerate pg %d of %d: %w", pg, pgCount, chunkstore.ErrInvalid)
	}
	s.mu.RLock()
	var infos []chunkstore.ShardInfo
	for k, st := range s.mu.m {
		if chunkstore.PGOf(k.ID, pgCount) != pg || (after != nil && chunkstore.PGCompare(*after, k) >= 0) {
			continue
		}
		infos = append(infos, chunkstore.ShardInfo{Key: k, Meta: st.meta, Len: uint32(len(st.data))})
	}
	s.mu.RUnlock()
	slices.SortFunc(infos, func(a, b chunkstore.ShardInfo) int { return chunkstore.PGCompare(a.Key, b.Key) })
	for _, info := range infos {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("memstore: enumerate pg: %w", err)
		}
		if err := fn(info); err != nil {
			return err
		}
	}
	return nil
}

// PGVersions returns the store's PG change marks (chunkstore.PGLister): every put of a
// new key and every delete of a stored one changes the mark of its PG.
func (s *Shards) PGVersions(ctx context.Context, pgCount uint32) (chunkstore.PGVersions, error) {
	if err := ctx.Err(); err != nil {
		return chunkstore.PGVersions{}, fmt.Errorf("memstore: pg versions: %w", err)
	}
	if !chunkstore.ValidPGCount(pgCount, 0) {
		return chunkstore.PGVersions{}, fmt.Errorf("memstore: pg versions: pg count %d: %w", pgCount, chunkstore.ErrInvalid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	v := chunkstore.PGVersions{Incarnation: s.mu.incarnation, Seqs: make([]uint64, min(pgCount, chunkstore.PGBuckets))}
	mask := len(v.Seqs) - 1
	for b, q := range s.mu.pgSeq {
		if q > v.Seqs[int(b)&mask] {
			v.Seqs[int(b)&mask] = q
		}
	}
	return v, nil
}

// Stats reports the live shard count and bytes. Segments and Capacity are 0.
func (s *Shards) Stats(ctx context.Context) (chunkstore.ShardStats, error) {
	if err := ctx.Err(); err != nil {
		return chunkstore.ShardStats{}, fmt.Errorf("memstore: stats: %w", err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return chunkstore.ShardStats{Shards: int64(len(s.mu.m)), Bytes: s.mu.bytes}, nil
}

// TouchShards reports for each key whether it is stored, like HasShards, and records the
// clock's now as the touch time of the chunk of every stored key. Keys not stored touch
// nothing.
func (s *Shards) TouchShards(ctx context.Context, keys []chunkstore.ShardKey) ([]bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memstore: touch shards: %w", err)
	}
	out := make([]bool, len(keys))
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock()
	for i, k := range keys {
		if _, out[i] = s.mu.m[k]; out[i] {
			cs := s.mu.chunks[k.ID]
			cs.touched = now
			s.mu.chunks[k.ID] = cs
		}
	}
	return out, nil
}

// GCCandidates calls fn, in chunk-ID order, for every chunk ID > after (all when after is
// nil) with shards here whose last write or touch is before cutoff, with the data bytes
// of its shards here. It works on a copy taken at the start, so fn may call other methods
// of s. An error from fn stops it and is returned unchanged. A zero cutoff fails with
// chunkstore.ErrInvalid.
func (s *Shards) GCCandidates(ctx context.Context, after *chunk.ID, cutoff time.Time, fn func(id chunk.ID, bytes int64) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memstore: gc candidates: %w", err)
	}
	if cutoff.IsZero() {
		return fmt.Errorf("memstore: gc candidates: zero cutoff: %w", chunkstore.ErrInvalid)
	}
	type cand struct {
		id    chunk.ID
		bytes int64
	}
	s.mu.RLock()
	var cands []cand
	for id, cs := range s.mu.chunks {
		if (after == nil || after.Less(id)) && cs.touched.Before(cutoff) {
			cands = append(cands, cand{id, cs.bytes})
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(cands, func(a, b cand) int {
		switch {
		case a.id.Less(b.id):
			return -1
		case b.id.Less(a.id):
			return 1
		}
		return 0
	})
	for _, c := range cands {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("memstore: gc candidates: %w", err)
		}
		if err := fn(c.id, c.bytes); err != nil {
			return err
		}
	}
	return nil
}

// SweepChunks deletes every shard of each listed chunk whose last write or touch is
// before cutoff and spares the others; IDs with no shards here are ignored. It holds the
// store's lock throughout, so it is atomic with respect to PutShards and TouchShards. A
// zero cutoff or a zero ID fails with chunkstore.ErrInvalid and deletes nothing.
func (s *Shards) SweepChunks(ctx context.Context, ids []chunk.ID, cutoff time.Time) (chunkstore.SweepResult, error) {
	var res chunkstore.SweepResult
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("memstore: sweep: %w", err)
	}
	if cutoff.IsZero() {
		return res, fmt.Errorf("memstore: sweep: zero cutoff: %w", chunkstore.ErrInvalid)
	}
	for _, id := range ids {
		if id.IsZero() {
			return res, fmt.Errorf("memstore: sweep: zero chunk ID: %w", chunkstore.ErrInvalid)
		}
	}
	seen := make(map[chunk.ID]bool, len(ids))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	for _, id := range ids {
		cs, ok := s.mu.chunks[id]
		if !ok || seen[id] {
			continue // unknown here, or listed twice
		}
		seen[id] = true
		if !cs.touched.Before(cutoff) {
			res.Spared++
			continue
		}
		res.Chunks++
		for idx := range 256 {
			k := chunkstore.ShardKey{ID: id, Index: uint8(idx)}
			if _, stored := s.mu.m[k]; stored {
				res.Bytes += s.deleteLocked(k)
				res.Shards++
			}
		}
	}
	return res, nil
}
