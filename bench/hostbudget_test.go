package bench

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestHostBudgetTrees: the generated tree is deterministic, MutateTree changes what it
// says, and CompareTrees tells a faithful copy from a changed, missing or extra file.
func TestHostBudgetTrees(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	if err := GenerateSmallTree(a, 2500, 512, 20, 7); err != nil {
		t.Fatal(err)
	}
	if err := GenerateSmallTree(b, 2500, 512, 20, 7); err != nil {
		t.Fatal(err)
	}
	files, _ := treeBytes(a)
	if files != 2500 {
		t.Fatalf("generated %d files, want 2500", files)
	}
	if err := CompareTrees(a, b); err != nil {
		t.Fatalf("same seed, different trees: %v", err)
	}
	n, err := MutateTree(b, 20, 1)
	if err != nil {
		t.Fatal(err)
	}
	if n != 125 {
		t.Fatalf("mutated %d files, want 125", n)
	}
	if err := CompareTrees(a, b); err == nil || !strings.Contains(err.Error(), "differs") {
		t.Fatalf("a mutated tree compared equal or wrongly: %v", err)
	}
	if err := GenerateSmallTree(b, 2500, 512, 20, 7); err != nil { // rewrites the same files
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b, "extra"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := CompareTrees(a, b); err == nil || !strings.Contains(err.Error(), "entries") {
		t.Fatalf("an extra file went unnoticed: %v", err)
	}
	if err := os.Remove(filepath.Join(b, "p000", "d000", "f000000.txt")); err != nil {
		t.Fatal(err)
	}
	if err := CompareTrees(a, b); err == nil {
		t.Fatal("a missing file went unnoticed")
	}
}

// TestMutateLargeFile: a file of 16 MiB or more gets regions rewritten in place as well
// as data appended.
func TestMutateLargeFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "img")
	if err := os.WriteFile(p, make([]byte, 16<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := MutateTree(dir, 1, 3); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 16<<20+8<<10 {
		t.Fatalf("size %d after mutation", len(got))
	}
	if got[0] == 0 || got[16<<20/32*5] == 0 {
		t.Fatal("regions were not rewritten")
	}
}

// TestGenerateSparseImage: the block dataset's image has its apparent size, data in 16
// segments at 4 MiB-aligned offsets (alternately random and text) and holes between.
func TestGenerateSparseImage(t *testing.T) {
	const size, data, seg, stride = 256 << 20, 64 << 20, 4 << 20, 16 << 20
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := GenerateSparseImage(p, size, data, 1); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != size {
		t.Fatalf("image is %d bytes, want %d", len(b), size)
	}
	for k := range 16 {
		s := b[k*stride : k*stride+seg]
		if bytes.Count(s, []byte{0}) > len(s)/64 {
			t.Errorf("segment %d at %d: mostly zeros", k, k*stride)
		}
		if text := bytes.Count(s, []byte(" ")) > len(s)/20; text != (k%2 == 1) {
			t.Errorf("segment %d: text %v, want %v", k, text, k%2 == 1)
		}
		if !bytes.Equal(b[k*stride+seg:(k+1)*stride], make([]byte, stride-seg)) {
			t.Errorf("after segment %d: not a hole", k)
		}
	}
	if err := GenerateSparseImage(p, 1<<20, 1<<20, 1); err == nil {
		t.Error("1 MiB of data in 16 aligned segments: accepted")
	}
}
