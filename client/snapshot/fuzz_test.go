package snapshot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/cofferhq/coffer/chunkstore/chunk"
)

// writeTestPack writes a pack of trees (ID i+1 holding trees[i]) with packWriter and
// returns its bytes.
func writeTestPack(t testing.TB, dir string, trees [][]byte) []byte {
	t.Helper()
	w, err := newPackWriter(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ids []chunk.ID
	for i, b := range trees {
		id := chunk.ID{byte(i + 1), 0x5a}
		if err := w.add(id, b); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	p := filepath.Join(dir, "seed.pack")
	if _, err := w.finish(p, setRecord{Host: "h", Paths: []string{"/x"}, Snapshot: "s", Tree: "t"}, ids); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzPack: opening any file as a tree-cache pack, read whole or one entry at a time,
// never panics and allocates no more than the file's size; a pack that opens has a
// sorted index whose every entry reads back in bounds, the same in both modes, and IDs
// it does not index are not found. Packs the writer makes from the fuzzed trees open
// and read back exactly.
func FuzzPack(f *testing.F) {
	dir := f.TempDir()
	f.Add(writeTestPack(f, dir, [][]byte{[]byte("one tree"), randBytes(3, 300), {0}}), []byte("x"), []byte("yz"))
	f.Add(writeTestPack(f, dir, nil), []byte{}, []byte{})
	// A trailer announcing 2^32-1 entries at an offset beyond the file.
	bad := writeTestPack(f, dir, [][]byte{[]byte("t")})
	binary.BigEndian.PutUint32(bad[len(bad)-PackTrailerSize+8:], ^uint32(0))
	f.Add(bad, []byte("a"), []byte("b"))
	f.Fuzz(func(t *testing.T, file, tree1, tree2 []byte) {
		if len(file) > 1<<20 {
			return
		}
		// Execs run one after another in each fuzzing process: they share dir.
		tmp := dir
		p := filepath.Join(tmp, "f.pack")
		if err := os.WriteFile(p, file, 0o600); err != nil {
			t.Fatal(err)
		}
		var packs []*pack
		for _, readAll := range []int64{0, packReadAll} {
			pk, err := openPack(p, readAll)
			if err != nil {
				if len(packs) > 0 {
					t.Fatalf("pack opens read whole but not entry by entry: %v", err)
				}
				continue
			}
			defer pk.close()
			packs = append(packs, pk)
		}
		if len(packs) == 1 {
			t.Fatal("pack opens in one read mode only")
		}
		for i, pk := range packs {
			for j, e := range pk.index {
				if j > 0 && !pk.index[j-1].id.Less(e.id) {
					t.Fatalf("index not sorted at %d", j)
				}
				got, err := pk.read(e.id)
				if err != nil || len(got) != int(e.n) || e.off+int64(e.n) > int64(len(file)) {
					t.Fatalf("entry %d: %d bytes at %d of %d: %v", j, e.n, e.off, len(file), err)
				}
				if !bytes.Equal(got, file[e.off:e.off+int64(e.n)]) {
					t.Fatalf("entry %d: wrong bytes", j)
				}
				if i == 1 && !bytes.Equal(got, mustRead(t, packs[0], e.id)) {
					t.Fatalf("entry %d differs between read modes", j)
				}
			}
			if _, err := pk.read(chunk.ID{0xff, 0xff, 0xff}); err != nil && !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("unindexed ID: %v", err)
			}
		}

		// Round trip through the writer (it skips empty trees).
		var trees [][]byte
		for _, b := range [][]byte{tree1, tree2} {
			if len(b) > 0 {
				trees = append(trees, b)
			}
		}
		pk, err := openPack(writePackFile(t, tmp, trees), packReadAll)
		if err != nil {
			t.Fatalf("written pack does not open: %v", err)
		}
		defer pk.close()
		if len(pk.index) != len(trees) {
			t.Fatalf("written pack indexes %d trees, want %d", len(pk.index), len(trees))
		}
		for i, b := range trees {
			if got := mustRead(t, pk, chunk.ID{byte(i + 1), 0x5a}); !bytes.Equal(got, b) {
				t.Fatalf("tree %d reads back as %d bytes, want %d", i, len(got), len(b))
			}
		}
	})
}

// writePackFile is writeTestPack returning the file's path.
func writePackFile(t testing.TB, dir string, trees [][]byte) string {
	t.Helper()
	writeTestPack(t, dir, trees)
	return filepath.Join(dir, "seed.pack")
}

func mustRead(t *testing.T, pk *pack, id chunk.ID) []byte {
	t.Helper()
	b, err := pk.read(id)
	if err != nil {
		t.Fatalf("read %x: %v", id[:2], err)
	}
	return b
}

// randBytes returns n pseudo-random bytes from seed.
func randBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}
