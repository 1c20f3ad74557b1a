package segstore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cofferhq/coffer/chunkstore"
)

// FuzzScanRecord decodes arbitrary bytes as a record bound to segment seg at offset
// off. It must never panic, every error must be a bad record, and whatever it accepts
// names that place, re-encodes (and re-binds) to the same bytes, and is refused at any
// other place.
func FuzzScanRecord(f *testing.F) {
	bd := newBinder(testSalt)
	sh := mkShard(1, 2, 40)
	f.Add(boundRecords(bd, 1, fileHeaderSize, appendPut(nil, &sh, crcOf(sh.Data))), uint32(1), uint32(fileHeaderSize))
	f.Add(boundRecords(bd, 7, 1<<20, appendDelete(nil, sh.Key)), uint32(7), uint32(1<<20))
	f.Add(appendPut(nil, &sh, crcOf(sh.Data)), uint32(0), uint32(0)) // unbound
	f.Add(v1Record(recPut, &sh), uint32(1), uint32(fileHeaderSize))  // the old format
	f.Add([]byte("CFSR"), uint32(1), uint32(16))
	f.Fuzz(func(t *testing.T, b []byte, seg, off32 uint32) {
		off := int64(off32)
		h, writer, _, err := scanRecord(placed{b, off}, bd, seg, off, off+int64(len(b)), nil)
		if err != nil {
			if !errors.Is(err, errBadRecord) {
				t.Fatalf("non-record error from in-memory bytes: %v", err)
			}
			return
		}
		if h.seg != seg || h.off != off {
			t.Fatalf("accepted a record naming segment %d offset %d at segment %d offset %d", h.seg, h.off, seg, off)
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
		bd.bind(re, seg, off)
		if !bytes.Equal(re, b[:h.recordLen()]) {
			t.Fatal("accepted record does not re-encode to the same bytes")
		}
		if _, _, _, err := scanRecord(placed{b, off + 1}, bd, seg, off+1, off+1+int64(len(b)), nil); err == nil {
			t.Fatal("record accepted one byte away from its place")
		}
		if _, _, _, err := scanRecord(placed{b, off}, bd, seg+1, off, off+int64(len(b)), nil); err == nil {
			t.Fatal("record accepted in another segment")
		}
	})
}

// FuzzIndexValue decodes arbitrary bytes as an index value: never a panic, and what it
// accepts re-encodes to the same bytes and agrees with parseLocation.
func FuzzIndexValue(f *testing.F) {
	f.Add(appendIndexValue(nil, &indexValue{
		loc:     location{seg: 3, off: 4096, dataLen: 1 << 20, writerLen: 10},
		meta:    chunkstore.ShardMeta{K: 4, M: 2, ChunkLen: 4 << 20, ChunkCRC: 7, Writer: "agent/test"},
		dataCRC: 99,
	}))
	f.Add(appendIndexValue(nil, &indexValue{}))
	f.Add([]byte{indexValueVersion})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := parseIndexValue(b)
		loc, lerr := parseLocation(b)
		if (err == nil) != (lerr == nil) {
			t.Fatalf("parseIndexValue error %v, parseLocation error %v", err, lerr)
		}
		if err != nil {
			return
		}
		if loc != v.loc {
			t.Fatalf("parseLocation %+v, parseIndexValue %+v", loc, v.loc)
		}
		if re := appendIndexValue(nil, &v); !bytes.Equal(re, b) {
			t.Fatalf("index value %x re-encodes to %x", b, re)
		}
	})
}

// FuzzRecoverTail appends arbitrary bytes to the last segment of a store holding
// acknowledged shards (one of them an agent's, carrying forged records) and opens it,
// replaying from the checkpoint or, with rebuild, from the segments alone. Open must
// succeed without panicking, never cut into acknowledged records, leave every
// acknowledged shard intact, and index nothing that does not read back bound to its
// place (GetShard checks the binding).
func FuzzRecoverTail(f *testing.F) {
	tmpl := f.TempDir()
	opts := Options{DisableAutoCompact: true, NoSync: true}
	s, err := Open(tmpl, opts)
	if err != nil {
		f.Fatal(err)
	}
	y1, y2 := mkShard(1, 0, 300), mkShard(2, 1, 300)
	payload, _ := forgedPayload(y1.Key, y2.Key)
	x := mkShard(3, 0, 0)
	x.Data = payload
	acked := []chunkstore.Shard{y1, y2, x}
	if err := s.PutShards(context.Background(), acked); err != nil {
		f.Fatal(err)
	}
	segs, err := s.Segments()
	if err != nil || len(segs) != 1 {
		f.Fatalf("Segments = %v, %v", segs, err)
	}
	ackedSize := segs[0].Size
	if err := s.Close(); err != nil {
		f.Fatal(err)
	}
	salt, err := os.ReadFile(filepath.Join(tmpl, saltFileName))
	if err != nil {
		f.Fatal(err)
	}
	bd := newBinder(salt[8 : 8+saltSize])
	wrong := newBinder(testSalt)

	// Seeds: a torn record whose data carries forged records; forged records bound to
	// the exact place with the wrong salt; a genuine record torn in its data; zeros.
	f.Add(append(make([]byte, recHeaderSize), payload...), false)
	evil := mkShard(666, 0, 64)
	f.Add(boundRecords(wrong, 1, ackedSize, appendDelete(nil, y1.Key), appendPut(nil, &evil, crcOf(evil.Data))), true)
	genuine := boundRecords(bd, 1, ackedSize, appendPut(nil, &evil, crcOf(evil.Data)))
	f.Add(genuine[:len(genuine)-10], false)
	f.Add(append(bytes.Clone(genuine), payload...), true)
	f.Add(make([]byte, 4096), false)

	f.Fuzz(func(t *testing.T, tail []byte, rebuild bool) {
		dir := t.TempDir()
		copyDir(t, tmpl, dir)
		if rebuild {
			if err := os.RemoveAll(filepath.Join(dir, "index")); err != nil {
				t.Fatal(err)
			}
		}
		seg := filepath.Join(dir, segName(1))
		appendFile(t, seg, tail)
		s, err := Open(dir, opts)
		if err != nil {
			t.Fatalf("Open with a %d-byte tail: %v", len(tail), err)
		}
		defer s.Close()
		if got := fileSize(t, seg); got < ackedSize {
			t.Fatalf("recovery cut the segment to %d bytes, into acknowledged records ending at %d", got, ackedSize)
		}
		for _, sh := range acked {
			expectShard(t, s, sh)
		}
		err = s.EnumerateShards(context.Background(), nil, func(i chunkstore.ShardInfo) error {
			_, err := s.GetShard(context.Background(), i.Key)
			return err
		})
		if err != nil {
			t.Fatalf("an indexed shard does not read back bound to its place: %v", err)
		}
	})
}
