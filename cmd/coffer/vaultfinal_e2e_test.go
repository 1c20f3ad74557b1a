package main

import (
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/node/nodetest"
)

// TestCLIVaultDeleteFinalSnapshot: `coffer vault delete --final-snapshot` asks the agent
// of the vault's host (a running `coffer agent run`) for a last run of its policy, waits
// for the completed job, then soft-deletes the vault.
func TestCLIVaultDeleteFinalSnapshot(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	h := newAgentHost(t, nodetest.Opts{}, "final snapshot passphrase", []string{"nightly", "--schedule", "0 3 * * *"})
	adminEnv, agentEnv, src := h.adminEnv, h.agentEnv, h.src
	// One manual backup so the host's jobs name the vault.
	if code, _, stderr := cli(t, agentEnv, "backup", src); code != exitOK {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	d := startAgentDaemon(agentEnv, "agent", "run", "--max-jitter", "0", "--poll", "500ms", "--heartbeat", "1s")
	defer d.stop()
	// The daemon's first heartbeat records the agent the request goes to.
	for deadline := time.Now().Add(time.Minute); ; {
		if _, out, _ := cli(t, adminEnv, "--json", "admin", "agents"); strings.Contains(out, `"web01"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent never sent a heartbeat:\n%s", d.logs.String())
		}
		time.Sleep(200 * time.Millisecond) // poll interval
	}
	code, out, stderr := cli(t, adminEnv, "--vault", "web", "--json", "vault", "delete", "--final-snapshot", "--wait", "2m", "--reason", "retired")
	if code != exitOK || !strings.Contains(out, `"deleted"`) {
		t.Fatalf("vault delete --final-snapshot: exit %d: %s %s\nagent log:\n%s", code, out, stderr, d.logs.String())
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
