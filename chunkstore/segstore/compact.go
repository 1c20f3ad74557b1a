package segstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"

	"github.com/cofferhq/coffer/chunkstore"
)

// compactStepBytes bounds how many bytes of a victim segment one writer step scans, so
// that puts queue behind a compaction for one step at a time, not for a whole segment.
const compactStepBytes = 16 << 20

// CompactResult reports what Compact did.
type CompactResult struct {
	Segments  int   // segment files removed
	Copied    int64 // bytes appended to the current segment (live records, carried deletes)
	Reclaimed int64 // bytes of the removed files; the disk space freed is Reclaimed - Copied
}

// CompactTotals is what every compaction (Compact and the background compactor) did
// since the store was opened: for metrics.
type CompactTotals struct {
	Runs      int64 // compactions started (including those that found nothing to do)
	Segments  int64 // segment files removed
	Copied    int64 // bytes appended to the current segment
	Reclaimed int64 // bytes of the removed files
}

// compactCounters hold CompactTotals (Store.compacted).
type compactCounters struct {
	runs, segments, copied, reclaimed atomic.Int64
}

// CompactTotals returns what compaction did since Open. Safe to call at any time, also
// after Close.
func (s *Store) CompactTotals() CompactTotals {
	c := &s.compacted
	return CompactTotals{Runs: c.runs.Load(), Segments: c.segments.Load(), Copied: c.copied.Load(), Reclaimed: c.reclaimed.Load()}
}

// Compact rewrites the segments whose live bytes are below Options.CompactThreshold of
// their record bytes (never the segment being appended to), oldest first: their live
// records are copied to the end of the current segment, the index is pointed at the
// copies, and the old file is removed. It returns what it did so far with an error if
// ctx ends or a step fails; a segment is removed only after its copies are fsynced and
// the index that points at them is committed with sync, so an interruption or crash at
// any point loses nothing (FORMAT.md, "Compaction").
//
// The copying runs in the writer goroutine in steps of at most 16 MiB scanned, so puts,
// deletes, touches and sweeps interleave with it. GetShard calls may run throughout: a
// reader that looked up an old location keeps the old file open until it has read it,
// or looks the key up again if the segment was already gone. One Compact runs at a time;
// the store also runs it by itself after deletes and sweeps (Options.DisableAutoCompact).
func (s *Store) Compact(ctx context.Context) (CompactResult, error) {
	if err := s.enter(); err != nil {
		return CompactResult{}, fmt.Errorf("segstore: compact: %w", err)
	}
	defer s.exit()
	if err := ctx.Err(); err != nil {
		return CompactResult{}, fmt.Errorf("segstore: compact: %w", err)
	}
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	return s.compact(ctx)
}

// compact does Compact's work; the caller holds compactMu and an enter.
func (s *Store) compact(ctx context.Context) (CompactResult, error) {
	var res CompactResult
	s.compacted.runs.Add(1)
	for _, v := range s.victims() {
		st := &compactStep{victim: v, from: fileHeaderSize}
		for {
			if err := ctx.Err(); err != nil {
				return res, fmt.Errorf("segstore: compact: %w", err)
			}
			req := &request{kind: kindCompact, compact: &compactStep{victim: v, from: st.from}, done: make(chan error, 1)}
			if err := s.submit(ctx, req); err != nil {
				return res, fmt.Errorf("segstore: compact segment %d: %w", v, err)
			}
			st = req.compact
			res.Copied += st.copied
			s.compacted.copied.Add(st.copied)
			if st.done {
				if st.removed {
					res.Segments++
					res.Reclaimed += st.freed
					s.compacted.segments.Add(1)
					s.compacted.reclaimed.Add(st.freed)
				}
				break
			}
			st.from = st.next
		}
	}
	return res, nil
}

// victims returns, ascending, the segments other than the current one whose live bytes
// are below the threshold fraction of their record bytes, except those a compaction
// already had to keep since the last rebuild or Open.
func (s *Store) victims() []uint32 {
	cur := s.curSeg.Load()
	s.segMu.RLock()
	defer s.segMu.RUnlock()
	var out []uint32
	for n, seg := range s.segs {
		if n != cur && !s.kept[n] && s.isVictim(seg) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// isVictim reports whether seg's live bytes are below the threshold.
func (s *Store) isVictim(seg *segment) bool {
	live, records := seg.live.Load(), seg.size.Load()-fileHeaderSize
	return live <= 0 || float64(live) < s.opts.CompactThreshold*float64(records)
}

// kickCompactor asks the background compactor to look for victims; it never blocks.
func (s *Store) kickCompactor() {
	if s.opts.DisableAutoCompact {
		return
	}
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// compactor is the background goroutine that compacts after deletes and sweeps. It
// exits when ctx ends (Close cancels it).
func (s *Store) compactor(ctx context.Context) {
	defer close(s.compactorDone)
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		}
		if len(s.victims()) == 0 {
			continue
		}
		if err := s.enter(); err != nil {
			return
		}
		s.compactMu.Lock()
		res, err := s.compact(ctx)
		s.compactMu.Unlock()
		s.exit()
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Error("segstore: background compaction failed", "err", err, "segments_removed", res.Segments)
		case res.Segments > 0:
			s.log.Info("segstore: compacted segments", "removed", res.Segments, "copied_bytes", res.Copied, "freed_bytes", res.Reclaimed-res.Copied)
		}
	}
}

// compactStep is one writer step of compacting segment victim: scan from offset from,
// and report where to continue.
type compactStep struct {
	victim uint32
	from   int64

	next    int64 // where the next step continues
	done    bool  // the whole segment was scanned (and removed, if removed)
	removed bool
	copied  int64 // bytes appended by this step
	freed   int64 // size of the removed file
}

// stagedCopy is a put record a compaction step appends, to be indexed at its new place.
type stagedCopy struct {
	key        chunkstore.ShardKey
	rel        int64 // offset in the step's output
	v          indexValue
	src        uint32 // segment whose live bytes it moves from
	superseded bool   // copied again later in the same step
}

// compactRun scans up to compactStepBytes of the victim from st.from and appends to the
// current segment, in the victim's order:
//   - each put record the index still points at (a live shard): copied, index repointed;
//   - each delete record, when a segment older than the victim remains (it may hold a
//     put the delete cancels, which a rebuild would otherwise bring back): carried over,
//     and if its key is stored again elsewhere, that live record is copied once more
//     right after it, so that replaying the segments in order still ends with the key
//     stored at its copy.
//
// After the last step, if no live bytes remain in the victim, the index is committed
// with sync and the file is removed. It runs in the writer goroutine.
func (s *Store) compactRun(st *compactStep) error {
	if s.w.fatal != nil {
		return s.w.fatal
	}
	s.indexMu.RLock()
	ierr := s.indexErr
	s.indexMu.RUnlock()
	if ierr != nil {
		return ierr
	}
	v := s.segment(st.victim)
	if v == nil || v.num == s.w.cur.num || (st.from <= fileHeaderSize && !s.isVictim(v)) {
		// Already gone, or current (never compacted), or no longer below the threshold
		// (victims were chosen before a RebuildIndex recounted live bytes, say).
		st.done = true
		return nil
	}
	older := false
	for _, n := range s.segNums() {
		older = older || n < v.num
	}
	var (
		out     []byte
		staged  []stagedCopy
		pending = make(map[chunkstore.ShardKey]int) // key -> index in staged
		buf     []byte
		kb      []byte
		damaged bool // stopped at a record whose extent is unknown
	)
	// current returns where key's live record is: pending in this step's output (pi >= 0)
	// or in the index.
	current := func(key chunkstore.ShardKey) (loc location, present bool, pi int, err error) {
		if i, ok := pending[key]; ok {
			return location{}, true, i, nil
		}
		kb = appendShardKey(kb[:0], key)
		val, closer, err := s.db.Get(kb)
		if errors.Is(err, pebble.ErrNotFound) {
			return location{}, false, -1, nil
		}
		if err != nil {
			return location{}, false, -1, err
		}
		loc, err = parseLocation(val)
		closer.Close()
		return loc, err == nil, -1, err
	}
	stage := func(key chunkstore.ShardKey, rec []byte, h *recHeader, writer []byte, src uint32) {
		if i, ok := pending[key]; ok {
			staged[i].superseded = true
		}
		pending[key] = len(staged)
		staged = append(staged, stagedCopy{
			key: key, rel: int64(len(out)), src: src,
			v: indexValue{
				loc: location{dataLen: h.dataLen, writerLen: h.writerLen},
				meta: chunkstore.ShardMeta{
					K: h.k, M: h.m, ChunkLen: h.chunkLen, ChunkCRC: h.chunkCRC, Writer: string(writer),
				},
				dataCRC: h.dataCRC,
			},
		})
		out = append(out, rec...)
	}
	size := v.size.Load()
	off := max(st.from, fileHeaderSize)
	for off < size && off-st.from < compactStepBytes {
		h, writer, b, err := scanRecord(v.f, s.w.bind, v.num, off, size, buf)
		buf = b
		if err != nil {
			var bad *badRecord
			if !errors.As(err, &bad) {
				return fmt.Errorf("segstore: compact segment %d offset %d: %w", v.num, off, err)
			}
			if bad.authentic && bad.end <= size {
				// Only its data is damaged: its extent is known. A live record left
				// behind keeps the segment (removeVictim).
				s.reportDamage(v.num, off, "compaction skips the record", err)
				off = bad.end
				continue
			}
			// Nothing after it can be delimited without guessing; what follows may hold
			// live records or deletes older puts need, so the segment is kept whole.
			s.reportDamage(v.num, off, "compaction stops reading the segment here and keeps it", err)
			damaged = true
			break
		}
		n := h.recordLen()
		rec := buf[:n]
		switch h.typ {
		case recPut:
			loc, present, pi, err := current(h.key)
			if err != nil {
				return fmt.Errorf("segstore: compact %s: %w", keyStr(h.key), err)
			}
			if present && pi < 0 && loc.seg == v.num && loc.off == off {
				stage(h.key, rec, &h, writer, v.num)
			}
		case recDelete:
			if !older {
				break // nothing older for it to cancel
			}
			loc, present, pi, err := current(h.key)
			if err != nil {
				return fmt.Errorf("segstore: compact %s: %w", keyStr(h.key), err)
			}
			out = append(out, rec...)
			switch {
			case !present:
			case pi >= 0: // stored again and already copied in this step: copy it again
				c := staged[pi]
				again := slices.Clone(out[c.rel : c.rel+c.v.loc.recordLen()])
				rh, err := parseHeader(again)
				if err != nil {
					return fmt.Errorf("segstore: compact %s: %w", keyStr(h.key), err)
				}
				stage(h.key, again, &rh, []byte(c.v.meta.Writer), c.src)
			case loc.seg == v.num:
				// Stored again later in this segment; the scan copies it after this.
			default:
				if err := s.recopy(h.key, loc, stage); err != nil {
					return err
				}
			}
		}
		off += n
	}
	st.next = off
	if len(out) > 0 {
		if err := s.appendCopies(out, staged); err != nil {
			return err
		}
		st.copied = int64(len(out))
	}
	if damaged {
		st.done = true
		s.keep(v.num)
		return nil
	}
	if off < size {
		return nil
	}
	st.done = true
	return s.removeVictim(v, st)
}

// keep marks segment num as one compaction does not scan again until a rebuild.
func (s *Store) keep(num uint32) {
	s.segMu.Lock()
	s.kept[num] = true
	s.segMu.Unlock()
}

// recopy stages another copy of key's live record at loc, outside the victim.
func (s *Store) recopy(key chunkstore.ShardKey, loc location, stage func(chunkstore.ShardKey, []byte, *recHeader, []byte, uint32)) error {
	seg := s.segment(loc.seg)
	if seg == nil {
		return fmt.Errorf("segstore: compact %s: segment %d is missing: %w", keyStr(key), loc.seg, chunkstore.ErrCorrupt)
	}
	h, writer, b, err := scanRecord(seg.f, s.w.bind, loc.seg, loc.off, seg.size.Load(), nil)
	if err == nil && (h.typ != recPut || h.key != key) {
		err = fmt.Errorf("%w: record does not match the index", errBadRecord)
	}
	if err != nil {
		return fmt.Errorf("segstore: compact %s: segment %d offset %d: %w", keyStr(key), loc.seg, loc.off, err)
	}
	stage(key, b[:h.recordLen()], &h, writer, loc.seg)
	return nil
}

// appendCopies appends a step's output to the current segment, fsyncs it, and commits
// the repointed index entries, live bytes and checkpoint (without sync: until the batch
// is durable, replay skips the copies, whose keys still point at the originals).
func (s *Store) appendCopies(out []byte, staged []stagedCopy) error {
	if err := s.reserve(int64(len(out))); err != nil {
		return err
	}
	dest, base := s.w.cur, s.w.off
	for p := int64(0); p < int64(len(out)); {
		n := encodedLen(out[p:])
		s.w.bind.bind(out[p:p+n], dest.num, base+p) // the copy is bound to its new place
		p += n
	}
	if _, err := dest.f.WriteAt(out, base); err != nil {
		s.rollback(dest, base)
		return fmt.Errorf("segstore: compact: append to segment %d: %w", dest.num, err)
	}
	if !s.opts.NoSync {
		if err := dest.f.Sync(); err != nil {
			s.rollback(dest, base)
			return fmt.Errorf("segstore: compact: fsync segment %d: %w", dest.num, err)
		}
	}
	s.w.off = base + int64(len(out))
	dest.size.Store(s.w.off)
	b := s.db.NewBatch()
	defer b.Close()
	dLive := make(map[uint32]int64)
	var err error
	var kb, vb []byte
	for i := range staged {
		c := &staged[i]
		if c.superseded {
			continue
		}
		c.v.loc.seg, c.v.loc.off = dest.num, base+c.rel
		kb = appendShardKey(kb[:0], c.key)
		vb = appendIndexValue(vb[:0], &c.v)
		if err == nil {
			err = b.Set(kb, vb, nil)
		}
		if s.filter != nil {
			s.filter.add(c.key) // indexed already, so present; kept a superset regardless
		}
		n := c.v.loc.recordLen()
		dLive[dest.num] += n
		dLive[c.src] -= n
	}
	for num, d := range dLive {
		if seg := s.segment(num); seg != nil && err == nil {
			err = b.Set(liveKey(num), binary.BigEndian.AppendUint64(nil, uint64(seg.live.Load()+d)), nil)
		}
	}
	if err == nil {
		err = b.Set(keyCheckpoint, checkpoint{seg: dest.num, off: s.w.off}.encode(), nil)
	}
	if err == nil {
		err = b.Commit(pebble.NoSync)
	}
	if err != nil {
		// The copies are durable but not indexed; a reopen replays (and skips) them.
		s.w.fatal = fmt.Errorf("segstore: index commit failed during compaction, reopen the store: %w", err)
		s.log.Error("segstore: index commit failed during compaction", "err", err)
		return s.w.fatal
	}
	for num, d := range dLive {
		if seg := s.segment(num); seg != nil {
			seg.live.Add(d)
		}
	}
	return nil
}

// removeVictim removes a fully scanned victim if none of its records is live any more:
// it first makes the index durable (every copy is then found through it), then
// unregisters the segment and deletes the file. Readers holding the segment keep the
// file open until they release it.
func (s *Store) removeVictim(v *segment, st *compactStep) error {
	if live := v.live.Load(); live != 0 {
		// A live record the scan did not find (damaged?) or a rebuild in between: keep
		// the segment; a later compaction looks again.
		s.log.Warn("segstore: compaction keeps a segment that still has live bytes", "segment", v.num, "live", live)
		s.keep(v.num)
		return nil
	}
	if s.opts.beforeRemove != nil {
		if err := s.opts.beforeRemove(v.num); err != nil {
			return fmt.Errorf("segstore: compact segment %d: %w", v.num, err)
		}
	}
	b := s.db.NewBatch()
	err := b.Delete(liveKey(v.num), nil)
	if err == nil {
		err = b.Commit(s.pebbleSync())
	}
	b.Close()
	if err != nil {
		return fmt.Errorf("segstore: compact segment %d: sync index: %w", v.num, err)
	}
	s.segMu.Lock()
	delete(s.segs, v.num)
	s.segMu.Unlock()
	st.removed, st.freed = true, v.size.Load()
	err = os.Remove(v.path)
	if err == nil && !s.opts.NoSync {
		err = syncDir(s.dir)
	}
	v.release()
	if err != nil {
		// Unregistered either way; a file left behind holds nothing live and is
		// compacted again after the next Open.
		return fmt.Errorf("segstore: compact: remove %s: %w", v.path, err)
	}
	return nil
}
