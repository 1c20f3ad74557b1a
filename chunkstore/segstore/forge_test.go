package segstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/chunkstore"
)

// v1Record encodes a record in segment format version 1 (FORMAT.md before records were
// bound to their place): the encoder an attacker who knows the old format would use.
// A delete has no meta, writer or data.
func v1Record(typ byte, s *chunkstore.Shard) []byte {
	b := make([]byte, 60, 64+len(s.Meta.Writer)+len(s.Data))
	copy(b[0:4], "CFSR")
	b[4], b[5] = 1, typ
	copy(b[8:40], s.Key.ID[:])
	b[40] = s.Key.Index
	if typ == 1 {
		binary.BigEndian.PutUint16(b[6:8], uint16(len(s.Meta.Writer)))
		b[41], b[42] = s.Meta.K, s.Meta.M
		binary.BigEndian.PutUint32(b[44:48], s.Meta.ChunkLen)
		binary.BigEndian.PutUint32(b[48:52], s.Meta.ChunkCRC)
		binary.BigEndian.PutUint32(b[52:56], uint32(len(s.Data)))
		binary.BigEndian.PutUint32(b[56:60], crcOf(s.Data))
		b = append(b, s.Meta.Writer...)
		b = append(b, s.Data...)
	}
	return binary.BigEndian.AppendUint32(b, crcOf(b))
}

// forgedPayload is agent-chosen shard data that carries well-formed records: a delete of
// victim and a delete and put that replace replaced with evil bytes.
func forgedPayload(victim, replaced chunkstore.ShardKey) (payload []byte, evil chunkstore.Shard) {
	evil = mkShard(666, replaced.Index, 300)
	evil.Key = replaced
	payload = append(payload, bytes.Repeat([]byte{0xA5}, 97)...)
	payload = append(payload, v1Record(recDelete, &chunkstore.Shard{Key: victim})...)
	payload = append(payload, v1Record(recDelete, &chunkstore.Shard{Key: replaced})...)
	payload = append(payload, v1Record(recPut, &evil)...)
	return append(payload, bytes.Repeat([]byte{0x5A}, 61)...), evil
}

// TestForgedRecordInTornTailNotApplied is issue 11's attack on crash recovery: an agent
// stores shards whose data holds well-formed records, and a crash tears the write of one
// of them (the page with its record header is lost, its data pages reached the disk).
// Recovery must truncate the torn tail without reading records out of its payload: every
// acknowledged shard reads back intact and the forged delete and put are not applied.
func TestForgedRecordInTornTailNotApplied(t *testing.T) {
	dir := t.TempDir()
	opts := Options{DisableAutoCompact: true} // sync on
	s := mustOpen(t, dir, opts)
	y1, y2 := mkShard(1, 0, 700), mkShard(2, 1, 700)
	payload, evil := forgedPayload(y1.Key, y2.Key)
	x := mkShard(3, 0, 0)
	x.Data = payload // acknowledged agent data that carries forged records
	mustPut(t, s, y1, y2, x)
	mustClose(t, s)

	seg := filepath.Join(dir, segName(1))
	size := fileSize(t, seg)
	torn := mkShard(4, 0, 0)
	torn.Data = payload
	// The torn record: header never reached the disk (zeros), its data did. The data
	// carries old-format records and records in the current format bound, with a guessed
	// salt, to the very place where they sit.
	tail := make([]byte, 200)
	tail = append(tail, payload...)
	guess := newBinder(bytes.Repeat([]byte{0x42}, saltSize))
	at := size + int64(len(tail))
	tail = append(tail, boundRecords(guess, 1, at, appendDelete(nil, y1.Key), appendDelete(nil, y2.Key), appendPut(nil, &evil, crcOf(evil.Data)))...)
	appendFile(t, seg, tail)

	s = mustOpen(t, dir, opts)
	defer mustClose(t, s)
	for _, sh := range []chunkstore.Shard{y1, y2, x} {
		expectShard(t, s, sh)
	}
	if got, err := s.GetShard(context.Background(), evil.Key); err == nil && bytes.Equal(got.Data, evil.Data) {
		t.Fatal("the forged put replaced an acknowledged shard")
	}
	if st := stats(t, s); st.Shards != 3 {
		t.Errorf("shards = %d after recovery, want the 3 acknowledged", st.Shards)
	}
	if got := fileSize(t, seg); got != size {
		t.Errorf("segment is %d bytes after recovery, want the torn tail cut back to %d", got, size)
	}
	if d := s.Damage(); len(d) != 0 {
		t.Errorf("a torn tail was reported as damage: %v", d)
	}
}

// TestMidSegmentDamageStopsAtIt damages, in the middle of a segment, the header of an
// acknowledged agent shard whose data carries forged records, and rebuilds the index
// from the segments. Recovery must not look for records inside
// what follows: the forged delete and put are not applied, the damage is reported as
// corruption, the segment is kept as it is, and the store opens and keeps working.
func TestMidSegmentDamageStopsAtIt(t *testing.T) {
	dir := t.TempDir()
	opts := Options{DisableAutoCompact: true, NoSync: true, SegmentSize: MinSegmentSize}
	s := mustOpen(t, dir, opts)
	p, q := mkShard(1, 0, 500), mkShard(2, 1, 500)
	mustPut(t, s, p, q)
	a := mkShard(3, 0, 500)
	mustPut(t, s, a)
	payload, evil := forgedPayload(p.Key, q.Key)
	x := mkShard(4, 0, 0)
	x.Data = payload
	mustPut(t, s, x)
	z := mkShard(5, 0, 3000) // rolls to segment 2
	mustPut(t, s, z)
	path, off, _, err := s.Locate(x.Key)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(path) != segName(1) {
		t.Fatalf("shard x is in %s, want segment 1", path)
	}
	mustClose(t, s)
	size := fileSize(t, path)
	flipByte(t, path, off-int64(len(x.Meta.Writer))-50) // inside x's record header
	if err := os.RemoveAll(filepath.Join(dir, "index")); err != nil {
		t.Fatal(err)
	}

	s = mustOpen(t, dir, opts)
	defer mustClose(t, s)
	expectShard(t, s, p)
	expectShard(t, s, q)
	expectShard(t, s, a)
	expectShard(t, s, z)
	if got, err := s.GetShard(context.Background(), evil.Key); err == nil && bytes.Equal(got.Data, evil.Data) {
		t.Fatal("a forged put from a payload replaced an acknowledged shard")
	}
	if got := fileSize(t, path); got != size {
		t.Errorf("segment 1 is %d bytes after recovery, want it untouched (%d): damage mid-segment is left to repair", got, size)
	}
	expectMissing(t, s, x.Key) // lost to this node; repair writes it again
	xOff := off - int64(len(x.Meta.Writer)) - recHeaderSize
	expectDamage(t, s, 1, xOff)
	w := mkShard(6, 0, 400)
	mustPut(t, s, w)
	expectShard(t, s, w)
}

// expectDamage checks that s reported damage at segment seg, offset off, as
// chunkstore.ErrCorrupt, and counts it in Stats.
func expectDamage(t *testing.T, s *Store, seg uint32, off int64) {
	t.Helper()
	var found bool
	for _, d := range s.Damage() {
		if !errors.Is(d.Err, chunkstore.ErrCorrupt) {
			t.Errorf("damage report %v does not wrap ErrCorrupt", d.Err)
		}
		found = found || (d.Segment == seg && d.Offset == off)
	}
	if !found {
		t.Errorf("no damage reported at segment %d offset %d; reports: %v", seg, off, s.Damage())
	}
	if st := stats(t, s); st.Corrupt < 1 {
		t.Errorf("Stats.Corrupt = %d, want the damage counted", st.Corrupt)
	}
}

// TestDamageInLastSegmentMovesWriter: recovery stops at damage in the segment being
// appended to without truncating it, and the writer moves to a new segment, so that
// records acknowledged later are never behind damage that recovery stops at.
func TestDamageInLastSegmentMovesWriter(t *testing.T) {
	dir := t.TempDir()
	opts := Options{DisableAutoCompact: true, NoSync: true}
	s := mustOpen(t, dir, opts)
	a, x, b := mkShard(1, 0, 500), mkShard(2, 0, 500), mkShard(3, 0, 500)
	mustPut(t, s, a)
	mustPut(t, s, x)
	mustPut(t, s, b)
	path, off, _, err := s.Locate(x.Key)
	if err != nil {
		t.Fatal(err)
	}
	mustClose(t, s)
	size := fileSize(t, path)
	xOff := off - int64(len(x.Meta.Writer)) - recHeaderSize
	flipByte(t, path, xOff+recTagOff+3) // x's tag
	if err := os.RemoveAll(filepath.Join(dir, "index")); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, dir, opts)
	expectShard(t, s, a)
	expectMissing(t, s, x.Key)
	expectMissing(t, s, b.Key) // behind the damage: recovery does not guess where it is
	expectDamage(t, s, 1, xOff)
	if got := fileSize(t, path); got != size {
		t.Errorf("segment 1 is %d bytes, want it left at %d", got, size)
	}
	c := mkShard(4, 0, 500)
	mustPut(t, s, c)
	if p, _, _, err := s.Locate(c.Key); err != nil || filepath.Base(p) != segName(2) {
		t.Errorf("a put after recovery went to %s (%v), want segment 2", p, err)
	}
	mustClose(t, s)
	if err := os.RemoveAll(filepath.Join(dir, "index")); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, dir, opts)
	defer mustClose(t, s)
	expectShard(t, s, a)
	expectShard(t, s, c)
}

// TestSaltFile: the salt is made once, kept beside the index (which may be rebuilt),
// and a store whose segments have no salt, or whose salt file is damaged, is refused
// with an error naming the file.
func TestSaltFile(t *testing.T) {
	dir := t.TempDir()
	opts := Options{DisableAutoCompact: true, NoSync: true}
	s := mustOpen(t, dir, opts)
	a := mkShard(1, 0, 300)
	mustPut(t, s, a)
	mustClose(t, s)
	saltPath := filepath.Join(dir, saltFileName)
	salt, err := os.ReadFile(saltPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "index")); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, dir, opts) // rebuilds the index: the salt is not in it
	expectShard(t, s, a)
	mustClose(t, s)
	if again, err := os.ReadFile(saltPath); err != nil || !bytes.Equal(again, salt) {
		t.Fatalf("salt file changed across opens (%v)", err)
	}

	flipByte(t, saltPath, 12)
	if s, err := Open(dir, opts); err == nil {
		s.Close()
		t.Fatal("Open accepted a damaged salt file")
	} else if !errors.Is(err, errBadSaltFile) || !strings.Contains(err.Error(), saltPath) {
		t.Errorf("damaged salt file: %v", err)
	}
	if err := os.Remove(saltPath); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(dir, opts); err == nil {
		s.Close()
		t.Fatal("Open accepted segments without their salt file")
	} else if !strings.Contains(err.Error(), saltPath) {
		t.Errorf("missing salt file: %v", err)
	}
	if _, err := os.Stat(saltPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open made a new salt for existing segments (%v)", err)
	}
}

// TestVersion1SegmentRefused: a segment in the old, unbound format is refused with an
// error naming the file and the version, not read (FORMAT.md says why).
func TestVersion1SegmentRefused(t *testing.T) {
	dir := t.TempDir()
	hdr := []byte("CFSG\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01")
	a := mkShard(1, 0, 100)
	if err := os.WriteFile(filepath.Join(dir, segName(1)), append(hdr, v1Record(recPut, &a)...), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, Options{DisableAutoCompact: true, NoSync: true})
	if err == nil {
		s.Close()
		t.Fatal("Open accepted a version 1 segment")
	}
	for _, want := range []string{segName(1), "version 1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}
