package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/client/clientconfig"
	"github.com/cofferhq/coffer/node"
	"github.com/cofferhq/coffer/node/nodetest"
)

// TestCLIVaultDeleteFinalSnapshot: `coffer vault delete --final-snapshot` asks the agent
// of the vault's host (a running `coffer agent run`) for a last run of its policy, waits
// for the completed job, then soft-deletes the vault.
func TestCLIVaultDeleteFinalSnapshot(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c := nodetest.New(t, nodetest.Opts{})
	dir := t.TempDir()
	adminEnv := map[string]string{"COFFER_CONFIG": node.DevClientConfig(c.Dir)}
	f, err := clientconfig.Load(node.DevClientConfig(c.Dir))
	if err != nil {
		t.Fatal(err)
	}
	code, out, stderr := cli(t, adminEnv, "admin", "enroll-token", "create", "--vault", "web", "--name", "web01", "--ttl", "1h")
	if code != exitOK {
		t.Fatalf("enroll-token create: exit %d: %s %s", code, out, stderr)
	}
	agentDir := filepath.Join(dir, "agent")
	if code, out, stderr := cli(t, map[string]string{}, "agent", "enroll", "--token", strings.TrimSpace(out),
		"--meta", strings.Join(f.Meta, ","), "--ca", f.CA, "--out", agentDir); code != exitOK {
		t.Fatalf("agent enroll: exit %d: %s %s", code, out, stderr)
	}
	agentEnv := map[string]string{
		"COFFER_CONFIG":     filepath.Join(agentDir, "coffer.yaml"),
		"COFFER_PASSPHRASE": "final snapshot passphrase",
		"COFFER_CACHE_DIR":  filepath.Join(dir, "cache"),
	}
	if code, _, stderr := cli(t, agentEnv, "init"); code != exitOK {
		t.Fatalf("init: exit %d: %s", code, stderr)
	}
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "a.txt"), []byte("last words"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out, stderr := cli(t, adminEnv, "admin", "policy", "create", "nightly", "--schedule", "0 3 * * *",
		"--path", src, "--host", "web01"); code != exitOK {
		t.Fatalf("policy create: exit %d: %s %s", code, out, stderr)
	}
	// One manual backup so the host's jobs name the vault.
	if code, _, stderr := cli(t, agentEnv, "backup", src); code != exitOK {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	a, _, _ := newTestApp(agentEnv)
	logs := &syncBuffer{}
	a.stderr = logs
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- a.main(ctx, []string{"agent", "run", "--max-jitter", "0", "--poll", "500ms", "--heartbeat", "1s"})
	}()
	defer func() {
		cancel()
		<-done
	}()
	// The daemon's first heartbeat records the agent the request goes to.
	for deadline := time.Now().Add(time.Minute); ; {
		if _, out, _ := cli(t, adminEnv, "--json", "admin", "agents"); strings.Contains(out, `"web01"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent never sent a heartbeat:\n%s", logs.String())
		}
		time.Sleep(200 * time.Millisecond) // poll interval
	}
	code, out, stderr = cli(t, adminEnv, "--vault", "web", "--json", "vault", "delete", "--final-snapshot", "--wait", "2m", "--reason", "retired")
	if code != exitOK || !strings.Contains(out, `"deleted"`) {
		t.Fatalf("vault delete --final-snapshot: exit %d: %s %s\nagent log:\n%s", code, out, stderr, logs.String())
	}
	var final int
	for _, j := range cliJobs(t, adminEnv, "--host", "web01", "--policy", "nightly") {
		if j.Status == "completed" && j.Trigger == "manual" && j.Snapshot != "" {
			final++
		}
	}
	if final != 1 {
		t.Fatalf("%d completed final runs of nightly, want 1", final)
	}
}
