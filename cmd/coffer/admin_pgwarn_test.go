package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/chunkstore/nodestat"
	"github.com/cofferhq/coffer/meta"
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

// TestAdminStatusFlagsFullDisk: a chunk node whose store has less than diskFullBelow
// left is flagged in the table and with a warning line naming it; a memory store (no
// segments, capacity 0: unknown) and a node with room are not.
func TestAdminStatusFlagsFullDisk(t *testing.T) {
	var full, mem, roomy nodeRow
	full.ID, mem.ID, roomy.ID = "chunk-7", "chunk-m", "chunk-1"
	applyNodeStatus(&full, meta.NodeStatus{Shards: nodestat.Shards{Shards: 9, Bytes: 500 << 20, Segments: 3, Capacity: 4096}})
	applyNodeStatus(&mem, meta.NodeStatus{Shards: nodestat.Shards{Shards: 9, Bytes: 1 << 20}})
	applyNodeStatus(&roomy, meta.NodeStatus{Shards: nodestat.Shards{Shards: 9, Bytes: 1 << 20, Segments: 1, Capacity: 10 << 30}})
	if !full.Full || mem.Full || roomy.Full {
		t.Fatalf("full: %v %v %v, want true false false", full.Full, mem.Full, roomy.Full)
	}
	var out bytes.Buffer
	printClusterStatus(&out, clusterStatus{Nodes: []nodeRow{roomy, full, mem}})
	s := out.String()
	if !strings.Contains(s, "4.00 KiB (FULL)") {
		t.Errorf("table does not flag chunk-7:\n%s", s)
	}
	if !strings.Contains(s, "WARNING:  chunk-7: disk full (4.00 KiB left)") {
		t.Errorf("no warning for chunk-7:\n%s", s)
	}
	if strings.Count(s, "disk full") != 1 || strings.Count(s, "(FULL)") != 1 {
		t.Errorf("a node with room or a memory store is flagged:\n%s", s)
	}
}
