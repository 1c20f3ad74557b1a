package client

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/client/crypt"
	"github.com/cofferhq/coffer/client/tree"
)

// TestFileReadAtMatchesSource reads every file of a snapshot through File.ReadAt at
// random offsets and lengths, and sequentially in small steps (read-ahead), and
// compares with the source: large files across chunk boundaries, a sparse file, small
// files bundled into shared chunks (Node.Offset), an empty file.
func TestFileReadAtMatchesSource(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	writeFile(t, filepath.Join(src, "big.bin"), randBytes(1, 5<<20+333), 0o644)
	for i := range 20 {
		writeFile(t, filepath.Join(src, "small", string(rune('a'+i))), randBytes(uint64(10+i), 100+i*517), 0o644)
	}
	writeFile(t, filepath.Join(src, "empty"), nil, 0o644)
	sp, err := os.Create(filepath.Join(src, "sparse.img"))
	if err != nil {
		t.Fatal(err)
	}
	sp.WriteAt(randBytes(3, 300<<10), 0)
	sp.WriteAt(randBytes(4, 200<<10), 4<<20)
	sp.Truncate(6 << 20)
	sp.Close()

	e := newEnv(t)
	a := e.open(t)
	res, err := a.Backup(ctx, BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	cache := NewReadCache(8 << 20)
	r := rand.New(rand.NewPCG(19, 19))
	files := 0
	err = a.List(ctx, res.Snapshot, "/src", func(en Entry) error {
		if en.Node.Type != tree.TypeFile {
			return nil
		}
		files++
		rel, _ := filepath.Rel("/src", en.Path)
		want, err := os.ReadFile(filepath.Join(src, rel))
		if err != nil {
			return err
		}
		n := en.Node
		f, err := a.OpenFile(ctx, &n, cache)
		if err != nil {
			return err
		}
		defer f.Close()
		if f.Size() != int64(len(want)) {
			t.Errorf("%s: size %d, want %d", en.Path, f.Size(), len(want))
		}
		for range 30 {
			off := r.Int64N(int64(len(want)) + 10)
			buf := make([]byte, r.IntN(300<<10)+1)
			k, err := f.ReadAt(ctx, buf, off)
			end := min(off+int64(len(buf)), int64(len(want)))
			if off >= int64(len(want)) {
				if k != 0 || err != io.EOF {
					t.Errorf("%s: read past the end at %d: %d, %v", en.Path, off, k, err)
				}
				continue
			}
			if (err != nil && err != io.EOF) || int64(k) != end-off || !bytes.Equal(buf[:k], want[off:end]) {
				t.Fatalf("%s: ReadAt(%d bytes at %d): %d, %v (equal %v)", en.Path, len(buf), off, k, err, bytes.Equal(buf[:k], want[off:end]))
			}
			if end < off+int64(len(buf)) && err != io.EOF {
				t.Errorf("%s: short read at the end without io.EOF", en.Path)
			}
		}
		var got bytes.Buffer
		buf := make([]byte, 128<<10)
		for off := int64(0); ; {
			k, err := f.ReadAt(ctx, buf, off)
			got.Write(buf[:k])
			off += int64(k)
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
		}
		if !bytes.Equal(got.Bytes(), want) {
			t.Errorf("%s: sequential read differs", en.Path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files != 23 {
		t.Fatalf("read %d files, want 23", files)
	}
}

// TestFileReadAtVerifiesChunks: a chunk that does not open under its ID fails the read
// with crypt.ErrCorrupt, never returns wrong bytes, and is not cached.
func TestFileReadAtVerifiesChunks(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	writeFile(t, filepath.Join(src, "data.bin"), randBytes(7, 600<<10), 0o644)
	e := newEnv(t)
	a := e.open(t)
	res, err := a.Backup(ctx, BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	var n tree.Node
	if err := a.List(ctx, res.Snapshot, "/src/data.bin", func(en Entry) error { n = en.Node; return nil }); err != nil {
		t.Fatal(err)
	}
	cfg := e.cfg
	bad := &corruptingStore{countingStore: e.chunks, bad: n.Content[0].ID}
	cfg.Chunks = bad
	b, err := Open(ctx, cfg, "v1", testPass)
	if err != nil {
		t.Fatal(err)
	}
	cache := NewReadCache(8 << 20)
	f, err := b.OpenFile(ctx, &n, cache)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if k, err := f.ReadAt(ctx, buf, 0); !errors.Is(err, crypt.ErrCorrupt) || k != 0 {
		t.Fatalf("read of a corrupt chunk: %d, %v; want 0, crypt.ErrCorrupt", k, err)
	}
	f.Close()
	// The same cache with a store that serves the chunk intact: read again, not cached.
	bad.bad = chunk.ID{}
	f, err = b.OpenFile(ctx, &n, cache)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want, _ := os.ReadFile(filepath.Join(src, "data.bin"))
	if k, err := f.ReadAt(ctx, buf, 0); err != nil || !bytes.Equal(buf[:k], want[:4096]) {
		t.Fatalf("read after the chunk was repaired: %d, %v", k, err)
	}
	if _, err := b.OpenFile(ctx, &tree.Node{Name: "d", Type: tree.TypeDir}, cache); !errors.Is(err, ErrInvalid) {
		t.Errorf("OpenFile of a directory: %v, want ErrInvalid", err)
	}
}
