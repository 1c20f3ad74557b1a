package segstore

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/cofferhq/coffer/chunkstore"
)

var _ chunkstore.GCStore = (*Store)(nil)

// Store is the production chunkstore.ShardStore: shard bytes in append-only segment
// files, their index in Pebble. All methods are safe for concurrent use. Open it with
// Open and release it with Close.
type Store struct {
	dir  string
	opts Options
	log  *slog.Logger
	db   *pebble.DB

	gate struct {
		sync.Mutex
		closed bool
	}
	inflight sync.WaitGroup // public calls in progress; Close waits for them

	// indexMu is held for writing while the index is rebuilt or replayed, and for
	// reading by index lookups, so that no lookup sees a half-built index.
	indexMu  sync.RWMutex
	indexErr error // guarded by indexMu; non-nil while the index is incomplete

	segMu sync.RWMutex
	segs  map[uint32]*segment // guarded by segMu; compaction removes entries
	// kept holds segments compaction scanned but could not remove (live bytes left,
	// e.g. a damaged record); guarded by segMu, cleared by a rebuild. victims skips
	// them so that they are not rescanned, and their deletes carried again, forever.
	kept   map[uint32]bool
	curSeg atomic.Uint32 // the segment the writer appends to

	shards atomic.Int64 // live shards, published after each index commit
	bytes  atomic.Int64 // live shard data bytes
	floor  atomic.Int64 // touch floor (Unix nanoseconds); changed only with indexMu held for writing

	reqs       chan *request // closed by Close once no caller can send
	writerDone chan struct{} // closed by the writer goroutine when it exits

	compactMu     sync.Mutex         // one compaction at a time
	kick          chan struct{}      // wakes the compactor (capacity 1, never closed)
	stopCompactor context.CancelFunc // ends the compactor; called by Close
	compactorDone chan struct{}      // closed by the compactor goroutine when it exits

	w writerState // owned by the writer goroutine (by Open before it starts)

	// filter holds every shard key in the index (and maybe more): set by Open once the
	// index is loaded, before the writer starts, and never replaced. nil while loading.
	filter *keyFilter

	encPool  sync.Pool // *[]byte record encode buffers (requests)
	readPool sync.Pool // *readBuf scratch space for GetShard

	salt []byte // key of record tags (dir/salt); set by Open, never changed

	// pgSeq holds the PG change marks (PGVersions), in memory only: for each of the
	// chunkstore.PGBuckets buckets, the value of pgSeqNext at its last change. They
	// restart at every Open under a new incarnation (random, so that a mark taken before
	// a restart never equals one taken after).
	pgSeq       []atomic.Uint64
	pgSeqNext   atomic.Uint64
	incarnation uint64

	corrupt atomic.Int64 // damaged records found since Open (Stats.Corrupt)
	// compacted counts what compactions did since Open (CompactTotals).
	compacted compactCounters
	damageMu  sync.Mutex
	damage    []Damage // guarded by damageMu; the first maxDamage found since Open
}

// maxDamage bounds the damage reports a store keeps in memory (Store.Damage).
const maxDamage = 1024

// Damage is a damaged record the store found in a segment: by recovery, compaction or
// a read. Its shards are lost to this node until repair writes them again.
type Damage struct {
	Segment uint32
	Offset  int64
	Err     error // wraps chunkstore.ErrCorrupt; names the segment, offset and what failed
}

func (s *Store) noteDamage(d Damage) {
	s.corrupt.Add(1)
	s.damageMu.Lock()
	if len(s.damage) < maxDamage {
		s.damage = append(s.damage, d)
	}
	s.damageMu.Unlock()
}

// Damage returns the damaged records found since Open (the first 1024), in the order
// found. Stats.Corrupt counts them all.
func (s *Store) Damage() []Damage {
	s.damageMu.Lock()
	defer s.damageMu.Unlock()
	return slices.Clone(s.damage)
}

// Open opens (creating if needed) the store in dir: segment files seg-NNNNNNNN.log, the
// salt file dir/salt (made with the store; a directory with segments but no salt is
// refused) and the Pebble index in dir/index. It replays segment records written after
// the index's checkpoint, truncating a torn record at the end of the last segment and
// reporting other damage as chunkstore.ErrCorrupt (Damage) without failing, and
// rebuilds the whole index from the segments when the index directory is missing or
// empty. Segments in format version 1 are refused (FORMAT.md). Only one Store may have
// dir open at a time (Pebble's lock file enforces it).
func Open(dir string, opts Options) (*Store, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("segstore: open %s: %w", dir, err)
	}
	idxDir := filepath.Join(dir, "index")
	fresh, err := dirMissingOrEmpty(idxDir)
	if err != nil {
		return nil, fmt.Errorf("segstore: open %s: %w", dir, err)
	}
	cache := pebble.NewCache(opts.CacheSize)
	db, err := pebble.Open(idxDir, &pebble.Options{
		FormatMajorVersion:         pebble.FormatNewest,
		Cache:                      cache,
		MemTableSize:               uint64(opts.MemTableSize),
		CompactionConcurrencyRange: func() (int, int) { return 1, 2 },
		Logger:                     pebbleLogger{opts.Logger},
	})
	cache.Unref() // the DB holds its own reference
	if err != nil {
		return nil, fmt.Errorf("segstore: open index %s: %w", idxDir, err)
	}
	s := &Store{
		dir:           dir,
		opts:          opts,
		log:           opts.Logger,
		db:            db,
		segs:          make(map[uint32]*segment),
		kept:          make(map[uint32]bool),
		reqs:          make(chan *request, 64),
		writerDone:    make(chan struct{}),
		kick:          make(chan struct{}, 1),
		compactorDone: make(chan struct{}),
	}
	s.w.ap.s = s
	s.pgSeq = make([]atomic.Uint64, chunkstore.PGBuckets)
	var inc [8]byte
	if _, err := rand.Read(inc[:]); err != nil {
		db.Close()
		return nil, fmt.Errorf("segstore: open %s: draw incarnation: %w", dir, err)
	}
	s.incarnation = binary.BigEndian.Uint64(inc[:])
	err = s.load(fresh)
	if err == nil {
		s.filter, err = s.loadFilter()
	}
	if err != nil {
		s.closeFiles()
		db.Close()
		return nil, err
	}
	go s.run()
	cctx, cancel := context.WithCancel(context.Background())
	s.stopCompactor = cancel
	go s.compactor(cctx)
	s.kickCompactor() // garbage left from before the last Close
	return s, nil
}

func dirMissingOrEmpty(dir string) (bool, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return len(ents) == 0, nil
}

// load opens the segment files and brings the index up to date with them.
func (s *Store) load(fresh bool) error {
	nums, err := listSegments(s.dir)
	if err != nil {
		return fmt.Errorf("segstore: open %s: %w", s.dir, err)
	}
	for i, num := range nums {
		seg, err := s.openSegmentFile(num)
		if errors.Is(err, errShortHeader) && i == len(nums)-1 {
			// A crash while the last segment was being created: it holds no records.
			s.log.Warn("segstore: reinitialising last segment with a short header", "segment", num, "bytes", seg.size.Load())
			err = s.writeFileHeader(seg)
		}
		if err != nil {
			if seg != nil {
				seg.f.Close()
			}
			return fmt.Errorf("segstore: open segment %s: %w", filepath.Join(s.dir, segName(num)), err)
		}
		s.segs[num] = seg
	}
	salt, err := s.loadSalt(len(nums) > 0)
	if err != nil {
		return err
	}
	s.salt = salt
	s.w.bind = newBinder(salt)
	ctx := context.Background()
	ver, haveVer, err := s.metaValue(keyVersion)
	if err != nil {
		return err
	}
	now := s.opts.Now()
	switch {
	case fresh || !haveVer:
		if len(nums) > 0 {
			s.log.Info("segstore: index missing; rebuilding it from segments", "dir", s.dir, "segments", len(nums))
		}
		if err := s.rebuild(ctx); err != nil {
			return err
		}
	case len(ver) == 4 && (binary.BigEndian.Uint32(ver) == 1 || binary.BigEndian.Uint32(ver) == 2):
		if binary.BigEndian.Uint32(ver) == 1 {
			// Version 1 kept no touch times: every chunk counts as touched now.
			s.log.Info("segstore: upgrading index to version 2 (touch times); every stored chunk counts as written now", "dir", s.dir)
			b := s.db.NewBatch()
			err := b.Set(keyTouchFloor, encodeNanos(now.UnixNano()), nil)
			if err == nil {
				err = b.Set(keyVersion, binary.BigEndian.AppendUint32(nil, 2), nil)
			}
			if err == nil {
				err = b.Commit(s.pebbleSync())
			}
			b.Close()
			if err != nil {
				return fmt.Errorf("segstore: open %s: upgrade index: %w", s.dir, err)
			}
		}
		if err := s.upgradePGKeys(); err != nil {
			return err
		}
		if err := s.catchUp(ctx, now); err != nil {
			return err
		}
	case len(ver) != 4 || binary.BigEndian.Uint32(ver) != indexVersion:
		return fmt.Errorf("segstore: open %s: index format %x is not version %d; move %s aside to rebuild it", s.dir, ver, indexVersion, filepath.Join(s.dir, "index"))
	default:
		if err := s.catchUp(ctx, now); err != nil {
			return err
		}
	}
	if len(s.segs) == 0 {
		if _, err := s.createSegment(1); err != nil {
			return err
		}
	}
	s.w.cur = s.segs[slices.Max(s.segNums())]
	s.w.off = s.w.cur.size.Load()
	s.curSeg.Store(s.w.cur.num)
	return s.leaveDamagedSegment()
}

// upgradeBatchKeys is how many PG listing keys upgradePGKeys writes per batch.
const upgradeBatchKeys = 1 << 14

// upgradePGKeys upgrades a version 2 index to version 3 in place: it writes the PG
// listing key of every shard key (in batches without sync, after clearing any PG key
// left over), then sets m/version to 3 in a synced batch. Interrupted, the index is still
// version 2 and the next Open starts over. It runs in Open, before the writer starts.
func (s *Store) upgradePGKeys() error {
	start := s.opts.Now()
	if err := s.db.DeleteRange(pgLower, pgUpper, pebble.NoSync); err != nil {
		return fmt.Errorf("segstore: open %s: upgrade index to version 3: %w", s.dir, err)
	}
	iter, err := s.db.NewIter(&pebble.IterOptions{LowerBound: shardLower, UpperBound: shardUpper})
	if err != nil {
		return fmt.Errorf("segstore: open %s: upgrade index to version 3: %w", s.dir, err)
	}
	b := s.db.NewBatch()
	var kb, vb []byte
	n := 0
	for valid := iter.First(); valid && err == nil; valid = iter.Next() {
		var key chunkstore.ShardKey
		var v indexValue
		if key, err = parseShardKey(iter.Key()); err != nil {
			break
		}
		if v, err = parseIndexValue(iter.Value()); err != nil {
			err = fmt.Errorf("%s: %w", keyStr(key), err)
			break
		}
		kb, vb = appendPGKey(kb[:0], key), appendPGValue(vb[:0], &v)
		err = b.Set(kb, vb, nil)
		if n++; err == nil && n%upgradeBatchKeys == 0 {
			err = b.Commit(pebble.NoSync)
			b.Close()
			b = s.db.NewBatch()
		}
	}
	err = errors.Join(err, iter.Error(), iter.Close())
	if err == nil {
		err = b.Set(keyVersion, binary.BigEndian.AppendUint32(nil, indexVersion), nil)
	}
	if err == nil {
		err = b.Commit(s.pebbleSync())
	}
	b.Close()
	if err != nil {
		return fmt.Errorf("segstore: open %s: upgrade index to version 3: %w", s.dir, err)
	}
	s.log.Info("segstore: upgraded index to version 3 (PG listing keys)", "dir", s.dir, "shards", n, "took", s.opts.Now().Sub(start))
	return nil
}

// leaveDamagedSegment starts a new segment for the writer if recovery stopped at damage
// in the current one (s.w.sealed): appending behind damage would put acknowledged
// records where recovery never reads. It runs in Open or in the writer goroutine.
func (s *Store) leaveDamagedSegment() error {
	if !s.w.sealed {
		return nil
	}
	seg, err := s.createSegment(s.w.cur.num + 1)
	if err != nil {
		return err
	}
	s.w.cur, s.w.off, s.w.sealed = seg, fileHeaderSize, false
	s.curSeg.Store(seg.num)
	return nil
}

// loadFilter returns a key filter holding every shard key in the index, sized for twice
// as many. It reads the whole shard key range once (Open's cost grows with the shards
// stored: 0.37 µs per shard on the development VM, BenchmarkIndexLookups/loadFilter).
func (s *Store) loadFilter() (*keyFilter, error) {
	f := newKeyFilter(2 * s.shards.Load())
	iter, err := s.db.NewIter(&pebble.IterOptions{LowerBound: shardLower, UpperBound: shardUpper})
	if err != nil {
		return nil, fmt.Errorf("segstore: load key filter: %w", err)
	}
	for valid := iter.First(); valid; valid = iter.Next() {
		k, err := parseShardKey(iter.Key())
		if err != nil {
			iter.Close()
			return nil, fmt.Errorf("segstore: load key filter: %w", err)
		}
		f.add(k)
	}
	if err := errors.Join(iter.Error(), iter.Close()); err != nil {
		return nil, fmt.Errorf("segstore: load key filter: %w", err)
	}
	return f, nil
}

// pebbleSync is the write option for index batches that must be durable on their own.
func (s *Store) pebbleSync() *pebble.WriteOptions {
	if s.opts.NoSync {
		return pebble.NoSync
	}
	return pebble.Sync
}

// catchUp loads the persisted counters and touch floor and replays the segments past the
// checkpoint, stamping replayed puts with now.
func (s *Store) catchUp(ctx context.Context, now time.Time) error {
	raw, ok, err := s.metaValue(keyCheckpoint)
	if err != nil {
		return err
	}
	var cp checkpoint
	if ok {
		if cp, err = parseCheckpoint(raw); err != nil {
			return err
		}
	}
	if cp.seg != 0 {
		seg := s.segs[cp.seg]
		switch {
		case seg == nil:
			s.log.Warn("segstore: index checkpoint names a missing segment; rebuilding the index", "segment", cp.seg)
			return s.rebuild(ctx)
		case cp.off > seg.size.Load():
			s.log.Warn("segstore: segment is shorter than the index checkpoint; rebuilding the index",
				"segment", cp.seg, "checkpoint", cp.off, "size", seg.size.Load())
			return s.rebuild(ctx)
		}
	}
	raw, ok, err = s.metaValue(keyTouchFloor)
	if err != nil {
		return err
	}
	if ok {
		floor, err := parseNanos(raw)
		if err != nil {
			return err
		}
		s.floor.Store(floor)
	} else {
		s.log.Warn("segstore: index has no touch floor; every stored chunk counts as written now", "dir", s.dir)
		if err := s.db.Set(keyTouchFloor, encodeNanos(now.UnixNano()), s.pebbleSync()); err != nil {
			return fmt.Errorf("segstore: open %s: set touch floor: %w", s.dir, err)
		}
		s.floor.Store(now.UnixNano())
	}
	raw, ok, err = s.metaValue(keyCounters)
	if err != nil {
		return err
	}
	if ok {
		n, b, err := parseCounters(raw)
		if err != nil {
			return err
		}
		s.shards.Store(n)
		s.bytes.Store(b)
	}
	iter, err := s.db.NewIter(&pebble.IterOptions{LowerBound: liveLower, UpperBound: liveUpper})
	if err != nil {
		return fmt.Errorf("segstore: load live bytes: %w", err)
	}
	for valid := iter.First(); valid; valid = iter.Next() {
		k, v := iter.Key(), iter.Value()
		if len(k) != 5 || len(v) != 8 {
			continue
		}
		if seg := s.segs[binary.BigEndian.Uint32(k[1:])]; seg != nil {
			seg.live.Store(int64(binary.BigEndian.Uint64(v)))
		}
	}
	if err := errors.Join(iter.Error(), iter.Close()); err != nil {
		return fmt.Errorf("segstore: load live bytes: %w", err)
	}
	s.indexMu.Lock()
	defer s.indexMu.Unlock()
	return s.replay(ctx, cp, cp, now)
}

// metaValue returns a copy of the value of a meta key and whether it exists.
func (s *Store) metaValue(key []byte) ([]byte, bool, error) {
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("segstore: read %s: %w", key, err)
	}
	out := slices.Clone(v)
	return out, true, closer.Close()
}

// Close stops a background compaction (at a step boundary; what it did is kept), waits
// for calls in progress (including EnumerateShards callbacks), stops the writer, and closes the index and the segment files. Later calls return
// chunkstore.ErrClosed. Close is idempotent.
func (s *Store) Close() error {
	s.gate.Lock()
	if s.gate.closed {
		s.gate.Unlock()
		return nil
	}
	s.gate.closed = true
	s.gate.Unlock()
	s.stopCompactor()
	<-s.compactorDone
	s.inflight.Wait()
	close(s.reqs) // no caller can send any more
	<-s.writerDone
	err := s.db.Close()
	if ferr := s.closeFiles(); err == nil {
		err = ferr
	}
	if err != nil {
		return fmt.Errorf("segstore: close: %w", err)
	}
	return nil
}

func (s *Store) closeFiles() error {
	s.segMu.Lock()
	defer s.segMu.Unlock()
	var errs []error
	for _, seg := range s.segs {
		errs = append(errs, seg.f.Close())
	}
	return errors.Join(errs...)
}

// enter registers a public call; it fails once Close has begun.
func (s *Store) enter() error {
	s.gate.Lock()
	defer s.gate.Unlock()
	if s.gate.closed {
		return chunkstore.ErrClosed
	}
	s.inflight.Add(1)
	return nil
}

func (s *Store) exit() { s.inflight.Done() }

func (s *Store) segment(num uint32) *segment {
	s.segMu.RLock()
	defer s.segMu.RUnlock()
	return s.segs[num]
}

// acquireSegment returns segment num with a reference the caller must release, or nil
// if it is not registered (compaction removed it).
func (s *Store) acquireSegment(num uint32) *segment {
	s.segMu.RLock()
	defer s.segMu.RUnlock()
	seg := s.segs[num]
	if seg != nil {
		seg.refs.Add(1)
	}
	return seg
}

// maxReadRetries bounds how often GetShard looks a key up again after finding its
// segment removed by compaction (which repoints the index before removing a segment).
const maxReadRetries = 4

func (s *Store) segNums() []uint32 {
	s.segMu.RLock()
	defer s.segMu.RUnlock()
	nums := make([]uint32, 0, len(s.segs))
	for n := range s.segs {
		nums = append(nums, n)
	}
	slices.Sort(nums)
	return nums
}

func keyStr(k chunkstore.ShardKey) string { return fmt.Sprintf("%s/%d", k.ID.Str(), k.Index) }

// RebuildIndex discards the index and rebuilds it from every segment file, verifying
// each record's binding and CRC. Every record it meets was acknowledged, so it
// truncates nothing: damage is reported as chunkstore.ErrCorrupt (Damage) and left
// in place, as on Open.
// Writes wait while it runs and lookups block. If ctx ends first it returns the error
// and the index stays incomplete, so lookups and writes fail until a later
// RebuildIndex succeeds or the store is reopened (reopening resumes the replay).
func (s *Store) RebuildIndex(ctx context.Context) error {
	if err := s.enter(); err != nil {
		return fmt.Errorf("segstore: rebuild index: %w", err)
	}
	defer s.exit()
	req := &request{kind: kindRebuild, ctx: ctx, done: make(chan error, 1)}
	select {
	case s.reqs <- req:
	case <-ctx.Done():
		return fmt.Errorf("segstore: rebuild index: %w", ctx.Err())
	}
	return <-req.done // the writer stops early when ctx ends
}
