package segstore

import (
	"context"
	"encoding/binary"
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
	if err := s.replay(ctx, checkpoint{}, now); err != nil {
		s.indexErr = fmt.Errorf("segstore: index incomplete after an interrupted rebuild (run RebuildIndex again or reopen): %w", err)
		return err
	}
	s.indexErr = nil
	return nil
}

// replay applies every record at or after from to the index, in segment order, stamping
// the chunk of every put record with now: the record's own write time is unknown, and no
// earlier than now is safe. The caller holds indexMu for writing (or is Open). A record that fails its checks is
// handled as follows: if a valid record follows it in the same segment, the damaged
// range is skipped and logged (those shards are lost to this node and repair restores
// them); otherwise it is a torn tail, and the segment is truncated there and logged. A
// torn tail was never acknowledged, because acknowledgement waits for fsync.
func (s *Store) replay(ctx context.Context, from checkpoint, now time.Time) error {
	ap := &s.w.ap
	ap.begin(now)
	defer ap.discard()
	cp := from
	var buf []byte
	records := 0
	for _, num := range s.segNums() {
		if num < from.seg {
			continue
		}
		seg := s.segment(num)
		off := int64(fileHeaderSize)
		if num == from.seg && from.off > off {
			off = from.off
		}
		size := seg.size.Load()
		for off < size {
			if err := ctx.Err(); err != nil {
				if cerr := ap.commit(cp); cerr != nil {
					return fmt.Errorf("segstore: replay: %w", cerr)
				}
				return fmt.Errorf("segstore: replay stopped at segment %d offset %d: %w", num, off, err)
			}
			h, writer, b, err := scanRecord(seg.f, off, size, buf)
			buf = b
			if err != nil {
				if !isBadRecord(err) {
					return fmt.Errorf("segstore: replay segment %d offset %d: %w", num, off, err)
				}
				next, ferr := findNextRecord(seg.f, off+1, size)
				if ferr != nil {
					return fmt.Errorf("segstore: replay segment %d offset %d: %w", num, off, ferr)
				}
				if next < 0 {
					s.log.Warn("segstore: truncating torn tail of segment", "segment", num, "offset", off, "bytes", size-off, "reason", err.Error())
					if err := s.truncateTail(seg, off); err != nil {
						return err
					}
					size = off
					break
				}
				s.log.Error("segstore: skipping damaged records in segment", "segment", num, "from", off, "to", next, "reason", err.Error())
				off = next
				continue
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
