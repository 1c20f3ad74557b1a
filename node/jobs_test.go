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
	"github.com/cofferhq/coffer/node/nodetest"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
)

// TestAgentDaemonJobs is issue 15's acceptance for the agent daemon and jobs on a dev
// cluster: the daemon runs a policy scheduled every two seconds and records completed
// jobs; a policy whose pre-hook fails gives a failed job carrying the hook's output; a
// job whose agent goes silent is marked failed by the leader; the admin's job list
// shows all of them and the agent inventory the daemon. Then the attacks: one agent
// reports, beats and reads as another, and is refused.
func TestAgentDaemonJobs(t *testing.T) {
	c := nodetest.New(t, nodetest.Opts{Meta: 1, Chunk: 6, PGCount: 16, JobTimeout: 3 * time.Second})
	ctx := ctxT(t, 3*time.Minute)
	admin := c.Connect(t)
	if _, err := client.InitVault(ctx, admin, "v1", passphrase); err != nil {
		t.Fatal(err)
	}
	ajs := admin.Meta.(meta.JobService)
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "a.txt"), []byte("hello jobs"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "skip.tmp"), []byte("excluded"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []meta.BackupPolicy{
		{Name: "every2s", Schedule: "*/2 * * * * *", Paths: []string{src}, Excludes: []string{"*.tmp"}, Hosts: []string{"web01"}},
		{Name: "hookfail", Schedule: "*/3 * * * * *", Paths: []string{src}, Hosts: []string{"web01"},
			PreHook: "echo 'disk /mnt/data is not mounted' >&2; exit 3"},
		{Name: "dbonly", Schedule: "@daily", Paths: []string{src}, Hosts: []string{"db01"}},
	} {
		if _, err := ajs.PutPolicy(ctx, p, true); err != nil {
			t.Fatal(err)
		}
	}

	webID := identityFor(t, c, pki.IssueRequest{CommonName: "web01", Role: transport.RoleAgent, Vaults: []string{"v1"}})
	webCfg := nodetest.ConnectWith(t, webID, []string{c.WaitLeader(t).Addr()}, c.ChunkAddrs())
	web := webCfg.Meta.(meta.JobService)
	ag, err := client.Open(ctx, webCfg, "v1", passphrase)
	if err != nil {
		t.Fatal(err)
	}
	defer ag.Close()
	runner := agent.BackupRunner{Agent: ag, Locker: webCfg.Meta.(meta.RetentionService), Vault: "v1"}
	d, err := agent.New(agent.Config{Jobs: web, Run: runner.Run, Hostname: "web01.test", Version: "test", Vault: "v1",
		Logger: nodetest.Logger(t), Poll: time.Second, Heartbeat: time.Second, MaxJitter: 200 * time.Millisecond, Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	hp, err := web.HostPolicies(ctx, "", 0)
	if err != nil || len(hp.Policies) != 2 {
		t.Fatalf("web01's policies: %+v %v", hp, err)
	}
	dctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.Run(dctx) }()

	// Wait for two completed runs of every2s and one failed run of hookfail.
	var jobs []meta.Job
	deadline := time.Now().Add(2 * time.Minute)
	for {
		jobs, err = ajs.ListJobs(ctx, meta.JobFilter{Host: "web01"})
		if err != nil {
			t.Fatal(err)
		}
		completed, failed := 0, 0
		for _, j := range jobs {
			switch {
			case j.Policy == "every2s" && j.Status == meta.JobCompleted:
				completed++
			case j.Policy == "hookfail" && j.Status == meta.JobFailed:
				failed++
			}
		}
		if completed >= 2 && failed >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 2 min: %d completed every2s jobs, %d failed hookfail jobs: %+v", completed, failed, jobs)
		}
		time.Sleep(200 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("daemon: %v", err)
	}
	for _, j := range jobs {
		switch {
		case j.Policy == "every2s" && j.Status == meta.JobCompleted:
			if j.Snapshot == "" || j.Trigger != meta.TriggerSchedule || j.Stats.Files() != 1 || j.End.IsZero() || j.AgentVersion != "test" {
				t.Fatalf("completed job %+v (want a snapshot of one file: skip.tmp is excluded)", j)
			}
		case j.Policy == "hookfail" && j.Status == meta.JobFailed:
			if !strings.Contains(j.Error, "pre-hook") || !strings.Contains(j.Error, "disk /mnt/data is not mounted") || j.Snapshot != "" {
				t.Fatalf("failed job's error %q lacks the hook's message", j.Error)
			}
		}
	}

	// An agent that dies mid-job: its job is opened and then nothing more is heard of
	// it; the leader marks it failed after the jobs timeout (3 s of cluster time).
	orphan, err := web.StartJob(ctx, meta.JobStart{Policy: "every2s", Vault: "v1", Trigger: meta.TriggerSchedule})
	if err != nil {
		t.Fatal(err)
	}
	for {
		js, err := ajs.ListJobs(ctx, meta.JobFilter{Host: "web01", Failed: true})
		if err != nil {
			t.Fatal(err)
		}
		var got *meta.Job
		for i := range js {
			if js[i].ID == orphan.ID {
				got = &js[i]
			}
		}
		if got != nil {
			if !strings.Contains(got.Error, "no heartbeat") || got.End.Sub(got.Updated) < 3*time.Second {
				t.Fatalf("expired job %+v", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s of the silent agent was not failed by the leader", orphan.ID)
		}
		time.Sleep(200 * time.Millisecond)
	}

	agents, err := ajs.ListAgents(ctx)
	if err != nil || len(agents) != 1 || agents[0].Host != "web01" || agents[0].Hostname != "web01.test" || agents[0].LastSeen.IsZero() ||
		agents[0].LastJob != orphan.ID || agents[0].LastStatus != meta.JobFailed || len(agents[0].NextRuns) != 2 {
		t.Fatalf("agents %+v %v", agents, err)
	}

	// Attacks: db01 acts as web01.
	dbID := identityFor(t, c, pki.IssueRequest{CommonName: "db01", Role: transport.RoleAgent, Vaults: []string{"v1"}})
	db := nodetest.ConnectWith(t, dbID, []string{c.WaitLeader(t).Addr()}, c.ChunkAddrs()).Meta.(meta.JobService)
	running, err := web.StartJob(ctx, meta.JobStart{Trigger: meta.TriggerManual, Vault: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	denied := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, meta.ErrDenied) {
			t.Errorf("%s: %v, want permission denied", what, err)
		}
	}
	_, err = db.ReportJob(ctx, meta.JobReport{ID: running.ID, Final: true, Status: meta.JobCompleted})
	denied("db01 reports web01's job", err)
	_, err = db.StartJob(ctx, meta.JobStart{Host: "web01", Trigger: meta.TriggerManual})
	denied("db01 starts a job as web01", err)
	denied("db01 beats as web01", db.Heartbeat(ctx, meta.Heartbeat{Host: "web01"}))
	denied("db01 keeps web01's job alive", db.Heartbeat(ctx, meta.Heartbeat{Running: []string{running.ID}}))
	_, err = db.HostPolicies(ctx, "web01", 0)
	denied("db01 reads web01's policies", err)
	_, err = db.ListJobs(ctx, meta.JobFilter{Host: "web01"})
	denied("db01 lists web01's jobs", err)
	_, err = db.ListPolicies(ctx)
	denied("an agent lists every policy", err)
	_, err = db.PutPolicy(ctx, meta.BackupPolicy{Name: "evil", Schedule: "@daily", Paths: []string{"/"}, Hosts: []string{"web01"}}, true)
	denied("an agent creates a policy", err)
	if hp, err := db.HostPolicies(ctx, "", 0); err != nil || len(hp.Policies) != 1 || hp.Policies[0].Name != "dbonly" {
		t.Fatalf("db01's own policies: %+v %v", hp, err)
	}
	if js, err := db.ListJobs(ctx, meta.JobFilter{}); err != nil || len(js) != 0 {
		t.Fatalf("db01 sees jobs that are not its own: %+v %v", js, err)
	}
	if j, err := ajs.ListJobs(ctx, meta.JobFilter{Host: "web01"}); err != nil || j[len(j)-1].ID != running.ID || j[len(j)-1].Status != meta.JobRunning {
		t.Fatalf("web01's job changed by the refused report: %+v %v", j, err)
	}
}
