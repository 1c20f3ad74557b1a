package anomaly

import (
	"strings"
	"testing"
)

// normal is a history of ten ordinary runs: a few MiB of compressible changes.
func normal() []Sample {
	var h []Sample
	for i := range 10 {
		h = append(h, Sample{BytesAdded: float64(2<<20 + i*50<<10), FilesChanged: float64(10 + i%3), FilesNew: 2, FilesDeleted: 1,
			Duration: float64(30 + i%4), Ratio: 2.6 + float64(i%3)/10})
	}
	return h
}

func TestRansomwareRunIsFlagged(t *testing.T) {
	cur := Sample{BytesAdded: 90 << 20, FilesChanged: 900, FilesNew: 2, FilesDeleted: 1, Duration: 33, Ratio: 1.01}
	flags := Check(normal(), cur, Config{})
	got := map[string]Flag{}
	for _, f := range flags {
		got[f.Metric] = f
	}
	if _, ok := got["bytes added"]; !ok {
		t.Errorf("bytes added not flagged: %+v", flags)
	}
	if _, ok := got["files changed"]; !ok {
		t.Errorf("files changed not flagged: %+v", flags)
	}
	if f, ok := got["compression ratio"]; !ok || f.Reason != "compression ratio 1 vs 2.7" {
		t.Errorf("compression ratio flag %+v", f)
	}
	for _, m := range []string{"files new", "files deleted", "duration"} {
		if _, ok := got[m]; ok {
			t.Errorf("%s flagged although it is ordinary: %+v", m, got[m])
		}
	}
	r := Reason(flags)
	if !strings.HasPrefix(r, "bytes added 4") || !strings.Contains(r, "x the mean; files changed") || !strings.Contains(r, "; compression ratio 1 vs 2.7") {
		t.Errorf("reason %q", r)
	}
}

func TestOrdinaryRunsAreNotFlagged(t *testing.T) {
	h := normal()
	for i, s := range h {
		if f := Check(h[:i], s, Config{}); len(f) > 0 {
			t.Errorf("run %d flagged: %+v", i, f)
		}
	}
	// Identical history (σ = 0): one more file or a few KiB is not an anomaly.
	var same []Sample
	for range 8 {
		same = append(same, Sample{BytesAdded: 4096, FilesChanged: 1, Duration: 2, Ratio: 3})
	}
	if f := Check(same, Sample{BytesAdded: 9000, FilesChanged: 2, Duration: 3, Ratio: 2.9}, Config{}); len(f) > 0 {
		t.Errorf("a run just above a constant history flagged: %+v", f)
	}
}

func TestNeedsHistoryAndIsOneSided(t *testing.T) {
	h := normal()
	huge := Sample{BytesAdded: 1 << 40, FilesChanged: 1e6, Duration: 1e5, Ratio: 1}
	if f := Check(h[:4], huge, Config{}); len(f) != 0 {
		t.Errorf("flagged with 4 jobs of history (need 5): %+v", f)
	}
	if f := Check(h[:4], huge, Config{MinHistory: 2}); len(f) != 0 {
		t.Errorf("MinHistory below 5 was honoured: %+v", f)
	}
	if f := Check(h[:5], huge, Config{}); len(f) == 0 {
		t.Error("not flagged with 5 jobs of history")
	}
	tiny := Sample{BytesAdded: 0, FilesChanged: 0, Duration: 1, Ratio: 9}
	if f := Check(h, tiny, Config{}); len(f) != 0 {
		t.Errorf("a small, very compressible run flagged: %+v", f)
	}
	// A job that stored nothing has no ratio; history without ratios is not compared.
	if f := Check(h, Sample{BytesAdded: 2 << 20, FilesChanged: 10, Duration: 30}, Config{}); len(f) != 0 {
		t.Errorf("a run without a ratio flagged: %+v", f)
	}
}

func TestWindowUsesNewestJobs(t *testing.T) {
	var h []Sample
	for range 30 {
		h = append(h, Sample{BytesAdded: 1 << 30, Duration: 30, Ratio: 2.6}) // long ago: big runs
	}
	h = append(h, normal()...)
	cur := Sample{BytesAdded: 1 << 30, Duration: 30, Ratio: 2.6}
	if f := Check(h, cur, Config{Window: 10}); len(f) != 1 || f[0].Metric != "bytes added" {
		t.Errorf("window of 10 (only the normal runs): %+v, want bytes added flagged", f)
	}
	if f := Check(h, cur, Config{Window: 40}); len(f) != 0 {
		t.Errorf("window of 40 (big runs included): %+v, want nothing", f)
	}
}
