package segstore

import (
	"encoding/binary"
	"fmt"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
)

// Pebble key space; see FORMAT.md. Each kind of key has its own one-byte prefix.
const (
	prefixLive  = 'l' // 'l' + segment(4) -> live bytes(8)
	prefixMeta  = 'm' // 'm' + name -> store-wide values
	prefixPG    = 'p' // 'p' + PG sort key(2) + chunk ID(32) + index(1) -> PG listing value
	prefixShard = 's' // 's' + chunk ID(32) + index(1) -> index value
	prefixTouch = 't' // 't' + chunk ID(32) -> last write or touch, Unix nanoseconds(8)

	// indexVersion 2 added touch times ('t' keys and m/touchfloor); 3 added the PG
	// listing ('p' keys). Open upgrades versions 1 and 2 in place; see FORMAT.md.
	indexVersion   = 3
	touchKeyLen    = 1 + chunk.Size
	shardKeyLen    = 1 + chunk.Size + 1
	pgKeyLen       = 1 + 2 + chunk.Size + 1
	indexValueBase = 33 // fixed part of an index value, before the writer
	// indexValueVersion is the first byte of every shard index value ('s' keys): the
	// value layout has not changed since index version 2, which wrote 2 there.
	indexValueVersion = 2
	pgValueVersion    = 1
	pgValueBase       = 17 // fixed part of a PG listing value, before the writer
)

// Immutable key constants (byte slices cannot be consts); never modified.
var (
	keyVersion    = []byte("m/version")    // uint32 index format version
	keyCheckpoint = []byte("m/checkpoint") // segment(4) offset(8): indexed through here
	keyCounters   = []byte("m/counters")   // shards(8) bytes(8)
	keyTouchFloor = []byte("m/touchfloor") // Unix nanoseconds(8): no chunk counts as touched earlier

	shardLower = []byte{prefixShard}
	shardUpper = []byte{prefixShard + 1}
	liveLower  = []byte{prefixLive}
	liveUpper  = []byte{prefixLive + 1}
	touchLower = []byte{prefixTouch}
	pgLower    = []byte{prefixPG}
	pgUpper    = []byte{prefixPG + 1}
	touchUpper = []byte{prefixTouch + 1}
)

func appendTouchKey(dst []byte, id chunk.ID) []byte {
	dst = append(dst, prefixTouch)
	return append(dst, id[:]...)
}

// chunkShardBounds returns the index key range holding every shard of id.
func chunkShardBounds(id chunk.ID) (lower, upper []byte) {
	lower = appendShardKey(nil, chunkstore.ShardKey{ID: id})
	upper = append(appendShardKey(nil, chunkstore.ShardKey{ID: id, Index: 255}), 0)
	return lower, upper
}

func encodeNanos(ns int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(ns)) }

func parseNanos(b []byte) (int64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("segstore: malformed time value (%d bytes)", len(b))
	}
	return int64(binary.BigEndian.Uint64(b)), nil
}

func appendShardKey(dst []byte, k chunkstore.ShardKey) []byte {
	dst = append(dst, prefixShard)
	dst = append(dst, k.ID[:]...)
	return append(dst, k.Index)
}

func parseShardKey(b []byte) (chunkstore.ShardKey, error) {
	if len(b) != shardKeyLen || b[0] != prefixShard {
		return chunkstore.ShardKey{}, fmt.Errorf("segstore: malformed index key %x", b)
	}
	return chunkstore.ShardKey{ID: chunk.ID(b[1 : 1+chunk.Size]), Index: b[1+chunk.Size]}, nil
}

// appendPGKey appends k's PG listing key: 'p', chunkstore.PGSortKey (so that the shards
// of one PG are one key range under any power-of-two PG count up to 65536), chunk ID,
// index.
func appendPGKey(dst []byte, k chunkstore.ShardKey) []byte {
	dst = append(dst, prefixPG)
	dst = binary.BigEndian.AppendUint16(dst, chunkstore.PGSortKey(k.ID))
	dst = append(dst, k.ID[:]...)
	return append(dst, k.Index)
}

// pgBound returns the smallest PG listing key with sort key sk (sk may be 65536: the end
// of the PG key space).
func pgBound(sk uint32) []byte {
	if sk >= chunkstore.PGBuckets {
		return pgUpper
	}
	return binary.BigEndian.AppendUint16([]byte{prefixPG}, uint16(sk))
}

func parsePGKey(b []byte) (chunkstore.ShardKey, error) {
	if len(b) != pgKeyLen || b[0] != prefixPG {
		return chunkstore.ShardKey{}, fmt.Errorf("segstore: malformed PG index key %x", b)
	}
	k := chunkstore.ShardKey{ID: chunk.ID(b[3 : 3+chunk.Size]), Index: b[3+chunk.Size]}
	if binary.BigEndian.Uint16(b[1:3]) != chunkstore.PGSortKey(k.ID) {
		return chunkstore.ShardKey{}, fmt.Errorf("segstore: PG index key %x under the wrong sort key", b)
	}
	return k, nil
}

// appendPGValue encodes what a PG listing reports of v (no location, so compaction,
// which moves records, leaves PG listing keys alone):
// version(1)=1 dataLen(4) K(1) M(1) chunkLen(4) chunkCRC(4) writerLen(2) writer.
func appendPGValue(dst []byte, v *indexValue) []byte {
	dst = append(dst, pgValueVersion)
	dst = binary.BigEndian.AppendUint32(dst, uint32(v.loc.dataLen))
	dst = append(dst, v.meta.K, v.meta.M)
	dst = binary.BigEndian.AppendUint32(dst, v.meta.ChunkLen)
	dst = binary.BigEndian.AppendUint32(dst, v.meta.ChunkCRC)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(v.meta.Writer)))
	return append(dst, v.meta.Writer...)
}

// parsePGValue decodes a PG listing value into meta and data length.
func parsePGValue(b []byte) (chunkstore.ShardMeta, uint32, error) {
	if len(b) < pgValueBase || b[0] != pgValueVersion {
		return chunkstore.ShardMeta{}, 0, fmt.Errorf("segstore: malformed PG index value (%d bytes)", len(b))
	}
	w := int(binary.BigEndian.Uint16(b[15:17]))
	if len(b) != pgValueBase+w {
		return chunkstore.ShardMeta{}, 0, fmt.Errorf("segstore: malformed PG index value (%d bytes, writer %d)", len(b), w)
	}
	return chunkstore.ShardMeta{
		K: b[5], M: b[6],
		ChunkLen: binary.BigEndian.Uint32(b[7:11]),
		ChunkCRC: binary.BigEndian.Uint32(b[11:15]),
		Writer:   string(b[pgValueBase:]),
	}, binary.BigEndian.Uint32(b[1:5]), nil
}

func liveKey(seg uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{prefixLive}, seg)
}

// location is where a put record sits: the part of an index value needed to read it.
type location struct {
	seg       uint32
	off       int64 // offset of the record in the segment file
	dataLen   int
	writerLen int
}

func (l location) recordLen() int64 { return recordLen(l.writerLen, l.dataLen) }

// dataOff is the offset of the shard's data bytes in the segment file.
func (l location) dataOff() int64 { return l.off + recHeaderSize + int64(l.writerLen) }

// indexValue is one shard's index entry.
type indexValue struct {
	loc     location
	meta    chunkstore.ShardMeta
	dataCRC uint32
}

// appendIndexValue encodes v:
// version(1) segment(4) offset(8) dataLen(4) K(1) M(1) chunkLen(4) chunkCRC(4)
// dataCRC(4) writerLen(2) writer.
func appendIndexValue(dst []byte, v *indexValue) []byte {
	dst = append(dst, indexValueVersion)
	dst = binary.BigEndian.AppendUint32(dst, v.loc.seg)
	dst = binary.BigEndian.AppendUint64(dst, uint64(v.loc.off))
	dst = binary.BigEndian.AppendUint32(dst, uint32(v.loc.dataLen))
	dst = append(dst, v.meta.K, v.meta.M)
	dst = binary.BigEndian.AppendUint32(dst, v.meta.ChunkLen)
	dst = binary.BigEndian.AppendUint32(dst, v.meta.ChunkCRC)
	dst = binary.BigEndian.AppendUint32(dst, v.dataCRC)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(v.meta.Writer)))
	return append(dst, v.meta.Writer...)
}

// parseLocation decodes the location part of an index value without allocating.
func parseLocation(b []byte) (location, error) {
	if len(b) < indexValueBase || b[0] != indexValueVersion {
		return location{}, fmt.Errorf("segstore: malformed index value (%d bytes)", len(b))
	}
	loc := location{
		seg:       binary.BigEndian.Uint32(b[1:5]),
		off:       int64(binary.BigEndian.Uint64(b[5:13])),
		dataLen:   int(binary.BigEndian.Uint32(b[13:17])),
		writerLen: int(binary.BigEndian.Uint16(b[31:33])),
	}
	if len(b) != indexValueBase+loc.writerLen {
		return location{}, fmt.Errorf("segstore: malformed index value (%d bytes, writer %d)", len(b), loc.writerLen)
	}
	return loc, nil
}

// parseIndexValue decodes a whole index value; the writer string is copied.
func parseIndexValue(b []byte) (indexValue, error) {
	loc, err := parseLocation(b)
	if err != nil {
		return indexValue{}, err
	}
	return indexValue{
		loc: loc,
		meta: chunkstore.ShardMeta{
			K: b[17], M: b[18],
			ChunkLen: binary.BigEndian.Uint32(b[19:23]),
			ChunkCRC: binary.BigEndian.Uint32(b[23:27]),
			Writer:   string(b[indexValueBase:]),
		},
		dataCRC: binary.BigEndian.Uint32(b[27:31]),
	}, nil
}

// checkpoint is the position up to which every segment record is reflected in the index.
type checkpoint struct {
	seg uint32
	off int64
}

func (c checkpoint) encode() []byte {
	b := binary.BigEndian.AppendUint32(nil, c.seg)
	return binary.BigEndian.AppendUint64(b, uint64(c.off))
}

func parseCheckpoint(b []byte) (checkpoint, error) {
	if len(b) != 12 {
		return checkpoint{}, fmt.Errorf("segstore: malformed checkpoint (%d bytes)", len(b))
	}
	return checkpoint{seg: binary.BigEndian.Uint32(b[0:4]), off: int64(binary.BigEndian.Uint64(b[4:12]))}, nil
}

func encodeCounters(shards, bytes int64) []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(shards))
	return binary.BigEndian.AppendUint64(b, uint64(bytes))
}

func parseCounters(b []byte) (shards, bytes int64, err error) {
	if len(b) != 16 {
		return 0, 0, fmt.Errorf("segstore: malformed counters (%d bytes)", len(b))
	}
	return int64(binary.BigEndian.Uint64(b[0:8])), int64(binary.BigEndian.Uint64(b[8:16])), nil
}
