package segstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
)

// Segment file and record layout; see FORMAT.md. All integers are big-endian.
const (
	fileMagic      = "CFSG"
	fileVersion    = 1
	fileHeaderSize = 16 // magic(4) version(2) reserved(2) segment number(8)

	recMagic       = "CFSR"
	recVersion     = 1
	recPut         = 1
	recDelete      = 2
	recHeaderSize  = 60 // see the table in FORMAT.md
	recTrailerSize = 4  // CRC32C of header, writer and data

	// maxWriterLen bounds ShardMeta.Writer (its length field is 16 bits).
	maxWriterLen = 1<<16 - 1
)

// castagnoli is the CRC32C table. Immutable once built.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errBadRecord marks bytes that do not decode as a valid record: a torn write or
// corruption. It never escapes the package unwrapped; callers map it to
// chunkstore.ErrCorrupt or to tail truncation during recovery.
var errBadRecord = errors.New("segstore: bad record")

// recordLen is the encoded length of a record with writer and data of the given sizes.
func recordLen(writerLen, dataLen int) int64 {
	return recHeaderSize + int64(writerLen) + int64(dataLen) + recTrailerSize
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
}

// parseHeader decodes and sanity-checks a record header. Errors wrap errBadRecord.
func parseHeader(b []byte) (recHeader, error) {
	var h recHeader
	if len(b) < recHeaderSize {
		return h, fmt.Errorf("%w: short header (%d bytes)", errBadRecord, len(b))
	}
	if string(b[0:4]) != recMagic {
		return h, fmt.Errorf("%w: bad magic %q", errBadRecord, b[0:4])
	}
	if b[4] != recVersion {
		return h, fmt.Errorf("%w: unknown record version %d", errBadRecord, b[4])
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
	switch h.typ {
	case recPut:
		if h.dataLen == 0 || h.dataLen > chunkstore.MaxChunkSize {
			return h, fmt.Errorf("%w: put record with %d data bytes", errBadRecord, h.dataLen)
		}
	case recDelete:
		if h.dataLen != 0 || h.writerLen != 0 {
			return h, fmt.Errorf("%w: delete record with payload", errBadRecord)
		}
	default:
		return h, fmt.Errorf("%w: unknown record type %d", errBadRecord, h.typ)
	}
	if b[43] != 0 {
		return h, fmt.Errorf("%w: reserved byte is %d", errBadRecord, b[43])
	}
	return h, nil
}

// appendPut appends the put record for s to buf. dataCRC is crc32c(s.Data).
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
	p += copy(buf[p:], s.Data)
	binary.BigEndian.PutUint32(buf[p:], crc32.Update(0, castagnoli, buf[start:p]))
	return buf
}

// appendDelete appends the delete record for key to buf.
func appendDelete(buf []byte, key chunkstore.ShardKey) []byte {
	h := recHeader{typ: recDelete, key: key}
	start := len(buf)
	buf = grow(buf, int(h.recordLen()))
	putHeader(buf[start:], &h)
	p := start + recHeaderSize
	binary.BigEndian.PutUint32(buf[p:], crc32.Update(0, castagnoli, buf[start:p]))
	return buf
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
		return fmt.Errorf("unsupported segment format version %d (this build reads %d)", binary.BigEndian.Uint16(b[4:6]), fileVersion)
	case binary.BigEndian.Uint64(b[8:16]) != uint64(num):
		return fmt.Errorf("header names segment %d, file name says %d", binary.BigEndian.Uint64(b[8:16]), num)
	}
	return nil
}

// errShortHeader reports a segment file too short to hold its header (a crash while the
// segment was being created).
var errShortHeader = errors.New("segstore: segment file shorter than its header")

func isBadRecord(err error) bool { return errors.Is(err, errBadRecord) }

func crcOf(b []byte) uint32 { return crc32.Update(0, castagnoli, b) }

func beUint32(b []byte) uint32 { return binary.BigEndian.Uint32(b) }

func crc32Update(crc uint32, b []byte) uint32 { return crc32.Update(crc, castagnoli, b) }
