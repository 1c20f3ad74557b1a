package main

import (
	"context"
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

// TestReplicateCLI drives a replication through the CLI across two clusters: a key and
// CSR made on the target (cert request), a replication certificate issued on the source
// (admin cert issue --role replication), a job added on the target (admin replicate add,
// refused first for a vault the certificate does not name), a run requested (admin
// replicate run) and seen completed in admin replicate list and coffer jobs, the
// snapshot present in the replica, and the job removed.
func TestReplicateCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster scenario")
	}
	src := nodetest.New(t, nodetest.Opts{Meta: 1, Chunk: 6, PGCount: 16})
	dst := nodetest.New(t, nodetest.Opts{Meta: 1, Chunk: 6, PGCount: 16})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pass := []byte("correct horse battery staple")
	cfg := src.Connect(t)
	if _, err := client.InitVault(ctx, cfg, "web", pass); err != nil && !errors.Is(err, meta.ErrExists) {
		t.Fatal(err)
	}
	ag, err := client.Open(ctx, cfg, "web", pass)
	if err != nil {
		t.Fatal(err)
	}
	defer ag.Close()
	tree := filepath.Join(t.TempDir(), "tree")
	if err := os.MkdirAll(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "a.txt"), []byte(strings.Repeat("replicate me\n", 5000)), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := ag.Backup(ctx, client.BackupOptions{Paths: []string{tree}})
	if err != nil {
		t.Fatal(err)
	}
	on := func(c *nodetest.Cluster) func(args ...string) (int, string, string) {
		return func(args ...string) (int, string, string) {
			t.Helper()
			return runCLI(t, map[string]string{}, append([]string{"--config", node.DevClientConfig(c.Dir)}, args...)...)
		}
	}
	target, source := on(dst), on(src)
	dir := t.TempDir()
	key, csr, cert := filepath.Join(dir, "job-key.pem"), filepath.Join(dir, "job.csr"), filepath.Join(dir, "job.pem")
	if code, _, errs := target("cert", "request", "--principal", "site-b", "--key", key, "--csr", csr); code != exitOK {
		t.Fatalf("cert request: %d %s", code, errs)
	}
	if code, _, errs := source("admin", "cert", "issue", "--role", "replication", "--principal", "site-b", "--csr", csr, "--out", cert); code != exitUsage || !strings.Contains(errs, "--vaults is required") {
		t.Fatalf("replication certificate without --vaults: exit %d %s, want a usage error", code, errs)
	}
	if code, _, errs := source("admin", "cert", "issue", "--role", "replication", "--principal", "site-b", "--csr", csr, "--vaults", "web", "--out", cert); code != exitOK {
		t.Fatalf("admin cert issue --role replication: %d %s", code, errs)
	}
	add := []string{"admin", "replicate", "add", "--source", src.WaitLeader(t).Addr(), "--source-ca", filepath.Join(src.Dir, "pki", "ca.pem"),
		"--cert", cert, "--key", key, "--limit-rate", "10M"}
	if code, _, errs := target(append(add, "--vault", "db")...); code != exitFailure || !strings.Contains(errs, "not db") {
		t.Fatalf("replicate add for a vault the certificate does not name: exit %d %s", code, errs)
	}
	if code, out, errs := target(append(add, "--vault", "web")...); code != exitOK || !strings.Contains(out, "replication web") {
		t.Fatalf("replicate add: %d %q %s", code, out, errs)
	}
	if code, out, errs := target("admin", "replicate", "run", "web"); code != exitOK || !strings.Contains(out, "run requested") {
		t.Fatalf("replicate run: %d %q %s", code, out, errs)
	}
	var jobs []meta.Replication
	poll(t, time.Minute, "the requested run", func() (bool, string) {
		code, out, errs := target("--json", "admin", "replicate", "list")
		if code != exitOK {
			return false, errs
		}
		jobs = nil
		if err := json.Unmarshal([]byte(out), &jobs); err != nil || len(jobs) != 1 {
			return false, out
		}
		return jobs[0].State.LastStatus != "", out
	})
	if j := jobs[0]; j.State.LastStatus != meta.JobCompleted || j.State.Snapshots != 1 || j.State.Bytes == 0 || j.LimitRate != 10<<20 {
		t.Fatalf("job after the run: %+v", j)
	}
	if code, out, _ := target("admin", "replicate", "list"); code != exitOK || !strings.Contains(out, "completed") || !strings.Contains(out, "10.0 MiB/s") {
		t.Fatalf("replicate list: %d %q", code, out)
	}
	if code, out, errs := target("jobs", "--policy", "web"); code != exitOK || !strings.Contains(out, "replication") || !strings.Contains(out, "completed") {
		t.Fatalf("jobs --policy web: %d %q %s", code, out, errs)
	}
	if _, err := dst.Connect(t).Meta.GetSnapshot(ctx, "web", res.Snapshot.ID); err != nil {
		t.Fatalf("the snapshot in the replica: %v", err)
	}
	if code, _, errs := target("admin", "replicate", "remove", "web"); code != exitOK {
		t.Fatalf("replicate remove: %d %s", code, errs)
	}
	if code, out, _ := target("admin", "replicate", "list"); code != exitOK || !strings.Contains(out, "no replication jobs") {
		t.Fatalf("replicate list after remove: %d %q", code, out)
	}
	if code, _, errs := target("admin", "replicate", "run", "web"); code != exitFailure || !strings.Contains(errs, "no replication job web") {
		t.Fatalf("replicate run of a removed job: %d %s", code, errs)
	}
}
