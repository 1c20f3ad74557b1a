package segstore

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
)

// segFile is what the store needs from an open segment file (*os.File satisfies it).
type segFile interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
	Truncate(size int64) error
	Stat() (os.FileInfo, error)
	Close() error
}

// segment is one open segment file. The file stays open until Store.Close, or, for a
// segment that compaction removed, until the last reader releases it.
type segment struct {
	num  uint32
	path string
	f    segFile
	size atomic.Int64 // bytes durably appended (or, with NoSync, written)
	live atomic.Int64 // bytes of put records still indexed
	// refs counts the store's map (1 while the segment is registered) and the readers
	// holding it (Store.acquireSegment); the file is closed when it drops to 0.
	refs atomic.Int64
}

// release drops one reference; the last one closes the file.
func (seg *segment) release() {
	if seg.refs.Add(-1) == 0 {
		seg.f.Close()
	}
}

func segName(num uint32) string { return fmt.Sprintf("seg-%08d.log", num) }

func parseSegName(name string) (uint32, bool) {
	s, ok := strings.CutPrefix(name, "seg-")
	if !ok {
		return 0, false
	}
	s, ok = strings.CutSuffix(s, ".log")
	if !ok || len(s) < 8 {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == 0 || segName(uint32(n)) != name {
		return 0, false
	}
	return uint32(n), true
}

// listSegments returns the segment numbers found in dir, ascending.
func listSegments(dir string) ([]uint32, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var nums []uint32
	for _, e := range ents {
		if n, ok := parseSegName(e.Name()); ok && e.Type().IsRegular() {
			nums = append(nums, n)
		}
	}
	sort.Slice(nums, func(i, j int) bool { return nums[i] < nums[j] })
	return nums, nil
}

// syncDir fsyncs a directory so that file creations in it are durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// scanRecord reads and verifies the record at off in segment seg, read through f whose
// readable size is size: its header and writer must carry bd's tag for (seg, off), and
// its data its data CRC. buf is scratch space, returned possibly grown; the writer
// returned is a slice of it, and buf[:h.recordLen()] is the whole record. It returns a
// *badRecord (wrapping errBadRecord) when the bytes are not a valid record of this
// store at this place, or another error when reading fails. It reads no data before
// the header is authenticated, so a forged header cannot make it read much.
func scanRecord(f io.ReaderAt, bd *binder, seg uint32, off, size int64, buf []byte) (recHeader, []byte, []byte, error) {
	if size-off < recHeaderSize {
		return recHeader{}, nil, buf, badf("%d bytes left, too short for a record header", size-off)
	}
	buf = grow(buf[:0], recHeaderSize)
	if err := readFull(f, buf, off); err != nil {
		return recHeader{}, nil, buf, err
	}
	h, err := parseHeader(buf)
	if err != nil {
		return h, nil, buf, err
	}
	n := h.recordLen()
	hw := recHeaderSize + int64(h.writerLen)
	if hw > size-off {
		return h, nil, buf, &badRecord{why: fmt.Sprintf("record header and writer (%d bytes) run past the end of the segment", hw), parsed: true, end: off + n}
	}
	buf = grow(buf, h.writerLen)
	if err := readFull(f, buf[recHeaderSize:], off+recHeaderSize); err != nil {
		return h, nil, buf, err
	}
	if err := bd.check(buf, &h, seg, off); err != nil {
		return h, nil, buf, &badRecord{why: err.Error(), parsed: true, end: off + n}
	}
	if n > size-off {
		return h, nil, buf, &badRecord{why: fmt.Sprintf("record of %d bytes runs past the end of the segment", n), parsed: true, authentic: true, end: off + n}
	}
	buf = grow(buf, h.dataLen)
	if err := readFull(f, buf[hw:], off+hw); err != nil {
		return h, nil, buf, err
	}
	if crcOf(buf[hw:n]) != h.dataCRC {
		return h, nil, buf, &badRecord{why: "data CRC mismatch", parsed: true, authentic: true, end: off + n}
	}
	return h, buf[recHeaderSize:hw], buf, nil
}

// openSegmentFile opens an existing segment and checks its header. A missing or short
// header is reported with errShortHeader so that Open can repair the last segment.
func (s *Store) openSegmentFile(num uint32) (*segment, error) {
	path := filepath.Join(s.dir, segName(num))
	f, err := s.opts.openFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	seg := &segment{num: num, path: path, f: f}
	seg.refs.Store(1)
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	seg.size.Store(fi.Size())
	if fi.Size() < fileHeaderSize {
		return seg, errShortHeader
	}
	var hdr [fileHeaderSize]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		f.Close()
		return nil, err
	}
	if err := checkFileHeader(hdr[:], num); err != nil {
		f.Close()
		return nil, err
	}
	return seg, nil
}

// writeFileHeader (re)initialises seg as an empty segment and makes that durable.
func (s *Store) writeFileHeader(seg *segment) error {
	var hdr [fileHeaderSize]byte
	putFileHeader(hdr[:], seg.num)
	if err := seg.f.Truncate(0); err != nil {
		return err
	}
	if _, err := seg.f.WriteAt(hdr[:], 0); err != nil {
		return err
	}
	if !s.opts.NoSync {
		if err := seg.f.Sync(); err != nil {
			return err
		}
		if err := syncDir(s.dir); err != nil {
			return err
		}
	}
	seg.size.Store(fileHeaderSize)
	return nil
}

// createSegment creates segment num, writes its header durably and registers it.
// Called by the writer goroutine, or by Open before the writer starts.
func (s *Store) createSegment(num uint32) (*segment, error) {
	path := filepath.Join(s.dir, segName(num))
	f, err := s.opts.openFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("segstore: create segment %d: %w", num, err)
	}
	seg := &segment{num: num, path: path, f: f}
	seg.refs.Store(1)
	if err := s.writeFileHeader(seg); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("segstore: create segment %d: %w", num, err)
	}
	s.segMu.Lock()
	s.segs[num] = seg
	s.segMu.Unlock()
	return seg, nil
}
