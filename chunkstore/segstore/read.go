package segstore

// The read side of the store: index lookups, shard reads with their binding and CRC
// checks, existence checks, enumeration and the figures Stats and Segments report.

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"

	"github.com/cockroachdb/pebble/v2"

	"github.com/cofferhq/coffer/chunkstore"
)

// lookup returns the location of key's put record, or an error wrapping
// chunkstore.ErrNotFound. kb is scratch space for the index key.
func (s *Store) lookup(key chunkstore.ShardKey, kb []byte) (location, error) {
	s.indexMu.RLock()
	defer s.indexMu.RUnlock()
	if s.indexErr != nil {
		return location{}, s.indexErr
	}
	if s.filter != nil && !s.filter.mayContain(key) {
		return location{}, chunkstore.ErrNotFound
	}
	v, closer, err := s.db.Get(appendShardKey(kb[:0], key))
	if errors.Is(err, pebble.ErrNotFound) {
		return location{}, chunkstore.ErrNotFound
	}
	if err != nil {
		return location{}, err
	}
	loc, err := parseLocation(v)
	if cerr := closer.Close(); err == nil {
		err = cerr
	}
	return loc, err
}

// GetShard reads the shard's record and checks its CRC32C. It returns an error wrapping
// chunkstore.ErrNotFound when the key is not stored, chunkstore.ErrCorrupt (naming the
// shard, segment and offset) when the record does not match, or chunkstore.ErrClosed.
// The returned Data is freshly allocated and belongs to the caller.
func (s *Store) GetShard(ctx context.Context, key chunkstore.ShardKey) (chunkstore.Shard, error) {
	if err := s.enter(); err != nil {
		return chunkstore.Shard{}, fmt.Errorf("segstore: get %s: %w", keyStr(key), err)
	}
	defer s.exit()
	if err := ctx.Err(); err != nil {
		return chunkstore.Shard{}, fmt.Errorf("segstore: get %s: %w", keyStr(key), err)
	}
	rb := s.getReadBuf()
	defer s.readPool.Put(rb)
	// A segment that compaction removes is unregistered only after the index points at
	// the copies, and its file stays open while a reader holds it; so a lookup that
	// finds its segment gone looks again and finds the copy.
	var loc location
	var seg *segment
	for try := 0; seg == nil; try++ {
		var err error
		if loc, err = s.lookup(key, rb.key[:0]); err != nil {
			return chunkstore.Shard{}, fmt.Errorf("segstore: get %s: %w", keyStr(key), err)
		}
		if seg = s.acquireSegment(loc.seg); seg == nil && try == maxReadRetries {
			return chunkstore.Shard{}, fmt.Errorf("segstore: get %s: segment %d offset %d: segment file is missing: %w",
				keyStr(key), loc.seg, loc.off, chunkstore.ErrCorrupt)
		}
	}
	defer seg.release()
	corrupt := func(what string, args ...any) error {
		err := fmt.Errorf("segstore: get %s: segment %d offset %d: %s: %w",
			keyStr(key), loc.seg, loc.off, fmt.Sprintf(what, args...), chunkstore.ErrCorrupt)
		s.noteDamage(Damage{Segment: loc.seg, Offset: loc.off, Err: err})
		return err
	}
	hdr := rb.header(recHeaderSize + loc.writerLen)
	if err := readFull(seg.f, hdr, loc.off); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return chunkstore.Shard{}, corrupt("record header beyond the end of the segment")
		}
		return chunkstore.Shard{}, fmt.Errorf("segstore: get %s: segment %d: %w", keyStr(key), loc.seg, err)
	}
	h, err := parseHeader(hdr)
	if err != nil {
		return chunkstore.Shard{}, corrupt("%v", err)
	}
	if h.typ != recPut || h.key != key || h.dataLen != loc.dataLen || h.writerLen != loc.writerLen {
		return chunkstore.Shard{}, corrupt("record header does not match the index")
	}
	if err := rb.binder(s.salt).check(hdr, &h, loc.seg, loc.off); err != nil {
		return chunkstore.Shard{}, corrupt("%v", err)
	}
	data := make([]byte, loc.dataLen)
	if err := readFull(seg.f, data, loc.dataOff()); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return chunkstore.Shard{}, corrupt("record data beyond the end of the segment")
		}
		return chunkstore.Shard{}, fmt.Errorf("segstore: get %s: segment %d: %w", keyStr(key), loc.seg, err)
	}
	if crcOf(data) != h.dataCRC {
		return chunkstore.Shard{}, corrupt("data CRC32C mismatch")
	}
	return chunkstore.Shard{
		Key: key,
		Meta: chunkstore.ShardMeta{
			K: h.k, M: h.m, ChunkLen: h.chunkLen, ChunkCRC: h.chunkCRC,
			Writer: string(hdr[recHeaderSize:]),
		},
		Data: data,
	}, nil
}

// readFull reads len(b) bytes at off; a short read is io.ErrUnexpectedEOF.
func readFull(f io.ReaderAt, b []byte, off int64) error {
	n, err := f.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// readBuf is GetShard's pooled scratch space, so that a read allocates only its result.
type readBuf struct {
	key  []byte
	hdr  []byte
	bind *binder // created on first use
}

func (rb *readBuf) binder(salt []byte) *binder {
	if rb.bind == nil {
		rb.bind = newBinder(salt)
	}
	return rb.bind
}

func (s *Store) getReadBuf() *readBuf {
	if rb, ok := s.readPool.Get().(*readBuf); ok {
		return rb
	}
	return &readBuf{key: make([]byte, 0, shardKeyLen), hdr: make([]byte, 0, 256)}
}

// header returns a scratch slice of n bytes for a record header and writer name.
func (rb *readBuf) header(n int) []byte {
	if cap(rb.hdr) < n {
		rb.hdr = make([]byte, n)
	}
	rb.hdr = rb.hdr[:n]
	return rb.hdr
}

// HasShards reports for each key whether the index holds it (no data is read or
// checked). The result has len(keys) entries, in order. The answers come from one
// consistent view of the index taken during the call.
func (s *Store) HasShards(ctx context.Context, keys []chunkstore.ShardKey) ([]bool, error) {
	if err := s.enter(); err != nil {
		return nil, fmt.Errorf("segstore: has shards: %w", err)
	}
	defer s.exit()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("segstore: has shards: %w", err)
	}
	out := make([]bool, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	s.indexMu.RLock()
	defer s.indexMu.RUnlock()
	if s.indexErr != nil {
		return nil, fmt.Errorf("segstore: has shards: %w", s.indexErr)
	}
	// NB: keys the filter rules out are absent; the others are looked up together.
	order := make([]int, 0, len(keys))
	for i, k := range keys {
		if s.filter == nil || s.filter.mayContain(k) {
			order = append(order, i)
		}
	}
	err := seekSorted(s.db, keys, order, func(i int, _ []byte) error {
		out[i] = true
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("segstore: has shards: %w", err)
	}
	return out, nil
}

// seekSorted looks up keys[i] for every i of order in db's index through one iterator,
// in index order (order is sorted in place), so that each seek starts from where the
// previous one ended (Pebble tries a few Next steps before a full seek, and its table
// iterators keep their position) instead of from the top; a point lookup per key sets
// up iterators over every memtable and table that may hold it. found is called, in index
// order, with i and the index value of each stored key; its error stops the lookups.
func seekSorted(db *pebble.DB, keys []chunkstore.ShardKey, order []int, found func(i int, value []byte) error) error {
	if len(order) == 0 {
		return nil
	}
	slices.SortFunc(order, func(a, b int) int { return compareShardKeys(keys[a], keys[b]) })
	iter, err := db.NewIter(&pebble.IterOptions{LowerBound: shardLower, UpperBound: shardUpper})
	if err != nil {
		return err
	}
	var kb [shardKeyLen]byte
	for _, i := range order {
		k := appendShardKey(kb[:0], keys[i])
		if !iter.SeekGE(k) || !bytes.Equal(iter.Key(), k) {
			continue
		}
		if err := found(i, iter.Value()); err != nil {
			return errors.Join(err, iter.Close())
		}
	}
	return errors.Join(iter.Error(), iter.Close())
}

// compareShardKeys orders shard keys as the index does: by chunk ID, then index.
func compareShardKeys(a, b chunkstore.ShardKey) int {
	if c := bytes.Compare(a.ID[:], b.ID[:]); c != 0 {
		return c
	}
	return cmp.Compare(a.Index, b.Index)
}

// EnumerateShards calls fn for every shard with key > after (all when after is nil), by
// chunk ID then index, in the caller's goroutine. It iterates over a consistent view of
// the index taken at the start; fn may call other methods of s. An error from fn stops
// the enumeration and is returned unchanged. Close waits for a running enumeration.
func (s *Store) EnumerateShards(ctx context.Context, after *chunkstore.ShardKey, fn func(chunkstore.ShardInfo) error) error {
	if err := s.enter(); err != nil {
		return fmt.Errorf("segstore: enumerate: %w", err)
	}
	defer s.exit()
	lower := shardLower
	if after != nil {
		lower = append(appendShardKey(nil, *after), 0) // the smallest key above after
	}
	s.indexMu.RLock()
	err := s.indexErr
	var iter *pebble.Iterator
	if err == nil {
		iter, err = s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: shardUpper})
	}
	s.indexMu.RUnlock()
	if err != nil {
		return fmt.Errorf("segstore: enumerate: %w", err)
	}
	defer iter.Close()
	n := 0
	for valid := iter.First(); valid; valid = iter.Next() {
		if n++; n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("segstore: enumerate: %w", err)
			}
		}
		key, err := parseShardKey(iter.Key())
		if err != nil {
			return err
		}
		v, err := parseIndexValue(iter.Value())
		if err != nil {
			return fmt.Errorf("segstore: enumerate %s: %w", keyStr(key), err)
		}
		if err := fn(chunkstore.ShardInfo{Key: key, Meta: v.meta, Len: uint32(v.loc.dataLen)}); err != nil {
			return err
		}
	}
	if err := iter.Error(); err != nil {
		return fmt.Errorf("segstore: enumerate: %w", err)
	}
	return nil
}

// Stats reports live shards and bytes (from the index), the number of segment files,
// Corrupt (damaged records found since Open, see Damage), and Capacity: the bytes still available to unprivileged users on dir's filesystem
// (statfs f_bavail × f_bsize; 0 where statfs is unsupported).
func (s *Store) Stats(ctx context.Context) (chunkstore.ShardStats, error) {
	if err := s.enter(); err != nil {
		return chunkstore.ShardStats{}, fmt.Errorf("segstore: stats: %w", err)
	}
	defer s.exit()
	if err := ctx.Err(); err != nil {
		return chunkstore.ShardStats{}, fmt.Errorf("segstore: stats: %w", err)
	}
	avail, err := availableBytes(s.dir)
	if err != nil {
		return chunkstore.ShardStats{}, fmt.Errorf("segstore: stats: statfs %s: %w", s.dir, err)
	}
	s.segMu.RLock()
	nsegs := len(s.segs)
	s.segMu.RUnlock()
	return chunkstore.ShardStats{
		Shards:   s.shards.Load(),
		Bytes:    s.bytes.Load(),
		Segments: nsegs,
		Capacity: avail,
		Corrupt:  s.corrupt.Load(),
	}, nil
}

// SegmentInfo describes one segment file.
type SegmentInfo struct {
	Num       uint32
	Path      string
	Size      int64 // bytes in the file (header and all records)
	LiveBytes int64 // bytes of put records whose shards are still indexed
}

// Segments lists the segment files in ascending order with their live bytes, the input
// compaction works from.
func (s *Store) Segments() ([]SegmentInfo, error) {
	if err := s.enter(); err != nil {
		return nil, fmt.Errorf("segstore: segments: %w", err)
	}
	defer s.exit()
	s.segMu.RLock()
	out := make([]SegmentInfo, 0, len(s.segs))
	for n, seg := range s.segs {
		out = append(out, SegmentInfo{Num: n, Path: seg.path, Size: seg.size.Load(), LiveBytes: seg.live.Load()})
	}
	s.segMu.RUnlock()
	slices.SortFunc(out, func(a, b SegmentInfo) int { return cmp.Compare(a.Num, b.Num) })
	return out, nil
}

// Locate returns the segment file and the byte range where key's data bytes sit, so
// that fault tests and tools can inspect or damage them. It returns an error wrapping
// chunkstore.ErrNotFound when the key is not stored.
func (s *Store) Locate(key chunkstore.ShardKey) (path string, offset int64, length int64, err error) {
	if err := s.enter(); err != nil {
		return "", 0, 0, fmt.Errorf("segstore: locate %s: %w", keyStr(key), err)
	}
	defer s.exit()
	loc, err := s.lookup(key, make([]byte, 0, shardKeyLen))
	if err != nil {
		return "", 0, 0, fmt.Errorf("segstore: locate %s: %w", keyStr(key), err)
	}
	return filepath.Join(s.dir, segName(loc.seg)), loc.dataOff(), int64(loc.dataLen), nil
}

var _ chunkstore.PGLister = (*Store)(nil)

// EnumeratePG calls fn for every shard of PG pg of pgCount with key after after in PG
// order (chunkstore.PGCompare; all when after is nil), in that order, in the caller's
// goroutine. It reads the PG listing keys ('p', FORMAT.md), one key range per PG, so
// its cost grows with the PG's shards, not the store's. Like EnumerateShards it
// iterates over a consistent view taken at the start.
func (s *Store) EnumeratePG(ctx context.Context, pgCount, pg uint32, after *chunkstore.ShardKey, fn func(chunkstore.ShardInfo) error) error {
	if err := s.enter(); err != nil {
		return fmt.Errorf("segstore: enumerate pg: %w", err)
	}
	defer s.exit()
	if !chunkstore.ValidPGCount(pgCount, pg) {
		return fmt.Errorf("segstore: enumerate pg %d of %d: %w", pg, pgCount, chunkstore.ErrInvalid)
	}
	lo, hi := chunkstore.PGRange(pgCount, pg)
	lower, upper := pgBound(lo), pgBound(hi)
	if after != nil {
		if a := append(appendPGKey(nil, *after), 0); bytes.Compare(a, lower) > 0 {
			lower = a // the smallest key above after
		}
	}
	if bytes.Compare(lower, upper) >= 0 {
		return nil
	}
	s.indexMu.RLock()
	err := s.indexErr
	var iter *pebble.Iterator
	if err == nil {
		iter, err = s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	}
	s.indexMu.RUnlock()
	if err != nil {
		return fmt.Errorf("segstore: enumerate pg: %w", err)
	}
	defer iter.Close()
	n := 0
	for valid := iter.First(); valid; valid = iter.Next() {
		if n++; n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("segstore: enumerate pg: %w", err)
			}
		}
		key, err := parsePGKey(iter.Key())
		if err != nil {
			return err
		}
		if chunkstore.PGOf(key.ID, pgCount) != pg {
			continue // pgCount above 65536: the bucket holds other PGs too
		}
		meta, dlen, err := parsePGValue(iter.Value())
		if err != nil {
			return fmt.Errorf("segstore: enumerate pg %s: %w", keyStr(key), err)
		}
		if err := fn(chunkstore.ShardInfo{Key: key, Meta: meta, Len: dlen}); err != nil {
			return err
		}
	}
	if err := iter.Error(); err != nil {
		return fmt.Errorf("segstore: enumerate pg: %w", err)
	}
	return nil
}

// PGVersions returns the store's PG change marks (chunkstore.PGLister). They are kept in
// memory: every group commit that puts or deletes shards sets the marks of their PG
// buckets to a new value, a rebuild of the index sets all of them, and every Open draws
// a new incarnation. Its cost is one pass over the 65536 buckets.
func (s *Store) PGVersions(ctx context.Context, pgCount uint32) (chunkstore.PGVersions, error) {
	if err := s.enter(); err != nil {
		return chunkstore.PGVersions{}, fmt.Errorf("segstore: pg versions: %w", err)
	}
	defer s.exit()
	if err := ctx.Err(); err != nil {
		return chunkstore.PGVersions{}, fmt.Errorf("segstore: pg versions: %w", err)
	}
	if !chunkstore.ValidPGCount(pgCount, 0) {
		return chunkstore.PGVersions{}, fmt.Errorf("segstore: pg versions: pg count %d: %w", pgCount, chunkstore.ErrInvalid)
	}
	v := chunkstore.PGVersions{Incarnation: s.incarnation, Seqs: make([]uint64, min(pgCount, chunkstore.PGBuckets))}
	mask := len(v.Seqs) - 1
	for b := range s.pgSeq {
		if q := s.pgSeq[b].Load(); q > v.Seqs[b&mask] {
			v.Seqs[b&mask] = q
		}
	}
	return v, nil
}
