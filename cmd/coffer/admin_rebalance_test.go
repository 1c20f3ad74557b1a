package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/node"
	"github.com/cofferhq/coffer/node/nodetest"
	"github.com/cofferhq/coffer/placement"
)

// TestAdminRebalanceAddNodes adds two nodes (joining in the map) and applies the
// rebalance through the CLI: data moves to them, the bytes moved are within 10% of the
// plan's estimate, and the snapshot restores bit-identically during and after the move.
func TestAdminRebalanceAddNodes(t *testing.T) {
	if testing.Short() || os.Getenv("COFFER_FAULTS") == "" {
		t.Skip("cluster fault scenario: make test-faults (COFFER_FAULTS=1)")
	}
	c := nodetest.New(t, nodetest.Opts{Chunk: 8, Joining: 2, PGCount: 32, RepairInterval: 500 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfg := c.Connect(t)
	pass := []byte("correct horse battery staple")
	// NB: under heavy load the meta client may retry a create that did commit.
	if _, err := client.InitVault(ctx, cfg, "default", pass); err != nil && !errors.Is(err, meta.ErrExists) {
		t.Fatal(err)
	}
	ag, err := client.Open(ctx, cfg, "default", pass)
	if err != nil {
		t.Fatal(err)
	}
	defer ag.Close()
	src := filepath.Join(t.TempDir(), "src")
	nodetest.MakeTree(t, src, nodetest.TreeOpts{Seed: 11})
	blob := make([]byte, 6<<20)
	_, _ = rand.Read(blob)
	if err := os.WriteFile(filepath.Join(src, "blob"), blob, 0o644); err != nil {
		t.Fatal(err)
	}
	snap := backupOnce(t, ctx, ag, src)
	cli := func(args ...string) (int, string, string) {
		return runCLI(t, map[string]string{}, append([]string{"--config", node.DevClientConfig(c.Dir)}, args...)...)
	}
	// status asks `admin rebalance status --json`; a failed call (a meta leader
	// election under load) reports not ok and the caller polls again.
	status := func() (rebalanceStatusJSON, bool, string) {
		code, out, errOut := cli("--json", "admin", "rebalance", "status")
		var st rebalanceStatusJSON
		if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
			return st, false, errOut
		}
		return st, true, out
	}
	done := func() (bool, string) {
		st, ok, msg := status()
		return ok && st.Done, msg
	}
	moved := func() int64 {
		var st rebalanceStatusJSON
		poll(t, time.Minute, "rebalance status", func() (bool, string) {
			s, ok, msg := status()
			st = s
			return ok, msg
		})
		return st.Moved
	}
	poll(t, time.Minute, "healthy before the rebalance", done)
	// The plan sizes PGs from the repair passes' reports: wait until every chunk node has
	// completed a pass that began after the backup (the one running now may have listed
	// before the last writes).
	passes := map[string]int{}
	for _, n := range c.Nodes {
		if w := n.Repair(); w != nil {
			passes[n.ID()] = w.Status().Passes
		}
	}
	poll(t, time.Minute, "a repair pass after the backup on every chunk node", func() (bool, string) {
		for _, n := range c.Nodes {
			if w := n.Repair(); w != nil && w.Status().Passes < passes[n.ID()]+2 {
				return false, n.ID() + " has not passed again"
			}
		}
		return true, ""
	})
	for _, id := range []string{"chunk-7", "chunk-8"} {
		if st, _ := c.Node(id).Shards().Stats(ctx); st.Shards != 0 {
			t.Fatalf("joining node %s holds %d shards before the rebalance", id, st.Shards)
		}
	}

	code, out, errOut := cli("--json", "admin", "rebalance", "plan")
	var plan placement.Plan
	if code != 0 || json.Unmarshal([]byte(out), &plan) != nil {
		t.Fatalf("plan: exit %d, %s %s", code, out, errOut)
	}
	if plan.Bytes == 0 || plan.Positions == 0 {
		t.Fatalf("plan moves nothing: %+v", plan)
	}
	before := moved()

	// Restore while the data moves.
	var wg sync.WaitGroup
	var restoreErr error
	during := filepath.Join(t.TempDir(), "during")
	start := time.Now()
	code, out, errOut = cli("--json", "admin", "rebalance", "apply")
	if code != 0 {
		t.Fatalf("apply: exit %d, %s %s", code, out, errOut)
	}
	wg.Go(func() {
		_, restoreErr = ag.Restore(ctx, snap, client.RestoreOptions{Target: during})
	})
	poll(t, 3*time.Minute, "rebalance done", done)
	took := time.Since(start)
	wg.Wait()
	if restoreErr != nil {
		t.Fatalf("restore during the rebalance: %v", restoreErr)
	}
	nodetest.CompareTrees(t, src, filepath.Join(during, "src"))
	movedBytes := moved() - before
	t.Logf("plan: %d PGs, %d positions, %d bytes; moved %d bytes in %v (%.1f MB/s)",
		plan.PGs, plan.Positions, plan.Bytes, movedBytes, took.Round(time.Millisecond), float64(movedBytes)/took.Seconds()/1e6)
	if diff := movedBytes - plan.Bytes; diff > plan.Bytes/10 || -diff > plan.Bytes/10 {
		t.Fatalf("moved %d bytes, plan said %d (more than 10%% apart)", movedBytes, plan.Bytes)
	}
	for _, id := range []string{"chunk-7", "chunk-8"} {
		if st, _ := c.Node(id).Shards().Stats(ctx); st.Shards == 0 {
			t.Fatalf("new node %s holds no shard after the rebalance", id)
		}
	}
	after := filepath.Join(t.TempDir(), "after")
	if _, err := ag.Restore(ctx, snap, client.RestoreOptions{Target: after}); err != nil {
		t.Fatal(err)
	}
	nodetest.CompareTrees(t, src, filepath.Join(after, "src"))
}
