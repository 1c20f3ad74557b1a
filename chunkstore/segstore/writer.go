package segstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
)

// maxGroupBytes bounds how many encoded bytes one group commit gathers.
const maxGroupBytes = 64 << 20

// maxPooledBuf is the largest encode buffer kept in the pool.
const maxPooledBuf = 32 << 20

type reqKind uint8

const (
	kindWrite   reqKind = iota // append records and/or touch keys, update the index
	kindRebuild                // rebuild the index from the segments
	kindSweep                  // check-and-delete chunks not touched since a cutoff
	kindCompact                // one step of compacting a segment
)

// request is one caller's batch handed to the writer goroutine. The writer sends exactly
// once on done (buffered) and returns buf to the pool; the caller must not touch buf
// after sending the request, and may read found and swept only after receiving from done.
type request struct {
	kind reqKind
	ctx  context.Context // kindRebuild only
	buf  *[]byte         // encoded records, back to back (nil: none)
	recs []recRef
	done chan error

	touch   []chunkstore.ShardKey // kindWrite: keys to touch (owned by the request)
	found   []bool                // kindWrite: per touch key, whether it is stored
	untouch []chunk.ID            // kindWrite from a sweep: touch entries to remove

	sweepIDs []chunk.ID             // kindSweep: chunks to examine
	cutoff   time.Time              // kindSweep
	swept    chunkstore.SweepResult // kindSweep: what it did

	compact *compactStep // kindCompact: input and result
}

// bufLen is the number of encoded record bytes the request carries.
func (r *request) bufLen() int {
	if r.buf == nil {
		return 0
	}
	return len(*r.buf)
}

// recRef describes one encoded record in request.buf.
type recRef struct {
	typ        byte
	key        chunkstore.ShardKey
	start, end int // byte range in *request.buf
	meta       chunkstore.ShardMeta
	dataLen    int
	dataCRC    uint32
}

// writerState belongs to the writer goroutine.
type writerState struct {
	cur   *segment // segment being appended to
	off   int64    // end of cur's records
	fatal error    // set when a failed group could not be undone; fails all later writes
	ap    applier
	group []*request
	bind  *binder // binds appended records to their place; set by Open
	// sealed is set by recovery when it stopped at damage in the last segment: the
	// writer must move to a new segment before appending (Store.leaveDamagedSegment).
	sealed bool
}

// PutShards appends the shards to the current segment and indexes them. Calls from many
// goroutines are merged into one group commit: one append, one fsync, one index batch.
// When it returns nil every shard is durable. A key already stored (or earlier in the
// same group) keeps its first value and counts as success; either way the put records
// Options.Now as the touch time of the shard's chunk (see GCCandidates). Invalid shards (zero ID, empty
// or oversize data, K == 0, index >= K+M, writer over 65535 bytes) fail the whole batch
// with chunkstore.ErrInvalid before anything is written. A write or fsync failure fails
// every call in the group and indexes none of it; a later call may retry. If ctx ends
// while the call waits, it returns ctx's error and the write may or may not happen. The
// store copies the shards before returning.
func (s *Store) PutShards(ctx context.Context, shards []chunkstore.Shard) error {
	if err := s.enter(); err != nil {
		return fmt.Errorf("segstore: put shards: %w", err)
	}
	defer s.exit()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("segstore: put shards: %w", err)
	}
	size := 0
	for i := range shards {
		if err := shards[i].Validate(); err != nil {
			return fmt.Errorf("segstore: put shards: %w", err)
		}
		size += int(recordLen(len(shards[i].Meta.Writer), len(shards[i].Data)))
	}
	if len(shards) == 0 {
		return nil
	}
	req := s.newRequest(size, len(shards))
	buf := *req.buf
	for i := range shards {
		sh := &shards[i]
		crc := crcOf(sh.Data)
		start := len(buf)
		buf = appendPut(buf, sh, crc)
		req.recs = append(req.recs, recRef{
			typ: recPut, key: sh.Key, start: start, end: len(buf),
			meta: sh.Meta, dataLen: len(sh.Data), dataCRC: crc,
		})
	}
	*req.buf = buf
	if err := s.submit(ctx, req); err != nil {
		return fmt.Errorf("segstore: put shards: %w", noSpace(err))
	}
	return nil
}

// DeleteShards appends a delete record for each stored key (fsynced like puts) and
// removes the keys from the index. Missing keys are not an error. The space is reclaimed
// by compaction (see Compact), which the store starts in the background afterwards
// unless Options.DisableAutoCompact.
func (s *Store) DeleteShards(ctx context.Context, keys []chunkstore.ShardKey) error {
	if err := s.enter(); err != nil {
		return fmt.Errorf("segstore: delete shards: %w", err)
	}
	defer s.exit()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("segstore: delete shards: %w", err)
	}
	if len(keys) == 0 {
		return nil
	}
	req := s.newRequest(len(keys)*int(recordLen(0, 0)), len(keys))
	buf := *req.buf
	for _, k := range keys {
		start := len(buf)
		buf = appendDelete(buf, k)
		req.recs = append(req.recs, recRef{typ: recDelete, key: k, start: start, end: len(buf)})
	}
	*req.buf = buf
	if err := s.submit(ctx, req); err != nil {
		return fmt.Errorf("segstore: delete shards: %w", noSpace(err))
	}
	s.kickCompactor()
	return nil
}

// noSpace marks a write that failed for a full disk (ENOSPC) with chunkstore.ErrNoSpace,
// so callers and the wire tell it apart from other failures.
func noSpace(err error) error {
	if errors.Is(err, syscall.ENOSPC) && !errors.Is(err, chunkstore.ErrNoSpace) {
		return fmt.Errorf("%w: %w", chunkstore.ErrNoSpace, err)
	}
	return err
}

func (s *Store) newRequest(size, n int) *request {
	p, _ := s.encPool.Get().(*[]byte)
	if p == nil {
		p = new([]byte)
	}
	if cap(*p) < size {
		*p = make([]byte, 0, size)
	}
	*p = (*p)[:0]
	return &request{kind: kindWrite, buf: p, recs: make([]recRef, 0, n), done: make(chan error, 1)}
}

func (s *Store) releaseBuf(p *[]byte) {
	if p != nil && cap(*p) <= maxPooledBuf {
		s.encPool.Put(p)
	}
}

// submit hands req to the writer and waits for its acknowledgement or for ctx.
func (s *Store) submit(ctx context.Context, req *request) error {
	select {
	case s.reqs <- req:
	case <-ctx.Done():
		s.releaseBuf(req.buf)
		return ctx.Err()
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return ctx.Err() // the writer still owns req and finishes it
	}
}

// run is the writer goroutine: it gathers pending requests into groups and commits
// them, until Close closes s.reqs.
func (s *Store) run() {
	defer close(s.writerDone)
	var held *request
	for {
		req := held
		held = nil
		if req == nil {
			var ok bool
			if req, ok = <-s.reqs; !ok {
				return
			}
		}
		switch req.kind {
		case kindRebuild:
			req.done <- s.rebuildLive(req.ctx)
			continue
		case kindSweep:
			res, err := s.sweep(req.sweepIDs, req.cutoff)
			req.swept = res
			req.done <- err
			continue
		case kindCompact:
			req.done <- s.compactRun(req.compact)
			continue
		}
		group := append(s.w.group[:0], req)
		size := req.bufLen()
	gather:
		for size < maxGroupBytes {
			select {
			case r, ok := <-s.reqs:
				if !ok {
					break gather
				}
				if r.kind != kindWrite {
					held = r
					break gather
				}
				group = append(group, r)
				size += r.bufLen()
			default:
				break gather
			}
		}
		err := s.commitGroup(group)
		for i, r := range group {
			s.releaseBuf(r.buf)
			r.done <- err
			group[i] = nil
		}
		s.w.group = group[:0]
	}
}

// rebuildLive rebuilds the index on behalf of RebuildIndex, from the writer goroutine.
func (s *Store) rebuildLive(ctx context.Context) error {
	err := s.rebuild(ctx)
	s.w.off = s.w.cur.size.Load()
	if lerr := s.leaveDamagedSegment(); err == nil {
		err = lerr
	}
	if err != nil {
		return fmt.Errorf("segstore: rebuild index: %w", err)
	}
	return nil
}

// commitGroup appends the group's records, fsyncs, commits the index batch and returns
// the result for every request in the group.
func (s *Store) commitGroup(group []*request) error {
	if s.w.fatal != nil {
		return s.w.fatal
	}
	s.indexMu.RLock()
	ierr := s.indexErr
	s.indexMu.RUnlock()
	if ierr != nil {
		return ierr
	}
	var total int64
	for _, r := range group {
		total += int64(r.bufLen())
	}
	if err := s.reserve(total); err != nil {
		return err
	}
	seg, start := s.w.cur, s.w.off
	ap := &s.w.ap
	ap.begin(s.opts.Now())
	err := s.appendGroup(ap, group, seg)
	if err == nil && s.w.off > start && !s.opts.NoSync {
		if err = seg.f.Sync(); err != nil {
			err = fmt.Errorf("segstore: fsync segment %d: %w", seg.num, err)
		}
	}
	if err != nil {
		ap.discard()
		s.rollback(seg, start)
		return err
	}
	if s.w.off == start && !ap.touches() { // nothing at all to record
		ap.discard()
		return nil
	}
	seg.size.Store(s.w.off)
	if err := ap.commit(checkpoint{seg: seg.num, off: s.w.off}); err != nil {
		// NB: the records are durable but not indexed; reopening replays them. The
		// in-memory view can no longer be trusted, so stop writing.
		s.w.fatal = fmt.Errorf("segstore: index commit failed, reopen the store: %w", err)
		s.log.Error("segstore: index commit failed", "err", err)
		return s.w.fatal
	}
	return nil
}

// reserve starts a new segment when appending total bytes would take the current one past
// Options.SegmentSize (unless it holds no records yet).
func (s *Store) reserve(total int64) error {
	if s.w.off > fileHeaderSize && s.w.off+total > s.opts.SegmentSize {
		seg, err := s.createSegment(s.w.cur.num + 1)
		if err != nil {
			return err
		}
		s.w.cur, s.w.off = seg, fileHeaderSize
		s.curSeg.Store(seg.num)
	}
	return nil
}

// appendGroup decides which records of the group to keep (first write wins; deletes of
// missing keys are dropped), stages their index updates in ap and writes them to seg at
// s.w.off, advancing it. Consecutive kept records are written with one call.
func (s *Store) appendGroup(ap *applier, group []*request, seg *segment) error {
	for _, r := range group {
		if err := ap.touchAll(r.touch, r.found); err != nil {
			return err
		}
		for _, id := range r.untouch {
			ap.untouch(id)
		}
		if r.buf == nil {
			continue
		}
		buf := *r.buf
		runStart, runEnd := 0, 0
		flush := func() error {
			if runEnd == runStart {
				return nil
			}
			if _, err := seg.f.WriteAt(buf[runStart:runEnd], s.w.off); err != nil {
				return fmt.Errorf("segstore: append to segment %d: %w", seg.num, err)
			}
			s.w.off += int64(runEnd - runStart)
			runStart, runEnd = 0, 0
			return nil
		}
		for i := range r.recs {
			rec := &r.recs[i]
			at := s.w.off + int64(runEnd-runStart) // where rec lands if kept
			var kept bool
			var err error
			switch rec.typ {
			case recPut:
				kept, err = ap.put(rec.key, &indexValue{
					loc: location{
						seg: seg.num, off: at,
						dataLen: rec.dataLen, writerLen: len(rec.meta.Writer),
					},
					meta:    rec.meta,
					dataCRC: rec.dataCRC,
				})
			case recDelete:
				kept, err = ap.del(rec.key)
			}
			if err != nil {
				return err
			}
			if !kept {
				continue
			}
			s.w.bind.bind(buf[rec.start:rec.end], seg.num, at)
			if runEnd != runStart && runEnd != rec.start {
				if err := flush(); err != nil {
					return err
				}
			}
			if runEnd == runStart {
				runStart = rec.start
			}
			runEnd = rec.end
		}
		if err := flush(); err != nil {
			return err
		}
	}
	return nil
}

// rollback undoes a failed group's appends so that unacknowledged records never reach
// the index, even after a restart.
func (s *Store) rollback(seg *segment, start int64) {
	s.w.off = start
	if err := seg.f.Truncate(start); err != nil {
		s.w.fatal = fmt.Errorf("segstore: cannot undo a failed append to segment %d, reopen the store: %w", seg.num, err)
		s.log.Error("segstore: rollback failed", "segment", seg.num, "offset", start, "err", err)
		return
	}
	// NB: if this fsync fails too, a crash could bring back complete but unacknowledged
	// records, which replay would index. That shows a write the caller saw fail, which
	// is harmless (a retry writes the same shard); it never loses acknowledged data.
	if !s.opts.NoSync {
		if err := seg.f.Sync(); err != nil {
			s.log.Warn("segstore: fsync after rollback failed", "segment", seg.num, "err", err)
		}
	}
}

// applier stages index updates in one Pebble batch, tracking the group's own updates so
// that first-write-wins and deletes see earlier records of the same group.
//
// Touch times: every put it stages (kept or not: a put of a stored key still counts as a
// write) and every touch of a stored key records now, the time begin was given, as the
// chunk's touch time. A put that is not kept and an explicit touch leave no record in the
// segments, so they make the commit synchronous; a kept put's touch rides the unsynced
// batch, since replay restamps it should the batch be lost (see Store.GCCandidates).
type applier struct {
	s         *Store
	batch     *pebble.Batch
	pending   map[chunkstore.ShardKey]pendingEntry
	dShards   int64
	dBytes    int64
	dLive     map[uint32]int64
	now       int64                 // touch time (Unix nanoseconds) for this batch
	touched   map[chunk.ID]struct{} // chunks whose touch entry is set to now
	untouched map[chunk.ID]struct{} // chunks whose touch entry is removed
	sync      bool                  // the commit must be durable on its own
	buckets   map[uint16]struct{}   // PG buckets of the keys put or deleted (PGVersions)
	kbuf      []byte
	vbuf      []byte
}

type pendingEntry struct {
	present bool
	loc     location
}

// begin starts a batch whose touches are stamped now.
func (a *applier) begin(now time.Time) {
	if a.batch == nil {
		a.batch = a.s.db.NewBatch()
	}
	if a.pending == nil {
		a.pending = make(map[chunkstore.ShardKey]pendingEntry)
		a.dLive = make(map[uint32]int64)
		a.touched = make(map[chunk.ID]struct{})
		a.untouched = make(map[chunk.ID]struct{})
		a.buckets = make(map[uint16]struct{})
	}
	a.now = now.UnixNano()
}

func (a *applier) discard() {
	if a.batch != nil {
		a.batch.Close()
		a.batch = nil
	}
	clear(a.pending)
	clear(a.dLive)
	clear(a.touched)
	clear(a.untouched)
	clear(a.buckets)
	a.dShards, a.dBytes = 0, 0
	a.sync = false
}

func (a *applier) ops() int { return len(a.pending) + len(a.touched) + len(a.untouched) }

// touches reports whether the batch changes touch entries.
func (a *applier) touches() bool { return len(a.touched) > 0 || len(a.untouched) > 0 }

// stamp sets id's touch entry to the batch's time.
func (a *applier) stamp(id chunk.ID) {
	a.touched[id] = struct{}{}
	a.sync = true
}

// touchIterMin is the fewest index lookups of one touch request that touchAll makes
// through one iterator, in index order, instead of one point lookup each: a point lookup
// sets up iterators over every memtable and table that may hold its key, which made
// these lookups most of a commit check's cost on a node (docs/benchmarks.md, tenth
// session; BenchmarkIndexLookups/*/touch).
const touchIterMin = 16

// touchAll stamps the chunk of every key of keys that is stored (or staged in this batch)
// and sets found[i] for it; the keys neither staged nor ruled out by the key filter are
// looked up together (seekSorted) when there are touchIterMin of them or more.
func (a *applier) touchAll(keys []chunkstore.ShardKey, found []bool) error {
	var order []int
	for i, k := range keys {
		if e, ok := a.pending[k]; ok {
			found[i] = e.present
		} else if f := a.s.filter; f != nil && !f.mayContain(k) {
			found[i] = false
		} else {
			order = append(order, i)
			continue
		}
		if found[i] {
			a.stamp(k.ID)
		}
	}
	if len(order) < touchIterMin {
		for _, i := range order {
			e, err := a.indexGet(keys[i])
			if err != nil {
				return err
			}
			if found[i] = e.present; found[i] {
				a.stamp(keys[i].ID)
			}
		}
		return nil
	}
	for _, i := range order {
		found[i] = false
	}
	err := seekSorted(a.s.db, keys, order, func(i int, v []byte) error {
		if _, err := parseLocation(v); err != nil {
			return fmt.Errorf("index lookup %s: %w", keyStr(keys[i]), err)
		}
		found[i] = true
		a.stamp(keys[i].ID)
		return nil
	})
	if err != nil {
		return fmt.Errorf("segstore: %w", err)
	}
	return nil
}

// untouch stages the removal of id's touch entry (its chunk was swept).
func (a *applier) untouch(id chunk.ID) {
	delete(a.touched, id)
	a.untouched[id] = struct{}{}
}

func (a *applier) lookup(key chunkstore.ShardKey) (pendingEntry, error) {
	if e, ok := a.pending[key]; ok {
		return e, nil
	}
	if f := a.s.filter; f != nil && !f.mayContain(key) {
		return pendingEntry{}, nil
	}
	return a.indexGet(key)
}

// indexGet looks key up in the committed index alone (one point lookup).
func (a *applier) indexGet(key chunkstore.ShardKey) (pendingEntry, error) {
	a.kbuf = appendShardKey(a.kbuf[:0], key)
	v, closer, err := a.s.db.Get(a.kbuf)
	if errors.Is(err, pebble.ErrNotFound) {
		return pendingEntry{}, nil
	}
	if err != nil {
		return pendingEntry{}, fmt.Errorf("segstore: index lookup %s: %w", keyStr(key), err)
	}
	loc, err := parseLocation(v)
	closer.Close()
	if err != nil {
		return pendingEntry{}, fmt.Errorf("segstore: index lookup %s: %w", keyStr(key), err)
	}
	return pendingEntry{present: true, loc: loc}, nil
}

// put stages v for key unless key is already present; it reports whether it did.
func (a *applier) put(key chunkstore.ShardKey, v *indexValue) (bool, error) {
	e, err := a.lookup(key)
	if err != nil {
		return false, err
	}
	a.touched[key.ID] = struct{}{}
	if e.present {
		a.sync = true // the touch is all this put leaves; no segment record replays it
		return false, nil
	}
	a.kbuf = appendShardKey(a.kbuf[:0], key)
	a.vbuf = appendIndexValue(a.vbuf[:0], v)
	if err := a.batch.Set(a.kbuf, a.vbuf, nil); err != nil {
		return false, err
	}
	a.kbuf = appendPGKey(a.kbuf[:0], key)
	a.vbuf = appendPGValue(a.vbuf[:0], v)
	if err := a.batch.Set(a.kbuf, a.vbuf, nil); err != nil {
		return false, err
	}
	a.buckets[chunkstore.PGBucket(key.ID)] = struct{}{}
	if f := a.s.filter; f != nil {
		f.add(key) // before the batch that holds key is committed
	}
	a.pending[key] = pendingEntry{present: true, loc: v.loc}
	a.dShards++
	a.dBytes += int64(v.loc.dataLen)
	a.dLive[v.loc.seg] += v.loc.recordLen()
	return true, nil
}

// del stages the removal of key if it is present; it reports whether it did.
func (a *applier) del(key chunkstore.ShardKey) (bool, error) {
	e, err := a.lookup(key)
	if err != nil || !e.present {
		return false, err
	}
	a.kbuf = appendShardKey(a.kbuf[:0], key)
	if err := a.batch.Delete(a.kbuf, nil); err != nil {
		return false, err
	}
	a.kbuf = appendPGKey(a.kbuf[:0], key)
	if err := a.batch.Delete(a.kbuf, nil); err != nil {
		return false, err
	}
	a.buckets[chunkstore.PGBucket(key.ID)] = struct{}{}
	a.pending[key] = pendingEntry{}
	a.dShards--
	a.dBytes -= int64(e.loc.dataLen)
	a.dLive[e.loc.seg] -= e.loc.recordLen()
	return true, nil
}

// commit adds the counters, live bytes and checkpoint to the batch, commits it (NoSync:
// the segments past the checkpoint can always be replayed) and publishes the deltas.
// The applier is ready for a new begin afterwards.
func (a *applier) commit(cp checkpoint) error {
	s := a.s
	b := a.batch
	err := b.Set(keyCounters, encodeCounters(s.shards.Load()+a.dShards, s.bytes.Load()+a.dBytes), nil)
	for num, d := range a.dLive {
		if seg := s.segment(num); seg != nil && err == nil {
			err = b.Set(liveKey(num), binary.BigEndian.AppendUint64(nil, uint64(seg.live.Load()+d)), nil)
		}
	}
	if len(a.touched) > 0 {
		now := encodeNanos(a.now)
		for id := range a.touched {
			if err == nil {
				a.kbuf = appendTouchKey(a.kbuf[:0], id)
				err = b.Set(a.kbuf, now, nil)
			}
		}
	}
	for id := range a.untouched {
		if err == nil {
			a.kbuf = appendTouchKey(a.kbuf[:0], id)
			err = b.Delete(a.kbuf, nil)
		}
	}
	if err == nil {
		err = b.Set(keyCheckpoint, cp.encode(), nil)
	}
	if err == nil {
		opt := pebble.NoSync
		if a.sync && !s.opts.NoSync {
			opt = pebble.Sync
		}
		err = b.Commit(opt)
	}
	if err != nil {
		a.discard()
		return err
	}
	s.shards.Add(a.dShards)
	s.bytes.Add(a.dBytes)
	if len(a.buckets) > 0 {
		// After the commit: a PGVersions read before it, followed by a listing after
		// it, pairs an old mark with new contents, which only costs a second listing;
		// the other way round would hide a change.
		seq := s.pgSeqNext.Add(1)
		for b := range a.buckets {
			s.pgSeq[b].Store(seq)
		}
	}
	for num, d := range a.dLive {
		if seg := s.segment(num); seg != nil {
			seg.live.Add(d)
		}
	}
	a.discard()
	return nil
}
