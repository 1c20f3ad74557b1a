package client

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// dataRanges maps the data regions of the file at p.
func dataRanges(t *testing.T, p string) ([]region, int64) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	var out []region
	for _, r := range dataRegions(int(f.Fd()), fi.Size()) {
		if !r.hole {
			out = append(out, r)
		}
	}
	return out, fi.Size()
}

func allocated(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Blocks * 512
}

// TestBlockSparseImage is the acceptance test for sparse images: a 10 GiB image holding
// 100 MiB of data stores about 100 MiB, reads about that much, and restores to a sparse
// file of the same apparent size with identical content.
func TestBlockSparseImage(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	const size = 10 << 30
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	// Ten 10 MiB runs of random data, some block aligned, some not.
	offsets := []int64{0, 1 << 30, 1<<30 + 300<<20 + 12345, 2 << 30, 3<<30 + 1<<20, 5 << 30, 6<<30 + 4096, 7 << 30, 9 << 30, size - 10<<20}
	for i, off := range offsets {
		if _, err := f.WriteAt(randBytes(uint64(500+i), 10<<20), off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	if a := allocated(t, img); a > 200<<20 {
		t.Skipf("file system does not keep %s sparse (%d bytes allocated)", img, a)
	}
	e := newEnv(t)
	a := e.open(t)
	res, err := a.BackupBlock(ctx, BlockOptions{Path: img})
	if err != nil {
		t.Fatal(err)
	}
	st := res.Snapshot.Stats
	t.Logf("10 GiB sparse image: read %d, added %d bytes, %d blocks: %+v", res.BytesRead, st.BytesAdded, res.Blocks.Total, res.Blocks)
	const data = 100 << 20
	if st.BytesAdded < data || st.BytesAdded > data+data/10 {
		t.Errorf("stored %d bytes for %d bytes of data", st.BytesAdded, data)
	}
	if res.BytesRead > data+data/10 {
		t.Errorf("read %d bytes of a sparse image holding %d", res.BytesRead, data)
	}
	if st.BytesProcessed != size || res.Blocks.Total != size/DefaultBlockSize {
		t.Errorf("processed %d bytes, %d blocks", st.BytesProcessed, res.Blocks.Total)
	}

	out := filepath.Join(dir, "restored.img")
	if _, err := a.RestoreImage(ctx, res.Snapshot, ImageRestoreOptions{Target: out}); err != nil {
		t.Fatal(err)
	}
	got, gsize := dataRanges(t, out)
	want, _ := dataRanges(t, img)
	if gsize != size {
		t.Fatalf("restored apparent size %d, want %d", gsize, size)
	}
	if al := allocated(t, out); al > data+data/5 {
		t.Errorf("restored image allocates %d bytes; want it sparse (about %d)", al, data)
	}
	// Outside the source's data regions both files read zero (the source has holes, the
	// restored file too: its data regions must lie within the source's blocks); inside,
	// compare the bytes.
	src, _ := os.Open(img)
	defer src.Close()
	dst, _ := os.Open(out)
	defer dst.Close()
	for _, r := range got {
		covered := false
		for _, w := range want {
			if r.start < w.end+DefaultBlockSize && r.end > w.start-DefaultBlockSize {
				covered = true
			}
		}
		if !covered {
			t.Errorf("restored data region [%d,%d) where the source has a hole", r.start, r.end)
		}
	}
	for _, r := range append(want, got...) {
		a, b := make([]byte, r.end-r.start), make([]byte, r.end-r.start)
		if _, err := src.ReadAt(a, r.start); err != nil && !errors.Is(err, io.EOF) {
			t.Fatal(err)
		}
		if _, err := dst.ReadAt(b, r.start); err != nil && !errors.Is(err, io.EOF) {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Fatalf("content differs in [%d,%d)", r.start, r.end)
		}
	}
}

// readLog records the byte ranges a block backup read.
type readLog struct {
	mu     sync.Mutex
	blocks map[int64]bool
	bytes  int64
	bs     int64
}

func (l *readLog) hook(off, n int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for b := off / l.bs; b*l.bs < off+n; b++ {
		l.blocks[b] = true
	}
	l.bytes += n
}

func (l *readLog) take() ([]int64, int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []int64
	for b := range l.blocks {
		out = append(out, b)
	}
	slices.Sort(out)
	n := l.bytes
	l.blocks, l.bytes = map[int64]bool{}, 0
	return out, n
}

// TestBlockChangeSources backs up an image three times: a full read that finds the one
// changed block by its hash and uploads only it; a dirty map that limits the reads to the
// listed blocks; and the restores of each snapshot equal the image at that time.
func TestBlockChangeSources(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	img := filepath.Join(dir, "vm.img")
	const bs = 1 << 20
	content := randBytes(7, 48<<20)
	clear(content[20<<20 : 24<<20]) // four all-zero blocks
	if err := os.WriteFile(img, content, 0o600); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	e.cfg.CacheDir = filepath.Join(dir, "cache")
	a := e.open(t)
	log := &readLog{blocks: map[int64]bool{}, bs: bs}
	backup := func(dm *DirtyMap) BackupResult {
		t.Helper()
		res, err := a.BackupBlock(ctx, BlockOptions{Path: img, BlockSize: bs, DirtyMap: dm, OnRead: log.hook})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	check := func(res BackupResult, want []byte) {
		t.Helper()
		out := filepath.Join(t.TempDir(), "out.img")
		if _, err := a.RestoreImage(ctx, res.Snapshot, ImageRestoreOptions{Target: out}); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("restored image differs from the source")
		}
	}
	first := backup(nil)
	if b := first.Blocks; b.Total != 48 || b.Holes != 4 || b.Changed != 44 || b.Read != 48 {
		t.Errorf("first backup blocks %+v", b)
	}
	log.take()
	check(first, content)

	// (a) full read: one changed block, found by its hash.
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	write := func(off int64, b []byte) {
		t.Helper()
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
		copy(content[off:], b)
	}
	write(30<<20+777, []byte("changed bytes"))
	second := backup(nil)
	if blocks, _ := log.take(); len(blocks) != 48 {
		t.Errorf("full read read %d blocks, want all 48 (the file has no holes)", len(blocks))
	}
	if b := second.Blocks; b.Changed != 1 {
		t.Errorf("full read: %d changed blocks, want 1", b.Changed)
	}
	if added := second.Snapshot.Stats.BytesAdded; added < bs || added > bs+64<<10 {
		t.Errorf("full read stored %d bytes for one changed 1 MiB block", added)
	}
	check(second, content)

	// (b) dirty map: only the listed blocks are read.
	write(2<<20, randBytes(8, 100))
	write(40<<20+bs-10, randBytes(9, 20)) // spans blocks 40 and 41
	write(21<<20, randBytes(10, 8))       // a zero block gets data
	dm, err := ParseDirtyMap(strings.NewReader("# from a test\ncoffer-dirty-map 1\nblock-size 65536\n32 1\n" +
		"655 2\n336 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	third := backup(dm)
	blocks, n := log.take()
	if want := []int64{2, 21, 40, 41}; !slices.Equal(blocks, want) || n != 4*bs {
		t.Errorf("dirty map backup read blocks %v (%d bytes), want %v", blocks, n, want)
	}
	if b := third.Blocks; b.Changed != 4 || b.Reused != 44 || b.Read != 4 {
		t.Errorf("dirty map backup blocks %+v", b)
	}
	check(third, content)
	f.Close()

	// A dirty map without a usable parent is refused.
	if _, err := a.BackupBlock(ctx, BlockOptions{Path: img, BlockSize: 2 * bs, DirtyMap: dm}); !errors.Is(err, ErrInvalid) {
		t.Errorf("dirty map with another block size: %v", err)
	}
}

func TestParseDirtyMap(t *testing.T) {
	for _, bad := range []string{
		"",
		"block-size 4096\n0 1\n",
		"coffer-dirty-map 2\nblock-size 4096\n",
		"coffer-dirty-map 1\nblock-size 0\n",
		"coffer-dirty-map 1\nblock-size 4096\n0\n",
		"coffer-dirty-map 1\nblock-size 4096\n-1 2\n",
		"coffer-dirty-map 1\nblock-size 4096\n1 0\n",
		"coffer-dirty-map 1\nblock-size 4096\n9223372036854775807 1\n",
	} {
		if _, err := ParseDirtyMap(strings.NewReader(bad)); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseDirtyMap(%q) = %v, want ErrInvalid", bad, err)
		}
	}
	m, err := ParseDirtyMap(strings.NewReader("coffer-dirty-map 1\nblock-size 4096\n10 2\n0 1\n11 4\n"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Changed() != 6*4096 || m.End() != 15*4096 {
		t.Errorf("changed %d end %d", m.Changed(), m.End())
	}
	for _, c := range []struct {
		s, e int64
		want bool
	}{{0, 1, true}, {4096, 40960, false}, {40959, 40960, false}, {40960, 40961, true}, {61439, 70000, true}, {61440, 70000, false}} {
		if got := m.Overlaps(c.s, c.e); got != c.want {
			t.Errorf("Overlaps(%d, %d) = %v", c.s, c.e, got)
		}
	}
}

func TestParseThinDelta(t *testing.T) {
	const delta = `<superblock uuid="" time="1" transaction="2" data_block_size="128" nr_data_blocks="1000">
  <diff left="1" right="2">
    <same begin="0" length="16"/>
    <different begin="16" length="1"/>
    <right_only begin="17" length="3"/>
    <same begin="20" length="80"/>
    <left_only begin="100" length="2"/>
  </diff>
</superblock>
`
	m, err := ReadDirtyMap(strings.NewReader("\n  " + delta))
	if err != nil {
		t.Fatal(err)
	}
	const blk = 128 * 512
	if m.BlockSize != blk || m.Changed() != 6*blk || m.End() != 102*blk {
		t.Errorf("block size %d changed %d end %d", m.BlockSize, m.Changed(), m.End())
	}
	if m.Overlaps(0, 16*blk) || !m.Overlaps(16*blk, 16*blk+1) || m.Overlaps(20*blk, 100*blk) || !m.Overlaps(101*blk, 200*blk) {
		t.Error("ranges wrong")
	}
	for _, bad := range []string{
		`<diff><different begin="1" length="2"/></diff>`,
		`<superblock data_block_size="x"></superblock>`,
		`<superblock data_block_size="128"><diff><different begin="-1" length="2"/></diff></superblock>`,
		`<superblock data_block_size="128"><diff>`,
	} {
		if _, err := ReadDirtyMap(strings.NewReader(bad)); !errors.Is(err, ErrInvalid) {
			t.Errorf("ReadDirtyMap(%q) = %v, want ErrInvalid", bad, err)
		}
	}
	// The text format still parses through ReadDirtyMap.
	if m, err := ReadDirtyMap(strings.NewReader("coffer-dirty-map 1\nblock-size 512\n3 1\n")); err != nil || m.Changed() != 512 {
		t.Errorf("text map: %v %v", m, err)
	}
}

// TestBlockParentOfAnotherPath backs up an image, copies it to a new name (as a new LVM
// snapshot device would be), changes one block and backs the copy up with --parent and a
// dirty map: only the listed block is read.
func TestBlockParentOfAnotherPath(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	const bs = 64 << 10
	content := randBytes(21, 2<<20)
	one, two := filepath.Join(dir, "snap1"), filepath.Join(dir, "snap2")
	if err := os.WriteFile(one, content, 0o600); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	a := e.open(t)
	first, err := a.BackupBlock(ctx, BlockOptions{Path: one, BlockSize: bs})
	if err != nil {
		t.Fatal(err)
	}
	copy(content[5*bs+10:], "new bytes")
	if err := os.WriteFile(two, content, 0o600); err != nil {
		t.Fatal(err)
	}
	dm, err := ParseDirtyMap(strings.NewReader("coffer-dirty-map 1\nblock-size 65536\n5 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	log := &readLog{blocks: map[int64]bool{}, bs: bs}
	res, err := a.BackupBlock(ctx, BlockOptions{Path: two, BlockSize: bs, DirtyMap: dm, Parent: first.Snapshot.ID.String(), OnRead: log.hook})
	if err != nil {
		t.Fatal(err)
	}
	if blocks, _ := log.take(); !slices.Equal(blocks, []int64{5}) || res.Blocks.Changed != 1 {
		t.Errorf("read blocks %v, changed %d", blocks, res.Blocks.Changed)
	}
	out := filepath.Join(dir, "out")
	if _, err := a.RestoreImage(ctx, res.Snapshot, ImageRestoreOptions{Target: out}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, content) {
		t.Error("restored image differs")
	}
	// A new path without --parent has no parent: the dirty map is refused.
	three := filepath.Join(dir, "snap3")
	if err := os.WriteFile(three, content, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := a.BackupBlock(ctx, BlockOptions{Path: three, BlockSize: bs, DirtyMap: dm}); !errors.Is(err, ErrInvalid) {
		t.Error("dirty map accepted without a parent")
	}
}
