package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/placement"
)

// TestAdminStatusPGWarning: admin status counts PGs as admin pgs does ("unknown" only for
// a PG of which no report arrived; an older epoch's report counts) and prints a warning
// line with the reasons, most common first.
func TestAdminStatusPGWarning(t *testing.T) {
	m := placement.Map{Epoch: 4, PGCount: 4}
	short := "cannot place: 6 shards need 6 domains, 5 eligible"
	reps := []placement.PGHealth{
		{PG: 0, Epoch: 4, Reporter: "c1", N: 6, MinHealthy: 5, Reason: short},
		{PG: 1, Epoch: 3, Reporter: "c2", N: 6, MinHealthy: 5, Degraded: 2, Reason: short}, // older epoch
		{PG: 2, Epoch: 4, Reporter: "c1", N: 6, MinHealthy: 6},
	}
	p := summarisePGs(m, reps)
	if p.Counts["degraded"] != 2 || p.Counts["healthy"] != 1 || p.Counts["unknown"] != 1 {
		t.Fatalf("counts %v", p.Counts)
	}
	want := "3 of 4 PGs not healthy (2 degraded, 1 unknown): 2 " + short + "; 1 unknown; see coffer admin pgs"
	if p.Warning != want {
		t.Fatalf("warning %q\nwant    %q", p.Warning, want)
	}
	var out bytes.Buffer
	printClusterStatus(&out, clusterStatus{PGCount: 4, PGs: p})
	for _, line := range []string{"PGs:      1 healthy, 2 degraded, 1 unknown", "WARNING:  " + want} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("output lacks %q:\n%s", line, out.String())
		}
	}
	if all := summarisePGs(m, append(reps, placement.PGHealth{PG: 3, Epoch: 4, Reporter: "c3", N: 6, MinHealthy: 6})[2:]); all.Warning != "2 of 4 PGs not healthy (2 unknown): 2 unknown; see coffer admin pgs" {
		t.Fatalf("warning %q", all.Warning)
	}
}
