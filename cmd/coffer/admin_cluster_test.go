package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/node"
	"github.com/cofferhq/coffer/node/nodetest"
)

// poll calls cond every 200 ms until it returns true or d passes.
func poll(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	last := ""
	for time.Now().Before(deadline) {
		ok, msg := cond()
		if ok {
			return
		}
		last = msg
		time.Sleep(200 * time.Millisecond) // polling interval, not synchronisation
	}
	t.Fatalf("%s: not reached within %v (last: %s)", what, d, last)
}

// TestAdminDrainDecommission drives the node lifecycle through the CLI against a real
// cluster: decommission is refused for an active node and right after a drain (naming
// PGs), accepted once `admin pgs` shows every PG healthy; a deep scrub afterwards finds
// no missing shard, the snapshot restores bit-identically and the audit list has every
// action, refusals included.
func TestAdminDrainDecommission(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster scenario")
	}
	c := nodetest.New(t, nodetest.Opts{Chunk: 7, PGCount: 16, RepairInterval: 500 * time.Millisecond})
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
	nodetest.MakeTree(t, src, nodetest.TreeOpts{Seed: 9})
	blob := make([]byte, 3<<20)
	_, _ = rand.Read(blob)
	if err := os.WriteFile(filepath.Join(src, "blob"), blob, 0o644); err != nil {
		t.Fatal(err)
	}
	snap := backupOnce(t, ctx, ag, src)

	env := map[string]string{}
	cli := func(args ...string) (int, string, string) {
		return runCLI(t, env, append([]string{"--config", node.DevClientConfig(c.Dir)}, args...)...)
	}
	pgsHealthy := func() (bool, string) {
		code, out, errOut := cli("admin", "pgs", "--json")
		if code != 0 {
			return false, errOut
		}
		var p pgsJSON
		if err := json.Unmarshal([]byte(out), &p); err != nil {
			t.Fatalf("admin pgs --json: %v: %s", err, out)
		}
		return p.Counts["healthy"] == int(p.PGCount), out
	}
	poll(t, time.Minute, "healthy PGs before the drain", pgsHealthy)

	if code, _, errOut := cli("admin", "node", "decommission", "chunk-3"); code != exitFailure || !strings.Contains(errOut, "drain it first") {
		t.Fatalf("decommission of an active node: exit %d, %s", code, errOut)
	}
	code, out, errOut := cli("--json", "admin", "node", "drain", "chunk-3", "--reason", "test")
	var act nodeActionJSON
	if code != 0 || json.Unmarshal([]byte(out), &act) != nil || act.State != "draining" {
		t.Fatalf("drain: exit %d, %s %s", code, out, errOut)
	}
	if code, _, errOut := cli("admin", "node", "decommission", "chunk-3"); code != exitFailure || !strings.Contains(errOut, "pg ") {
		t.Fatalf("decommission right after the drain: exit %d, %s (want a refusal naming PGs)", code, errOut)
	}
	start := time.Now()
	poll(t, 2*time.Minute, "PGs re-protected after the drain", pgsHealthy)
	t.Logf("drain re-protected in %v", time.Since(start).Round(time.Millisecond))
	if code, out, errOut := cli("admin", "node", "decommission", "chunk-3", "--reason", "retired"); code != 0 || !strings.Contains(out, "decommissioned") {
		t.Fatalf("decommission once re-protected: exit %d, %s %s", code, out, errOut)
	}
	if st, err := c.Node("chunk-3").Shards().Stats(ctx); err != nil || st.Shards != 0 {
		t.Fatalf("decommissioned node still holds %d shards (%v)", st.Shards, err)
	}

	// A deep scrub afterwards finds nothing missing.
	if code, out, errOut := cli("admin", "scrub", "start"); code != 0 {
		t.Fatalf("scrub start: exit %d, %s%s", code, out, errOut)
	}
	poll(t, 2*time.Minute, "deep scrub done", func() (bool, string) {
		code, out, errOut := cli("admin", "scrub", "status", "--json")
		if code != 0 {
			return false, errOut
		}
		var st scrubStatusJSON
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatal(err)
		}
		done := 0
		for _, n := range st.Nodes {
			if n.Node == "chunk-3" {
				continue
			}
			if n.LastDeep.Deep {
				if n.LastDeep.Missing != 0 || n.LastDeep.Corrupt != 0 || n.LastDeep.Unreadable != 0 {
					t.Fatalf("deep scrub on %s after decommission found %+v", n.Node, n.LastDeep)
				}
				done++
			}
		}
		return done == 6, out
	})
	target := filepath.Join(t.TempDir(), "restore")
	if _, err := ag.Restore(ctx, snap, client.RestoreOptions{Target: target}); err != nil {
		t.Fatal(err)
	}
	nodetest.CompareTrees(t, src, filepath.Join(target, "src"))

	code, out, errOut = cli("--json", "admin", "audit")
	var es []meta.AuditEntry
	if code != 0 || json.Unmarshal([]byte(out), &es) != nil {
		t.Fatalf("audit: exit %d, %s %s", code, out, errOut)
	}
	var got []string
	for _, e := range es {
		if !strings.HasPrefix(e.Action, "node.decommission") && !strings.HasPrefix(e.Action, "node.drain") {
			continue // vault creation and scrub starts are audited too; this test is about the lifecycle
		}
		o, _, _ := strings.Cut(e.Outcome, ":")
		got = append(got, e.Action+" "+e.Target+" "+o+" "+e.Principal)
	}
	want := []string{"node.decommission chunk-3 refused dev-admin", "node.drain chunk-3 ok dev-admin",
		"node.decommission chunk-3 refused dev-admin", "node.decommission chunk-3 ok dev-admin"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("audit list:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// backupOnce backs src up. NB: under heavy load the meta client may retry a commit
// that did succeed and report ErrExists; the committed snapshot is then the latest.
func backupOnce(t *testing.T, ctx context.Context, ag *client.Agent, src string) meta.Snapshot {
	t.Helper()
	res, err := ag.Backup(ctx, client.BackupOptions{Paths: []string{src}})
	if err == nil {
		return res.Snapshot
	}
	if !errors.Is(err, meta.ErrExists) {
		t.Fatal(err)
	}
	snaps, lerr := ag.Snapshots(ctx)
	if lerr != nil || len(snaps) == 0 {
		t.Fatalf("backup: %v; snapshots: %v", err, lerr)
	}
	return snaps[len(snaps)-1]
}
