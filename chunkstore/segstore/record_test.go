package segstore

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/chunkstore"
)

// testSalt is a fixed salt for record tests (stores make theirs at random).
var testSalt = bytes.Repeat([]byte{0x5c}, saltSize)

// boundRecords encodes recs back to back as the writer appends them to segment seg
// starting at offset base: each bound to its place with bd.
func boundRecords(bd *binder, seg uint32, base int64, recs ...[]byte) []byte {
	var out []byte
	for _, r := range recs {
		r = bytes.Clone(r)
		bd.bind(r, seg, base+int64(len(out)))
		out = append(out, r...)
	}
	return out
}

// placed reads a buffer as if it started at file offset base.
type placed struct {
	b    []byte
	base int64
}

func (p placed) ReadAt(b []byte, off int64) (int, error) {
	return bytes.NewReader(p.b).ReadAt(b, off-p.base)
}

func TestRecordRoundTrip(t *testing.T) {
	bd := newBinder(testSalt)
	sh := mkShard(7, 3, 333)
	sh.Meta.Writer = "agent/röund-trip"
	put := appendPut(nil, &sh, crcOf(sh.Data))
	putLen := len(put)
	if int64(putLen) != recordLen(len(sh.Meta.Writer), len(sh.Data)) || encodedLen(put) != int64(putLen) {
		t.Fatalf("put record is %d bytes, recordLen says %d", putLen, recordLen(len(sh.Meta.Writer), len(sh.Data)))
	}
	const base = 4096
	buf := boundRecords(bd, 9, base, put, appendDelete(nil, sh.Key))
	r := placed{buf, base}
	end := int64(base + len(buf))

	h, writer, _, err := scanRecord(r, bd, 9, base, end, nil)
	if err != nil {
		t.Fatalf("scan put: %v", err)
	}
	if h.typ != recPut || h.key != sh.Key || h.k != sh.Meta.K || h.m != sh.Meta.M ||
		h.chunkLen != sh.Meta.ChunkLen || h.chunkCRC != sh.Meta.ChunkCRC || string(writer) != sh.Meta.Writer ||
		h.dataLen != len(sh.Data) || h.dataCRC != crcOf(sh.Data) || h.seg != 9 || h.off != base {
		t.Fatalf("decoded put header %+v writer %q does not match the shard", h, writer)
	}
	dataOff := recHeaderSize + len(sh.Meta.Writer)
	if !bytes.Equal(buf[dataOff:dataOff+len(sh.Data)], sh.Data) {
		t.Fatal("data is not stored verbatim after the writer")
	}
	h, _, _, err = scanRecord(r, bd, 9, base+int64(putLen), end, nil)
	if err != nil || h.typ != recDelete || h.key != sh.Key || h.recordLen() != recordLen(0, 0) {
		t.Fatalf("scan delete: %+v, %v", h, err)
	}
}

// TestRecordBoundToPlace: a valid record is valid only where it was bound, and only for
// the store whose salt bound it.
func TestRecordBoundToPlace(t *testing.T) {
	bd := newBinder(testSalt)
	sh := mkShard(1, 0, 100)
	rec := boundRecords(bd, 3, 1000, appendPut(nil, &sh, crcOf(sh.Data)))
	n := int64(len(rec))
	if _, _, _, err := scanRecord(placed{rec, 1000}, bd, 3, 1000, 1000+n, nil); err != nil {
		t.Fatalf("record at its place: %v", err)
	}
	for _, tc := range []struct {
		name string
		bd   *binder
		seg  uint32
		off  int64
	}{
		{"another offset", bd, 3, 2000},
		{"another segment", bd, 4, 1000},
		{"another store's salt", newBinder(bytes.Repeat([]byte{1}, saltSize)), 3, 1000},
	} {
		_, _, _, err := scanRecord(placed{rec, tc.off}, tc.bd, tc.seg, tc.off, tc.off+n, nil)
		var bad *badRecord
		if !errors.As(err, &bad) || bad.authentic {
			t.Errorf("%s: scanRecord = %v, want an unauthentic bad record", tc.name, err)
		}
	}
	// Unbound (as encoded, before the writer placed it): never valid.
	un := appendPut(nil, &sh, crcOf(sh.Data))
	if _, _, _, err := scanRecord(bytes.NewReader(un), bd, 0, 0, int64(len(un)), nil); !errors.Is(err, errBadRecord) {
		t.Errorf("unbound record: scanRecord = %v, want a bad record", err)
	}
}

func TestRecordDamageDetected(t *testing.T) {
	bd := newBinder(testSalt)
	sh := mkShard(1, 0, 100)
	rec := boundRecords(bd, 1, 0, appendPut(nil, &sh, crcOf(sh.Data)))
	for _, off := range []int{0, 4, 5, 7, 20, 40, 43, 45, 53, 57, 61, 70, 72, 87, recHeaderSize + 2, recHeaderSize + 50, len(rec) - 1} {
		bad := bytes.Clone(rec)
		bad[off] ^= 0x40
		_, _, _, err := scanRecord(bytes.NewReader(bad), bd, 1, 0, int64(len(bad)), nil)
		var br *badRecord
		if !errors.As(err, &br) {
			t.Fatalf("flipping byte %d: scanRecord = %v, want a bad-record error", off, err)
		}
		// Only damage to the data leaves the header authentic, with its extent known.
		if inData := off >= recHeaderSize+len(sh.Meta.Writer); br.authentic != inData || (inData && br.end != int64(len(rec))) {
			t.Errorf("flipping byte %d: %+v", off, br)
		}
	}
	// Truncated at any point: bad, never a panic or an I/O error.
	for n := range len(rec) {
		if _, _, _, err := scanRecord(bytes.NewReader(rec[:n]), bd, 1, 0, int64(n), nil); !errors.Is(err, errBadRecord) {
			t.Fatalf("record cut to %d bytes: scanRecord = %v, want a bad-record error", n, err)
		}
	}
}

func TestIndexValueRoundTrip(t *testing.T) {
	v := indexValue{
		loc:     location{seg: 42, off: 1 << 33, dataLen: 12345, writerLen: 5},
		meta:    chunkstore.ShardMeta{K: 10, M: 4, ChunkLen: 99, ChunkCRC: 0xfeedface, Writer: "agent"},
		dataCRC: 0x12345678,
	}
	b := appendIndexValue(nil, &v)
	got, err := parseIndexValue(b)
	if err != nil || got != v {
		t.Fatalf("parseIndexValue = %+v, %v; want %+v", got, err, v)
	}
	if _, err := parseLocation(b[:len(b)-1]); err == nil {
		t.Error("parseLocation accepted a truncated value")
	}
	k := chunkstore.ShardKey{ID: tid(3), Index: 9}
	if got, err := parseShardKey(appendShardKey(nil, k)); err != nil || got != k {
		t.Errorf("shard key round trip = %v, %v", got, err)
	}
	cp := checkpoint{seg: 7, off: 1 << 40}
	if got, err := parseCheckpoint(cp.encode()); err != nil || got != cp {
		t.Errorf("checkpoint round trip = %v, %v", got, err)
	}
}

func TestSegmentNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		num  uint32
		ok   bool
	}{
		{"seg-00000001.log", 1, true},
		{"seg-12345678.log", 12345678, true},
		{"seg-4294967295.log", 4294967295, true},
		{"seg-00000000.log", 0, false},
		{"seg-1.log", 0, false},
		{"seg-0000000x.log", 0, false},
		{"seg-00000001.log.tmp", 0, false},
		{"LOCK", 0, false},
	} {
		num, ok := parseSegName(tc.name)
		if num != tc.num || ok != tc.ok {
			t.Errorf("parseSegName(%q) = %d, %v; want %d, %v", tc.name, num, ok, tc.num, tc.ok)
		}
	}
	if err := checkFileHeader([]byte("CFSG\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02"), 2); err != nil {
		t.Errorf("valid header rejected: %v", err)
	}
	if err := checkFileHeader([]byte("CFSG\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02"), 3); err == nil {
		t.Error("header for segment 2 accepted as segment 3")
	}
	err := checkFileHeader([]byte("CFSG\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02"), 2)
	if err == nil || !strings.Contains(err.Error(), "version 1") {
		t.Errorf("version 1 header: %v, want it refused naming the version", err)
	}
}
