package snapshot

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cofferhq/coffer/chunkstore/chunk"
)

// TestTreePackReadModes writes a pack and reads every entry back, with the pack in
// memory and one pread per entry; IDs it does not index (among them one it holds but
// was not told to index) are not found.
func TestTreePackReadModes(t *testing.T) {
	dir := t.TempDir()
	w, err := newPackWriter(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := make(map[chunk.ID][]byte)
	var ids []chunk.ID
	for i := range 50 {
		id := chunk.ID{byte(i), 0xaa}
		b := randBytes(uint64(i), 1+i*37)
		if err := w.add(id, b); err != nil {
			t.Fatal(err)
		}
		if err := w.add(id, []byte("again")); err != nil { // a second add of an ID is ignored
			t.Fatal(err)
		}
		if i != 7 {
			want[id] = b
			ids = append(ids, id, id)
		}
	}
	p := filepath.Join(dir, "s.pack")
	rec := setRecord{Host: "h", Paths: []string{"/x"}, Snapshot: "s", Tree: "t"}
	missing, err := w.finish(p, rec, append(ids, chunk.ID{0xff}))
	if err != nil || missing != 1 {
		t.Fatalf("finish: %d missing, %v; want 1 missing", missing, err)
	}
	for _, readAll := range []int64{0, packReadAll} {
		pk, err := openPack(p, readAll)
		if err != nil {
			t.Fatal(err)
		}
		if (pk.data != nil) != (readAll > 0) || pk.rec.Host != "h" || len(pk.index) != len(want) {
			t.Errorf("readAll %d: in memory %v, record %+v, %d entries", readAll, pk.data != nil, pk.rec, len(pk.index))
		}
		for id, b := range want {
			got, err := pk.read(id)
			if err != nil || !slices.Equal(got, b) {
				t.Errorf("readAll %d: tree %x: %d bytes, %v; want %d bytes", readAll, id[:2], len(got), err, len(b))
			}
		}
		for _, id := range []chunk.ID{{7, 0xaa}, {0xff}} {
			if _, err := pk.read(id); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("readAll %d: tree %x not indexed: %v", readAll, id[:2], err)
			}
		}
		pk.close()
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("%d files after finish, want the pack alone", len(ents))
	}
}
