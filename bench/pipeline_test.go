package bench

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"testing"
)

// tinyTree writes a small tree (text, a file above the chunker's minimum, an empty file,
// a nested directory) and returns its root, file count and byte count.
func tinyTree(t *testing.T) (string, int64, int64) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "tree")
	r := rand.New(rand.NewPCG(3, 4))
	big := make([]byte, 3<<20)
	for i := range big {
		big[i] = byte(r.UintN(256))
	}
	files := map[string][]byte{
		"a.go":           textish(10 << 10),
		"sub/b.go":       textish(300 << 10),
		"sub/deep/empty": nil,
		"sub/deep/big":   big,
	}
	var n, size int64
	for name, data := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		n++
		size += int64(len(data))
	}
	return root, n, size
}

func TestClientPipelineTinyTree(t *testing.T) {
	root, files, size := tinyTree(t)
	prof := filepath.Join(t.TempDir(), "p.pprof")
	run, err := ClientPipeline(context.Background(), "tiny", root, prof)
	if err != nil {
		t.Fatal(err)
	}
	if run.Bytes != size || run.BytesRead != size || run.Files != files {
		t.Fatalf("run %+v: want %d files, %d bytes processed and read", run, files, size)
	}
	// Random 3 MiB is at least one chunk; the text files one each, plus a tree and a
	// reference list; the random data does not compress.
	if run.Chunks < 5 || run.Added < 3<<20 {
		t.Fatalf("run %+v: too few chunks or bytes added", run)
	}
	if run.Seconds <= 0 || run.MBps <= 0 || run.CPUSec < 0 || run.MBPerCPUSec <= 0 {
		t.Fatalf("run %+v: implausible timings", run)
	}
	if st, err := os.Stat(prof); err != nil || st.Size() == 0 {
		t.Fatalf("profile: %v", err)
	}
}

func TestClientPipelineBesideAnotherProfile(t *testing.T) {
	root, _, size := tinyTree(t)
	f, err := os.Create(filepath.Join(t.TempDir(), "outer.pprof"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		t.Skipf("cannot profile here: %v", err)
	}
	defer pprof.StopCPUProfile()
	prof := filepath.Join(t.TempDir(), "p.pprof")
	run, err := ClientPipeline(context.Background(), "tiny", root, prof)
	if err != nil {
		t.Fatal(err)
	}
	if run.Bytes != size || !strings.Contains(run.Note, "no profile") {
		t.Fatalf("run %+v: want the backup measured and a note that its profile was not written", run)
	}
	if _, err := os.Stat(prof); !os.IsNotExist(err) {
		t.Fatalf("empty profile left behind: %v", err)
	}
}

func TestConcatFileHoldsTheTree(t *testing.T) {
	root, _, size := tinyTree(t)
	ds, err := scanDataset("tiny", root)
	if err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	p, err := concatFile(dataDir, ds)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(p); err != nil || st.Size() != size {
		t.Fatalf("concatenation %s: %v, want %d bytes", p, err, size)
	}
	run, err := ClientPipeline(context.Background(), "tiny file", p, "")
	if err != nil {
		t.Fatal(err)
	}
	if run.Files != 1 || run.Bytes != size {
		t.Fatalf("run %+v: want 1 file of %d bytes", run, size)
	}
	// Cached: a second call finds the file without rewriting it.
	again, err := concatFile(dataDir, ds)
	if err != nil || again != p {
		t.Fatalf("second call: %q, %v", again, err)
	}
}

func TestReportPipelineRuns(t *testing.T) {
	r := &Report{
		Stages: []Stage{{Name: "crypt.Seal (sample, zstd, GCM)", MBps1: 100, MBpsN: 190, Cores: 2}},
		Pipelines: []PipelineRun{
			{Name: "tree go1", Bytes: 200 << 20, MBps: 100, CPUPerGiB: 14, MBPerCPUSec: 50},
			{Name: "one file go1.cat", Bytes: 200 << 20, MBps: 160, CPUPerGiB: 8, MBPerCPUSec: 90},
		},
		Scenarios: []Scenario{{Tool: "coffer", Name: ScInitial, MBps: 30}},
	}
	r.summarise()
	p := r.Pipeline
	if p == nil || p.InProcess != "one file go1.cat" || p.SlowestMBps != 200 || p.InProcessEfficiency != 0.8 || !p.TargetMet {
		t.Fatalf("pipeline %+v: want the large file judged at 160/200", p)
	}
	if p.Scenario != ScInitial || p.Efficiency != 0.15 || p.E2ETargetMet {
		t.Fatalf("pipeline %+v: want the end-to-end initial backup at 30/200", p)
	}
	if p.InProcessCPUEfficiency != 0.9 {
		t.Fatalf("cpu efficiency %v, want 90/100", p.InProcessCPUEfficiency)
	}
	if r.Pipelines[0].Efficiency != 0.5 {
		t.Fatalf("tree efficiency %v, want 0.5", r.Pipelines[0].Efficiency)
	}
	var md bytes.Buffer
	r.Markdown(&md)
	for _, s := range []string{"| tree go1 | 0 | 200.0 | 0.00 | 100.0 | 50% | 14.0 | 50.0 | 50% |", "In process (one file go1.cat): 160 MB/s = 80% of it, 8.0 CPU-s/GiB (per CPU-second 90% of the stage on one core)", "End to end into the dev cluster on the same cores (agent and cluster): initial backup 30 MB/s = 15%"} {
		if !strings.Contains(md.String(), s) {
			t.Errorf("markdown lacks %q:\n%s", s, md.String())
		}
	}
}
