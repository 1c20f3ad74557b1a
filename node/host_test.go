package node_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/client/agent"
	"github.com/cofferhq/coffer/meta"
	metaserver "github.com/cofferhq/coffer/meta/server"
	"github.com/cofferhq/coffer/node/nodetest"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
)

// TestHostDecommission is issue 19's decommission acceptance on a whole cluster: a host
// with a schedule and a locked snapshot; the dependency listing names both; a running
// job of the host refuses the decommission; the final-snapshot request makes the host's
// agent daemon run its policy once (a completed job); after the decommission the host's
// certificate is refused, its snapshots stay restorable by an admin until the keep
// window ends, then the leader forgets them, the locked one only after its lock;
// reinstating works within the window (and not after the expiry); the audit log shows
// every step.
func TestHostDecommission(t *testing.T) {
	c := nodetest.New(t, nodetest.Opts{RetentionInterval: time.Second})
	ctx := ctxT(t, 5*time.Minute)
	admin := c.Connect(t)
	if _, err := client.InitVault(ctx, admin, "v1", passphrase); err != nil {
		t.Fatal(err)
	}
	ha := admin.Meta.(meta.HostAdmin)
	ajs := admin.Meta.(meta.JobService)
	rs := admin.Meta.(meta.RetentionService)
	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "a.txt"), []byte("retire me"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ajs.PutPolicy(ctx, meta.BackupPolicy{Name: "nightly", Schedule: "0 3 * * *", Paths: []string{src}, Hosts: []string{"web01"}}, true); err != nil {
		t.Fatal(err)
	}
	webID := identityFor(t, c, pki.IssueRequest{CommonName: "web01", Role: transport.RoleAgent, Vaults: []string{"v1"}})
	webCfg := nodetest.ConnectWith(t, webID, []string{c.WaitLeader(t).Addr()}, c.ChunkAddrs())
	webCfg.Host = "web01"
	web := webCfg.Meta.(meta.JobService)
	ag, err := client.Open(ctx, webCfg, "v1", passphrase)
	if err != nil {
		t.Fatal(err)
	}
	defer ag.Close()
	first, err := ag.Backup(ctx, client.BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	locked := first.Snapshot
	lockEnd := time.Now().Add(20 * time.Second).UTC()
	if _, err := rs.SetLock(ctx, "v1", locked.ID, meta.Lock{Mode: meta.Governance, Until: lockEnd}, meta.Bypass{}); err != nil {
		t.Fatal(err)
	}
	runner := agent.BackupRunner{Agent: ag, Locker: webCfg.Meta.(meta.RetentionService), Vault: "v1"}
	d, err := agent.New(agent.Config{Jobs: web, Run: runner.Run, Hostname: "web01.test", Version: "test", Vault: "v1",
		Logger: nodetest.Logger(t), Poll: 300 * time.Millisecond, Heartbeat: 300 * time.Millisecond, MaxJitter: -1, Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	dctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- d.Run(dctx) }()

	poll := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("after 2 min: no %s", what)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	var deps meta.HostDependencies
	poll("dependency listing with the schedule and the locked snapshot", func() bool {
		deps, err = ha.HostDependencies(ctx, "web01")
		return err == nil && deps.Agent != nil && len(deps.NextRuns) == 1
	})
	if len(deps.Policies) != 1 || deps.Policies[0] != "nightly" || deps.NextRuns[0].Policy != "nightly" || len(deps.Snapshots) != 1 ||
		deps.Snapshots[0].ID != locked.ID || !strings.Contains(deps.Snapshots[0].Protected, "governance-locked until") {
		t.Fatalf("dependencies %+v", deps)
	}

	// A running job of the host refuses the decommission.
	running, err := web.StartJob(ctx, meta.JobStart{Trigger: meta.TriggerManual, Vault: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ha.DecommissionHost(ctx, meta.HostDecommission{Host: "web01"}); !errors.Is(err, meta.ErrInvalid) || !strings.Contains(err.Error(), running.ID) {
		t.Fatalf("decommission with a running job: %v, want a refusal naming %s", err, running.ID)
	}
	if _, err := web.ReportJob(ctx, meta.JobReport{ID: running.ID, Final: true, Status: meta.JobCompleted}); err != nil {
		t.Fatal(err)
	}

	// Final snapshot: the daemon runs the policy once, at once.
	at, err := ha.RequestHostRun(ctx, "web01")
	if err != nil {
		t.Fatal(err)
	}
	var final meta.Job
	poll("completed final-snapshot job", func() bool {
		jobs, err := ajs.ListJobs(ctx, meta.JobFilter{Host: "web01", Policy: "nightly"})
		for _, j := range jobs {
			if err == nil && !j.Start.Before(at) && j.Status == meta.JobCompleted {
				final = j
				return true
			}
		}
		return false
	})
	if final.Trigger != meta.TriggerManual || final.Snapshot == "" {
		t.Fatalf("final job %+v", final)
	}

	// Decommission, then reinstate within the window.
	if _, err := ha.DecommissionHost(ctx, meta.HostDecommission{Host: "web01", KeepFor: time.Hour, Reason: "first try"}); err != nil {
		t.Fatal(err)
	}
	if hp, err := ajs.HostPolicies(ctx, "web01", 0); err != nil || !hp.Retired || len(hp.Policies) != 0 {
		t.Fatalf("a retired host's policies: %+v %v", hp, err)
	}
	if _, err := ha.DecommissionHost(ctx, meta.HostDecommission{Host: "web01"}); !errors.Is(err, meta.ErrExists) {
		t.Fatalf("second decommission: %v, want ErrExists", err)
	}
	back, err := ha.ReinstateHost(ctx, "web01")
	if err != nil || back.Retired != nil {
		t.Fatalf("reinstate within the window: %+v %v", back, err)
	}
	if hp, err := ajs.HostPolicies(ctx, "web01", 0); err != nil || hp.Retired || len(hp.Policies) != 1 {
		t.Fatalf("a reinstated host's policies: %+v %v", hp, err)
	}

	// The host's certificate is refused after the decommission.
	stop()
	if err := <-done; err != nil {
		t.Fatalf("daemon: %v", err)
	}
	retired, err := ha.DecommissionHost(ctx, meta.HostDecommission{Host: "web01", KeepFor: 3 * time.Second, Reason: "replaced by web02"})
	if err != nil {
		t.Fatal(err)
	}
	poll("the host's certificate refused", func() bool {
		_, err := web.HostPolicies(ctx, "", 0)
		return err != nil && !errors.Is(err, meta.ErrUnavailable)
	})

	// Restorable by an admin while the window lasts.
	aa, err := client.Open(ctx, admin, "v1", passphrase)
	if err != nil {
		t.Fatal(err)
	}
	defer aa.Close()
	snap, err := aa.FindSnapshot(ctx, final.Snapshot[:16])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := aa.Restore(ctx, snap, client.RestoreOptions{Target: filepath.Join(t.TempDir(), "restore")}); err != nil {
		t.Fatalf("admin restore of the retired host's snapshot: %v", err)
	}
	if retired.Retired.KeepUntil.IsZero() {
		t.Fatalf("retirement %+v without its keep window", retired.Retired)
	}

	// After the window: the unlocked snapshots go, the locked one stays until its lock ends.
	snapshots := func() ([]meta.Snapshot, bool) {
		ss, err := aa.Snapshots(ctx)
		return ss, err == nil
	}
	poll("the unlocked snapshots forgotten after the window", func() bool {
		ss, ok := snapshots()
		return ok && len(ss) == 1 && ss[0].ID == locked.ID
	})
	if time.Now().After(lockEnd) {
		t.Logf("the machine is slow: the lock ended before the check")
	}
	poll("the locked snapshot forgotten after its lock", func() bool { ss, ok := snapshots(); return ok && len(ss) == 0 })
	if !time.Now().After(lockEnd.Add(-time.Second)) {
		t.Fatalf("the locked snapshot went before its lock ended (%s)", lockEnd)
	}
	if _, err := ha.ReinstateHost(ctx, "web01"); !errors.Is(err, meta.ErrInvalid) {
		t.Fatalf("reinstate after the snapshots expired: %v, want a refusal", err)
	}

	log := onLeader(t, c, func(l *metaserver.Server) ([]meta.AuditEntry, error) {
		return l.AuditLog(meta.WithPrincipal(ctx, meta.Principal{Name: "ops", Role: meta.RoleAdmin}), 0, 0)
	})
	seen := map[string]int{}
	for _, e := range log {
		if e.Target == "web01" || strings.Contains(e.Target, "principal web01") {
			seen[e.Action+"/"+e.Outcome]++
		}
	}
	for _, want := range []string{"host final snapshot request/ok", "host decommission/ok", "host decommission/refused", "cert revoke/ok", "host reinstate/ok", "host expire/ok"} {
		if seen[want] == 0 {
			t.Errorf("audit log lacks %s (has %v)", want, seen)
		}
	}
}
