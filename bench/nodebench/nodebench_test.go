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
		dir := t.TempDir()
		r, err := RepairPass(context.Background(), dir, 3000, RepairPassOptions{Mirrors: mirrors})
		if err != nil {
			t.Fatal(err)
		}
		// The node leads about a sixth of the 256 PGs and sees only their stripes; the
		// unchanged pass lists none of them, the next one the changed PG alone.
		if r.PGs == 0 || r.Stripes == 0 || r.Stripes >= 3000 || r.UnchangedSkipped != r.PGs || r.OneChangedListed != 1 {
			t.Fatalf("mirrors %v: %+v", mirrors, r)
		}
		// Reused with its index turned into version 2: upgraded at Open, same figures.
		r2, err := RepairPass(context.Background(), dir, 3000, RepairPassOptions{Mirrors: mirrors, Upgrade: true})
		if err != nil {
			t.Fatal(err)
		}
		if r2.Generate != 0 || r2.Upgrade == 0 || r2.PGs != r.PGs || r2.Stripes != r.Stripes+1 || r2.UnchangedSkipped != r.PGs || r2.OneChangedListed != 1 {
			t.Fatalf("mirrors %v, upgraded: %+v (first run %+v)", mirrors, r2, r)
		}
	}
}

// TestRepairPassScale measures repair passes over a node holding
// COFFER_REPAIR_SHARDS shards (docs/benchmarks.md, "repair pass at scale"); skipped
// without it. COFFER_REPAIR_MIRRORS=1 makes the five other nodes list as many;
// COFFER_REPAIR_DIR keeps the store (a later run with as many shards reuses it);
// COFFER_REPAIR_UPGRADE=1 turns its index into version 2 first and times the upgrade.
func TestRepairPassScale(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("COFFER_REPAIR_SHARDS"))
	if n <= 0 {
		t.Skip("set COFFER_REPAIR_SHARDS")
	}
	dir := os.Getenv("COFFER_REPAIR_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	opt := RepairPassOptions{Mirrors: os.Getenv("COFFER_REPAIR_MIRRORS") == "1", Upgrade: os.Getenv("COFFER_REPAIR_UPGRADE") == "1"}
	r, err := RepairPass(context.Background(), dir, n, opt)
	if err != nil {
		t.Fatal(err)
	}
	ms := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	t.Logf("%+v, shards %d: generate %s, upgrade %s; passes (wall, CPU): whole listing %s, %s; first %s, %s (%d PGs led, %d stripes); unchanged %s, %s (%d PGs skipped); one changed %s, %s (%d PGs, %d stripes listed)",
		opt, r.Shards, ms(r.Generate), ms(r.Upgrade), ms(r.Whole), ms(r.WholeCPU), ms(r.First), ms(r.FirstCPU), r.PGs, r.Stripes,
		ms(r.Unchanged), ms(r.UnchangedCPU), r.UnchangedSkipped, ms(r.OneChanged), ms(r.OneChangedCPU), r.OneChangedListed, r.OneChangedStripes)
}
