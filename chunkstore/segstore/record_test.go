package segstore

import (
	"bytes"
	"testing"

	"github.com/cofferhq/coffer/chunkstore"
)

func TestRecordRoundTrip(t *testing.T) {
	sh := mkShard(7, 3, 333)
	sh.Meta.Writer = "agent/röund-trip"
	var buf []byte
	buf = appendPut(buf, &sh, crcOf(sh.Data))
	putLen := len(buf)
	if int64(putLen) != recordLen(len(sh.Meta.Writer), len(sh.Data)) {
		t.Fatalf("put record is %d bytes, recordLen says %d", putLen, recordLen(len(sh.Meta.Writer), len(sh.Data)))
	}
	buf = appendDelete(buf, sh.Key)
	r := bytes.NewReader(buf)

	h, writer, _, err := scanRecord(r, 0, int64(len(buf)), nil)
	if err != nil {
		t.Fatalf("scan put: %v", err)
	}
	if h.typ != recPut || h.key != sh.Key || h.k != sh.Meta.K || h.m != sh.Meta.M ||
		h.chunkLen != sh.Meta.ChunkLen || h.chunkCRC != sh.Meta.ChunkCRC || string(writer) != sh.Meta.Writer ||
		h.dataLen != len(sh.Data) || h.dataCRC != crcOf(sh.Data) {
		t.Fatalf("decoded put header %+v writer %q does not match the shard", h, writer)
	}
	dataOff := recHeaderSize + len(sh.Meta.Writer)
	if !bytes.Equal(buf[dataOff:dataOff+len(sh.Data)], sh.Data) {
		t.Fatal("data is not stored verbatim after the writer")
	}
	h, _, _, err = scanRecord(r, int64(putLen), int64(len(buf)), nil)
	if err != nil || h.typ != recDelete || h.key != sh.Key || h.recordLen() != recordLen(0, 0) {
		t.Fatalf("scan delete: %+v, %v", h, err)
	}
}

func TestRecordDamageDetected(t *testing.T) {
	sh := mkShard(1, 0, 100)
	rec := appendPut(nil, &sh, crcOf(sh.Data))
	for _, off := range []int{0, 4, 5, 7, 20, 40, 43, 45, 53, 57, recHeaderSize + 2, recHeaderSize + 50, len(rec) - 1} {
		bad := bytes.Clone(rec)
		bad[off] ^= 0x40
		if _, _, _, err := scanRecord(bytes.NewReader(bad), 0, int64(len(bad)), nil); !isBadRecord(err) {
			t.Errorf("flipping byte %d: scanRecord = %v, want a bad-record error", off, err)
		}
	}
	// Truncated at any point: bad, never a panic or an I/O error.
	for n := range len(rec) {
		if _, _, _, err := scanRecord(bytes.NewReader(rec[:n]), 0, int64(n), nil); !isBadRecord(err) {
			t.Fatalf("record cut to %d bytes: scanRecord = %v, want a bad-record error", n, err)
		}
	}
}

func TestFindNextRecord(t *testing.T) {
	a, b := mkShard(1, 0, 50), mkShard(2, 0, 60)
	junk := []byte("xxCFSRyy not a record CFSR")
	buf := append(appendPut(nil, &a, crcOf(a.Data)), junk...)
	bStart := len(buf)
	buf = appendPut(buf, &b, crcOf(b.Data))
	r := bytes.NewReader(buf)
	next, err := findNextRecord(r, 1, int64(len(buf)))
	if err != nil || next != int64(bStart) {
		t.Fatalf("findNextRecord from 1 = %d, %v; want %d (the false magics skipped)", next, err, bStart)
	}
	next, err = findNextRecord(r, int64(bStart)+1, int64(len(buf)))
	if err != nil || next != -1 {
		t.Fatalf("findNextRecord past the last record = %d, %v; want -1", next, err)
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
	if err := checkFileHeader([]byte("CFSG\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02"), 2); err != nil {
		t.Errorf("valid header rejected: %v", err)
	}
	if err := checkFileHeader([]byte("CFSG\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02"), 3); err == nil {
		t.Error("header for segment 2 accepted as segment 3")
	}
}

// FuzzScanRecord: arbitrary bytes never panic the decoder, and whatever it accepts
// re-encodes to the same bytes.
func FuzzScanRecord(f *testing.F) {
	sh := mkShard(1, 2, 40)
	f.Add(appendPut(nil, &sh, crcOf(sh.Data)))
	f.Add(appendDelete(nil, sh.Key))
	f.Add([]byte("CFSR"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, writer, _, err := scanRecord(bytes.NewReader(b), 0, int64(len(b)), nil)
		if err != nil {
			if !isBadRecord(err) {
				t.Fatalf("non-record error from in-memory bytes: %v", err)
			}
			return
		}
		var re []byte
		switch h.typ {
		case recPut:
			n := recHeaderSize + h.writerLen
			s := chunkstore.Shard{
				Key:  h.key,
				Meta: chunkstore.ShardMeta{K: h.k, M: h.m, ChunkLen: h.chunkLen, ChunkCRC: h.chunkCRC, Writer: string(writer)},
				Data: b[n : n+h.dataLen],
			}
			re = appendPut(nil, &s, h.dataCRC)
		case recDelete:
			re = appendDelete(nil, h.key)
		}
		if !bytes.Equal(re, b[:h.recordLen()]) {
			t.Fatal("accepted record does not re-encode to the same bytes")
		}
	})
}
