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

// TestHostGoalsPerRun: each wall-time goal carries its ratio within every run, against
// the better peer of that run (which may differ from the better peer of the medians),
// and the markdown prints them; the met verdict stays on the medians.
func TestHostGoalsPerRun(t *testing.T) {
	res := func(run int, tool string, secs float64) HostResult {
		return HostResult{Run: run, Tool: tool, Dataset: DsToolchain, Scenario: ScRestore, Bytes: 1 << 30, Seconds: secs, Verified: true}
	}
	r := &HostReport{Runs: 3, Datasets: []Dataset{{Name: DsToolchain}}, Results: []HostResult{
		// Run 1 is slow for every tool (the machine), runs 2 and 3 are not.
		res(1, "coffer", 4.0), res(1, "restic-a", 6.0), res(1, "restic-b", 5.0),
		res(2, "coffer", 2.0), res(2, "restic-a", 3.0), res(2, "restic-b", 4.5),
		res(3, "coffer", 1.8), res(3, "restic-a", 4.0), res(3, "restic-b", 3.7),
	}}
	r.summarise(HostOptions{Peers: []HostPeer{{Name: "restic-a"}, {Name: "restic-b"}}, RSSBoundMiB: DefaultRSSBoundMiB})
	var g *HostGoal
	for i := range r.Goals {
		if r.Goals[i].Goal == "full restore, wall time" {
			g = &r.Goals[i]
		}
	}
	if g == nil {
		t.Fatalf("no full restore goal in %+v", r.Goals)
	}
	// Medians: coffer 2.0, restic-a 4.0, restic-b 4.5: 2.00x against restic-a.
	if g.Peer != "restic-a" || g.Ratio != 2.0 || !g.Met {
		t.Errorf("goal %+v, want 2.00x against restic-a, met", *g)
	}
	want := []float64{5.0 / 4.0, 3.0 / 2.0, 3.7 / 1.8}
	if len(g.RunRatios) != len(want) {
		t.Fatalf("per-run ratios %v, want %v", g.RunRatios, want)
	}
	for i := range want {
		if d := g.RunRatios[i] - want[i]; d > 1e-9 || d < -1e-9 {
			t.Fatalf("per-run ratios %v, want %v", g.RunRatios, want)
		}
	}
	var md bytes.Buffer
	r.Markdown(&md)
	if !strings.Contains(md.String(), "| 2.00x | 1.25x 1.50x 2.06x | ≥ 2x | yes |") {
		t.Errorf("markdown lacks the per-run ratios:\n%s", md.String())
	}
}
