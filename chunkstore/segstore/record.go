package segstore

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
)

// Segment file and record layout; see FORMAT.md. All integers are big-endian.
const (
	fileMagic      = "CFSG"
	fileVersion    = 2  // version 2: records bound to their place (FORMAT.md)
	fileHeaderSize = 16 // magic(4) version(2) reserved(2) segment number(8)

	recMagic      = "CFSR"
	recVersion    = 2
	recPut        = 1
	recDelete     = 2
	recHeaderSize = 88 // see the table in FORMAT.md
	recPlaceOff   = 60 // segment(4) offset(8): where the record sits
	recTagOff     = 72 // tag(16): keyed MAC over bytes [0, 72) and the writer
	recTagSize    = 16
)

// castagnoli is the CRC32C table. Immutable once built.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errBadRecord marks bytes that do not decode as a valid record at their place: a torn
// write, corruption, or bytes that were never a record of this store there. It never
// escapes the package unwrapped; callers map it to chunkstore.ErrCorrupt or to tail
// truncation during recovery.
var errBadRecord = errors.New("segstore: bad record")

// badRecord is the errBadRecord a record check returns, with what recovery needs to
// decide between a torn tail and damage (recover.go).
type badRecord struct {
	why string
	// parsed: the header decodes as a record header; end is where it says the record
	// ends (possibly past the end of the file). Unless authentic, that is a claim only.
	parsed bool
	end    int64
	// authentic: the header and writer carry this store's tag for this place, so the
	// record's extent is known and only its data failed its check, or the file ends
	// inside it.
	authentic bool
}

func (e *badRecord) Error() string { return errBadRecord.Error() + ": " + e.why }
func (e *badRecord) Unwrap() error { return errBadRecord }

func badf(format string, args ...any) error {
	return &badRecord{why: fmt.Sprintf(format, args...)}
}

// recordLen is the encoded length of a record with writer and data of the given sizes.
func recordLen(writerLen, dataLen int) int64 {
	return recHeaderSize + int64(writerLen) + int64(dataLen)
}

// recHeader is the fixed part of a record.
type recHeader struct {
	typ       byte
	key       chunkstore.ShardKey
	k, m      uint8
	chunkLen  uint32
	chunkCRC  uint32
	writerLen int
	dataLen   int
	dataCRC   uint32
	seg       uint32 // the place the record names (checked against where it was read)
	off       int64
}

func (h *recHeader) recordLen() int64 { return recordLen(h.writerLen, h.dataLen) }

func putHeader(b []byte, h *recHeader) {
	_ = b[recHeaderSize-1]
	copy(b[0:4], recMagic)
	b[4] = recVersion
	b[5] = h.typ
	binary.BigEndian.PutUint16(b[6:8], uint16(h.writerLen))
	copy(b[8:40], h.key.ID[:])
	b[40] = h.key.Index
	b[41] = h.k
	b[42] = h.m
	b[43] = 0
	binary.BigEndian.PutUint32(b[44:48], h.chunkLen)
	binary.BigEndian.PutUint32(b[48:52], h.chunkCRC)
	binary.BigEndian.PutUint32(b[52:56], uint32(h.dataLen))
	binary.BigEndian.PutUint32(b[56:60], h.dataCRC)
	clear(b[recPlaceOff:recHeaderSize]) // place and tag: set by binder.bind when appended
}

// parseHeader decodes and sanity-checks a record header; it does not check the tag
// (binder.check does). Errors wrap errBadRecord.
func parseHeader(b []byte) (recHeader, error) {
	var h recHeader
	if len(b) < recHeaderSize {
		return h, badf("short header (%d bytes)", len(b))
	}
	if string(b[0:4]) != recMagic {
		return h, badf("bad magic %q", b[0:4])
	}
	if b[4] != recVersion {
		return h, badf("record version %d, want %d", b[4], recVersion)
	}
	h.typ = b[5]
	h.writerLen = int(binary.BigEndian.Uint16(b[6:8]))
	h.key.ID = chunk.ID(b[8:40])
	h.key.Index = b[40]
	h.k, h.m = b[41], b[42]
	h.chunkLen = binary.BigEndian.Uint32(b[44:48])
	h.chunkCRC = binary.BigEndian.Uint32(b[48:52])
	h.dataLen = int(binary.BigEndian.Uint32(b[52:56]))
	h.dataCRC = binary.BigEndian.Uint32(b[56:60])
	h.seg = binary.BigEndian.Uint32(b[60:64])
	h.off = int64(binary.BigEndian.Uint64(b[64:72]))
	switch h.typ {
	case recPut:
		if h.dataLen == 0 || h.dataLen > chunkstore.MaxChunkSize {
			return h, badf("put record with %d data bytes", h.dataLen)
		}
	case recDelete:
		if h.dataLen != 0 || h.writerLen != 0 {
			return h, badf("delete record with payload")
		}
	default:
		return h, badf("unknown record type %d", h.typ)
	}
	if b[43] != 0 {
		return h, badf("reserved byte is %d", b[43])
	}
	return h, nil
}

// appendPut appends the put record for s to buf, unbound: binder.bind sets its place
// and tag once the writer knows where it goes. dataCRC is crc32c(s.Data).
func appendPut(buf []byte, s *chunkstore.Shard, dataCRC uint32) []byte {
	h := recHeader{
		typ: recPut, key: s.Key, k: s.Meta.K, m: s.Meta.M,
		chunkLen: s.Meta.ChunkLen, chunkCRC: s.Meta.ChunkCRC,
		writerLen: len(s.Meta.Writer), dataLen: len(s.Data), dataCRC: dataCRC,
	}
	start := len(buf)
	buf = grow(buf, int(h.recordLen()))
	putHeader(buf[start:], &h)
	p := start + recHeaderSize
	p += copy(buf[p:], s.Meta.Writer)
	copy(buf[p:], s.Data)
	return buf
}

// appendDelete appends the delete record for key to buf, unbound (see appendPut).
func appendDelete(buf []byte, key chunkstore.ShardKey) []byte {
	h := recHeader{typ: recDelete, key: key}
	start := len(buf)
	buf = grow(buf, int(h.recordLen()))
	putHeader(buf[start:], &h)
	return buf
}

// encodedLen is the length of the encoded record at the start of rec, read from its
// header (which the caller produced or checked).
func encodedLen(rec []byte) int64 {
	return recordLen(int(binary.BigEndian.Uint16(rec[6:8])), int(binary.BigEndian.Uint32(rec[52:56])))
}

// saltSize is the length of the store's salt, the key of record tags.
const saltSize = 32

// binder binds records to their place: it computes and checks a record's tag,
// HMAC-SHA256 keyed with the store's salt over header bytes [0, 72) (which hold the
// segment and offset) and the writer name, truncated to 16 bytes. Bytes that were not
// written by this store at this exact place (a record inside shard data, one from
// another segment, offset or store) fail the check. A binder is not safe for
// concurrent use.
type binder struct {
	mac hash.Hash
	sum []byte
}

func newBinder(salt []byte) *binder {
	return &binder{mac: hmac.New(sha256.New, salt), sum: make([]byte, 0, sha256.Size)}
}

func (b *binder) tag(head, writer []byte) []byte {
	b.mac.Reset()
	b.mac.Write(head)
	b.mac.Write(writer)
	b.sum = b.mac.Sum(b.sum[:0])
	return b.sum[:recTagSize]
}

// bind writes into rec, one encoded record, the place (seg, off) where it is appended
// and its tag.
func (b *binder) bind(rec []byte, seg uint32, off int64) {
	binary.BigEndian.PutUint32(rec[recPlaceOff:], seg)
	binary.BigEndian.PutUint64(rec[recPlaceOff+4:], uint64(off))
	w := int(binary.BigEndian.Uint16(rec[6:8]))
	copy(rec[recTagOff:recHeaderSize], b.tag(rec[:recTagOff], rec[recHeaderSize:recHeaderSize+w]))
}

// check verifies that hw, a record header h (parsed from hw) followed by its writer
// name, was bound by this store to (seg, off). The error says what does not match;
// callers wrap it.
func (b *binder) check(hw []byte, h *recHeader, seg uint32, off int64) error {
	if h.seg != seg || h.off != off {
		return fmt.Errorf("record names segment %d offset %d but sits at segment %d offset %d", h.seg, h.off, seg, off)
	}
	if !hmac.Equal(b.tag(hw[:recTagOff], hw[recHeaderSize:recHeaderSize+h.writerLen]), hw[recTagOff:recHeaderSize]) {
		return fmt.Errorf("record tag does not match: not written by this store at segment %d offset %d", seg, off)
	}
	return nil
}

// grow extends buf by n bytes, reallocating at most once.
func grow(buf []byte, n int) []byte {
	if cap(buf)-len(buf) < n {
		nb := make([]byte, len(buf), 2*cap(buf)+n)
		copy(nb, buf)
		buf = nb
	}
	return buf[:len(buf)+n]
}

// putFileHeader fills a segment file header for segment num.
func putFileHeader(b []byte, num uint32) {
	copy(b[0:4], fileMagic)
	binary.BigEndian.PutUint16(b[4:6], fileVersion)
	binary.BigEndian.PutUint16(b[6:8], 0)
	binary.BigEndian.PutUint64(b[8:16], uint64(num))
}

// checkFileHeader verifies a segment file header for segment num.
func checkFileHeader(b []byte, num uint32) error {
	switch {
	case len(b) < fileHeaderSize:
		return fmt.Errorf("short file header (%d bytes)", len(b))
	case string(b[0:4]) != fileMagic:
		return fmt.Errorf("bad file magic %q", b[0:4])
	case binary.BigEndian.Uint16(b[4:6]) != fileVersion:
		return fmt.Errorf("unsupported segment format version %d (this build reads only version %d, whose records are bound to their place; FORMAT.md says why version 1 is refused)", binary.BigEndian.Uint16(b[4:6]), fileVersion)
	case binary.BigEndian.Uint64(b[8:16]) != uint64(num):
		return fmt.Errorf("header names segment %d, file name says %d", binary.BigEndian.Uint64(b[8:16]), num)
	}
	return nil
}

// errShortHeader reports a segment file too short to hold its header (a crash while the
// segment was being created).
var errShortHeader = errors.New("segstore: segment file shorter than its header")

func crcOf(b []byte) uint32 { return crc32.Update(0, castagnoli, b) }
