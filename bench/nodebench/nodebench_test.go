package nodebench

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"
)

func TestRunSmoke(t *testing.T) {
	st, err := Run(context.Background(), t.TempDir()+"/s", time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 7 {
		t.Fatalf("got %d stages, want 7", len(st))
	}
	for _, s := range st {
		if s.OpsPerSec <= 0 || s.MBps1 <= 0 {
			t.Errorf("%s: %+v", s.Name, s)
		}
	}
}

// BenchmarkSegmentAppend and BenchmarkPebbleBatch report the node stages in
// benchstat-readable form (one iteration = one timed stage run of 200 ms).
func BenchmarkSegmentAppend(b *testing.B) {
	for _, size := range []int{1 << 20, 64 << 10, 1 << 10} {
		b.Run(sizeName(size), func(b *testing.B) {
			var mbps float64
			for b.Loop() {
				s, err := segAppend(context.Background(), b.TempDir(), size, 4, 200*time.Millisecond)
				if err != nil {
					b.Fatal(err)
				}
				mbps = s.MBps1
			}
			b.ReportMetric(mbps, "MB/s")
		})
	}
}

func BenchmarkPebbleBatch(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run("batch"+strconv.Itoa(n), func(b *testing.B) {
			var ops float64
			for b.Loop() {
				s, err := pebbleBatches(b.TempDir(), n, 200*time.Millisecond)
				if err != nil {
					b.Fatal(err)
				}
				ops = s.OpsPerSec
			}
			b.ReportMetric(ops, "keys/s")
		})
	}
}

func TestRepairPassSmoke(t *testing.T) {
	for _, mirrors := range []bool{false, true} {
		r, err := RepairPass(context.Background(), t.TempDir(), 3000, mirrors)
		if err != nil {
			t.Fatal(err)
		}
		// The node leads about a sixth of the 256 PGs and sees only their stripes.
		if r.PGs == 0 || r.Stripes == 0 || r.Stripes >= 3000 {
			t.Fatalf("mirrors %v: %+v", mirrors, r)
		}
	}
}

// TestRepairPassScale measures one repair pass over a node holding
// COFFER_REPAIR_SHARDS shards (docs/benchmarks.md, "Repair pass at scale"); skipped
// without it. COFFER_REPAIR_MIRRORS=1 makes the five other nodes list as many.
func TestRepairPassScale(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("COFFER_REPAIR_SHARDS"))
	if n <= 0 {
		t.Skip("set COFFER_REPAIR_SHARDS")
	}
	dir := os.Getenv("COFFER_REPAIR_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	r, err := RepairPass(context.Background(), dir, n, os.Getenv("COFFER_REPAIR_MIRRORS") == "1")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("mirrors %q, shards %d: generate %s, pass %s (%d PGs led, %d stripes)", os.Getenv("COFFER_REPAIR_MIRRORS"), r.Shards, r.Generate.Round(time.Millisecond),
		r.Pass.Round(time.Millisecond), r.PGs, r.Stripes)
}
