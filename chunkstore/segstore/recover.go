package segstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/cofferhq/coffer/chunkstore"
)

// replayBatchOps is how many index updates recovery stages before committing (with a
// checkpoint) so that an interrupted replay resumes close to where it stopped.
const replayBatchOps = 4096

// rebuild discards the index and replays every segment into it. It runs in Open or on
// the writer goroutine; it holds indexMu for writing throughout.
//
// Touch times are not in the segments, so rebuild drops them all and sets the touch
// floor to now: every chunk counts as written at the rebuild, never earlier (FORMAT.md).
func (s *Store) rebuild(ctx context.Context) error {
	s.indexMu.Lock()
	defer s.indexMu.Unlock()
	now := s.opts.Now()
	b := s.db.NewBatch()
	err := b.DeleteRange(shardLower, shardUpper, nil)
	if err == nil {
		err = b.DeleteRange(pgLower, pgUpper, nil)
	}
	if err == nil {
		err = b.DeleteRange(liveLower, liveUpper, nil)
	}
	if err == nil {
		err = b.DeleteRange(touchLower, touchUpper, nil)
	}
	if err == nil {
		err = b.Set(keyTouchFloor, encodeNanos(now.UnixNano()), nil)
	}
	if err == nil {
		err = b.Set(keyCounters, encodeCounters(0, 0), nil)
	}
	if err == nil {
		err = b.Set(keyCheckpoint, checkpoint{}.encode(), nil)
	}
	if err == nil {
		err = b.Set(keyVersion, binary.BigEndian.AppendUint32(nil, indexVersion), nil)
	}
	if err == nil {
		err = b.Commit(pebble.NoSync)
	}
	b.Close()
	if err != nil {
		s.indexErr = fmt.Errorf("segstore: index incomplete: reset failed: %w", err)
		return fmt.Errorf("segstore: rebuild index: %w", err)
	}
	s.shards.Store(0)
	s.bytes.Store(0)
	s.floor.Store(now.UnixNano())
	s.segMu.Lock()
	clear(s.kept)
	s.segMu.Unlock()
	for _, n := range s.segNums() {
		s.segment(n).live.Store(0)
	}
	known := checkpoint{}
	if s.w.cur != nil { // a live rebuild: every record before the writer's end was acknowledged
		known = checkpoint{seg: s.w.cur.num, off: s.w.off}
	}
	if err := s.replay(ctx, checkpoint{}, known, now); err != nil {
		s.indexErr = fmt.Errorf("segstore: index incomplete after an interrupted rebuild (run RebuildIndex again or reopen): %w", err)
		return err
	}
	s.indexErr = nil
	// Every PG counts as changed: a listing from before the rebuild may hold keys the
	// rebuild did not bring back (damage found on the way).
	seq := s.pgSeqNext.Add(1)
	for i := range s.pgSeq {
		s.pgSeq[i].Store(seq)
	}
	return nil
}

// replay applies every record at or after from to the index, in segment order, stamping
// the chunk of every put record with now: the record's own write time is unknown, and no
// earlier than now is safe. The caller holds indexMu for writing (or is Open).
//
// It follows each segment's records from one to the next by their authenticated
// lengths and never looks for a record anywhere else, so bytes inside shard data are
// never taken for one (FORMAT.md, "Write, acknowledgement and recovery"). A record that
// fails its check is:
//   - a torn tail, truncated and logged, if it is in the last segment, at or after
//     known (nothing before known can be torn: it was acknowledged, or the index holds
//     it), and it is the last thing in the file as far as can be told: its header does
//     not even decode (zeros, garbage: nothing after it can be delimited), or it
//     decodes and says the record reaches the end of the file or beyond;
//   - otherwise damage (a header that decodes but says more of the file follows, or
//     anything in an earlier segment or before known), reported as
//     chunkstore.ErrCorrupt (logged and counted, see Store.Damage) and left in place
//     for repair. If its header verifies (only the data is bad), replay skips exactly
//     that record and goes on; if not, replay stops for that segment and goes on with
//     the next, and if the segment is the last the writer moves to a new one
//     (s.w.sealed) so that nothing is ever appended behind the damage.
func (s *Store) replay(ctx context.Context, from, known checkpoint, now time.Time) error {
	ap := &s.w.ap
	ap.begin(now)
	defer ap.discard()
	cp := from
	var buf []byte
	records := 0
	nums := s.segNums()
	for _, num := range nums {
		if num < from.seg {
			continue
		}
		seg := s.segment(num)
		last := num == nums[len(nums)-1]
		off := int64(fileHeaderSize)
		if num == from.seg && from.off > off {
			off = from.off
		}
		size := seg.size.Load()
	segment:
		for off < size {
			if err := ctx.Err(); err != nil {
				if cerr := ap.commit(cp); cerr != nil {
					return fmt.Errorf("segstore: replay: %w", cerr)
				}
				return fmt.Errorf("segstore: replay stopped at segment %d offset %d: %w", num, off, err)
			}
			h, writer, b, err := scanRecord(seg.f, s.w.bind, num, off, size, buf)
			buf = b
			if err != nil {
				var bad *badRecord
				if !errors.As(err, &bad) {
					return fmt.Errorf("segstore: replay segment %d offset %d: %w", num, off, err)
				}
				switch {
				case last && !known.after(num, off) && (!bad.parsed || bad.end >= size):
					s.log.Warn("segstore: truncating torn tail of segment", "segment", num, "offset", off, "bytes", size-off, "reason", bad.why)
					if err := s.truncateTail(seg, off); err != nil {
						return err
					}
					size = off
				case bad.authentic && bad.end <= size:
					s.reportDamage(num, off, "recovery skips the record", err)
					off = bad.end
					cp = checkpoint{seg: num, off: off}
					continue
				default:
					s.reportDamage(num, off, "recovery stops reading the segment here", err)
					if last {
						s.w.sealed = true
					}
				}
				break segment
			}
			switch h.typ {
			case recPut:
				_, err = ap.put(h.key, &indexValue{
					loc: location{seg: num, off: off, dataLen: h.dataLen, writerLen: h.writerLen},
					meta: chunkstore.ShardMeta{
						K: h.k, M: h.m, ChunkLen: h.chunkLen, ChunkCRC: h.chunkCRC, Writer: string(writer),
					},
					dataCRC: h.dataCRC,
				})
			case recDelete:
				_, err = ap.del(h.key)
			}
			if err != nil {
				return fmt.Errorf("segstore: replay segment %d offset %d: %w", num, off, err)
			}
			records++
			off += h.recordLen()
			cp = checkpoint{seg: num, off: off}
			if ap.ops() >= replayBatchOps {
				if err := ap.commit(cp); err != nil {
					return fmt.Errorf("segstore: replay: %w", err)
				}
				ap.begin(now)
			}
		}
		cp = checkpoint{seg: num, off: off}
	}
	if err := ap.commit(cp); err != nil {
		return fmt.Errorf("segstore: replay: %w", err)
	}
	if records > 0 {
		s.log.Info("segstore: replayed segment records into the index", "records", records,
			"from_segment", from.seg, "from_offset", from.off, "shards", s.shards.Load())
	}
	return nil
}

// after reports whether c is after position (seg, off): the record there is known.
func (c checkpoint) after(seg uint32, off int64) bool {
	return c.seg > seg || (c.seg == seg && c.off > off)
}

// reportDamage records damage found at (num, off): logged, counted and listed by
// Store.Damage, as chunkstore.ErrCorrupt naming the segment and offset.
func (s *Store) reportDamage(num uint32, off int64, action string, cause error) {
	err := fmt.Errorf("segstore: segment %d offset %d: %v: %w", num, off, cause, chunkstore.ErrCorrupt)
	s.log.Error("segstore: damaged record; repair restores its shards from their stripes", "segment", num, "offset", off, "action", action, "err", err)
	s.noteDamage(Damage{Segment: num, Offset: off, Err: err})
}

// truncateTail cuts seg at off, removing a torn record.
func (s *Store) truncateTail(seg *segment, off int64) error {
	err := seg.f.Truncate(off)
	if err == nil && !s.opts.NoSync {
		err = seg.f.Sync()
	}
	if err != nil {
		return fmt.Errorf("segstore: truncate torn tail of segment %d at %d: %w", seg.num, off, err)
	}
	seg.size.Store(off)
	return nil
}
