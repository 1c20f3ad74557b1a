package node_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/client/agent"
	"github.com/cofferhq/coffer/meta"
	metaserver "github.com/cofferhq/coffer/meta/server"
	"github.com/cofferhq/coffer/node/nodetest"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
)

// TestVerifyJobCatchesIrreparableChunk is issue 15's verify acceptance on a whole
// cluster: a sampled verify job over two fresh snapshots completes with its report on
// its job record; then every shard of one data chunk is corrupted on the chunk nodes'
// stores (beyond what parity repairs), and a full verify job fails naming that chunk,
// its report kept on its own record (the first job's unchanged), and the webhook
// receiver gets the verify-failed alert.
func TestVerifyJobCatchesIrreparableChunk(t *testing.T) {
	var mu sync.Mutex
	got := map[meta.AlertKind][]string{}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p struct {
			Kind    meta.AlertKind `json:"kind"`
			Message string         `json:"message"`
		}
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		got[p.Kind] = append(got[p.Kind], p.Message)
		mu.Unlock()
	}))
	defer hs.Close()

	c := nodetest.New(t, nodetest.Opts{})
	cfg := c.Connect(t)
	ctx := ctxT(t, 5*time.Minute)
	if _, err := client.InitVault(ctx, cfg, "default", passphrase); err != nil {
		t.Fatalf("init: %v", err)
	}
	a, err := client.Open(ctx, cfg, "default", passphrase)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer a.Close()
	jobs, ok := cfg.Meta.(meta.JobService)
	if !ok {
		t.Fatalf("%T is not a meta.JobService", cfg.Meta)
	}
	admin := meta.WithPrincipal(ctx, meta.Principal{Name: "ops", Role: meta.RoleAdmin})
	onLeader(t, c, func(l *metaserver.Server) (meta.AlertSink, error) {
		return l.SetAlertSink(admin, meta.AlertSink{Name: "pager", Kind: meta.SinkWebhook, URL: hs.URL})
	})

	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 3<<20)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "big.bin"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	backup(t, a, src)
	if err := os.WriteFile(filepath.Join(src, "note.txt"), []byte("second snapshot\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	snap := backup(t, a, src)

	start := meta.JobStart{Host: "web01", Policy: "nightly", Trigger: meta.TriggerSchedule}
	first, err := a.RunVerifyJob(ctx, jobs, start, client.VerifyOptions{Sample: 2, Seed: 1})
	if err != nil {
		t.Fatalf("sampled verify: %v", err)
	}
	if first.Kind != meta.JobVerify || first.Status != meta.JobCompleted || first.Report == nil {
		t.Fatalf("sampled verify job = %+v, want a completed verify job with a report", first)
	}
	if r := first.Report; r.Snapshots != 2 || r.Bad != 0 || r.Chunks < 3 || r.Full {
		t.Fatalf("sampled report = %+v, want 2 snapshots, at least 3 chunks, none bad", r)
	}
	// A second sampled run has no new snapshot to check.
	again, err := a.RunVerifyJob(ctx, jobs, start, client.VerifyOptions{Sample: 2, Seed: 2})
	if err != nil || again.Report == nil || again.Report.Snapshots != 0 || again.Status != meta.JobCompleted {
		t.Fatalf("second sampled verify = %+v, %v; want completed with no snapshot checked", again, err)
	}

	// Corrupt every shard of big.bin's first data chunk wherever it is stored.
	var victim chunk.ID
	if err := a.List(ctx, snap, "/", func(e client.Entry) error {
		if strings.HasSuffix(e.Path, "big.bin") && len(e.Node.Content) > 0 {
			victim = e.Node.Content[0].ID
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if victim == (chunk.ID{}) {
		t.Fatal("big.bin has no data chunk")
	}
	flipped := corruptChunk(t, c, victim)
	if flipped < 2 {
		t.Fatalf("flipped %d shards of chunk %s, want all of its stripe", flipped, victim.Str())
	}

	failed, err := a.RunVerifyJob(ctx, jobs, start, client.VerifyOptions{Full: true})
	if err != nil {
		t.Fatalf("full verify ran with error %v (bad chunks belong in the report)", err)
	}
	if failed.Status != meta.JobFailed || failed.Report == nil || failed.Report.Bad != 1 || !failed.Report.Full {
		t.Fatalf("full verify job = %+v (report %+v), want failed with one bad chunk", failed, failed.Report)
	}
	if f := failed.Report.Findings; len(f) != 1 || f[0].Chunk != victim.String() {
		t.Fatalf("findings %+v, want chunk %s", f, victim)
	}
	t.Logf("full verify: %s; %d chunks read, %d bad: %s", failed.Error, failed.Report.Chunks, failed.Report.Bad, failed.Report.Findings[0].Error)
	// Each job keeps its own report.
	list, err := jobs.ListJobs(ctx, meta.JobFilter{Host: "web01"})
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range list {
		if j.ID == first.ID && (j.Report == nil || j.Report.Bad != 0 || j.Report.Snapshots != 2) {
			t.Errorf("first verify job's report changed: %+v", j.Report)
		}
	}

	deadline := time.Now().Add(time.Minute)
	for {
		mu.Lock()
		msgs := got[meta.AlertVerifyFailed]
		mu.Unlock()
		if len(msgs) > 0 {
			t.Logf("verify-failed alert: %s", msgs[0])
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no verify-failed alert reached the receiver (got %v)", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// corruptChunk flips a byte of every shard of chunk id on every chunk node's store
// (beyond what parity repairs) and returns how many shards it changed.
func corruptChunk(t *testing.T, c *nodetest.Cluster, victim chunk.ID) int {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	flipped := 0
	for _, n := range c.Nodes {
		s := n.Shards()
		if s == nil {
			continue
		}
		for i := range 64 {
			key := chunkstore.ShardKey{ID: victim, Index: uint8(i)}
			if has, _ := s.HasShards(ctx, []chunkstore.ShardKey{key}); len(has) != 1 || !has[0] {
				continue
			}
			path, off, _, err := s.Locate(key)
			if err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			b := []byte{0}
			if _, err := f.ReadAt(b, off); err != nil {
				t.Fatal(err)
			}
			b[0] ^= 0xff
			if _, err := f.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
			f.Close()
			flipped++
		}
	}
	return flipped
}

// alertReceiver is a webhook endpoint that keeps each alert's message by kind.
type alertReceiver struct {
	mu  sync.Mutex
	got map[meta.AlertKind][]string
}

func newAlertReceiver(t *testing.T) (*alertReceiver, string) {
	r := &alertReceiver{got: map[meta.AlertKind][]string{}}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var p struct {
			Kind    meta.AlertKind `json:"kind"`
			Message string         `json:"message"`
		}
		if err := json.NewDecoder(req.Body).Decode(&p); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.got[p.Kind] = append(r.got[p.Kind], p.Message)
		r.mu.Unlock()
	}))
	t.Cleanup(hs.Close)
	return r, hs.URL
}

func (r *alertReceiver) messages(k meta.AlertKind) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got[k]...)
}

// TestAgentDaemonRunsPolicyVerify is issue 15's verify acceptance through the agent
// daemon: a policy with a sampled verify schedule (every two seconds) makes the
// daemon of its host run verify jobs over the policy's snapshots, each recorded with
// its report (the first covers both snapshots, later ones none: nothing new); a
// snapshot of another policy is not checked. Then every shard of one data chunk is
// corrupted beyond repair and the policy gets a full verify schedule: the daemon's
// next full verify job fails naming the chunk, keeps its report, and the webhook
// receiver gets the verify-failed alert.
func TestAgentDaemonRunsPolicyVerify(t *testing.T) {
	rcv, url := newAlertReceiver(t)
	c := nodetest.New(t, nodetest.Opts{})
	ctx := ctxT(t, 5*time.Minute)
	admin := c.Connect(t)
	if _, err := client.InitVault(ctx, admin, "v1", passphrase); err != nil {
		t.Fatal(err)
	}
	ajs := admin.Meta.(meta.JobService)
	actx := meta.WithPrincipal(ctx, meta.Principal{Name: "ops", Role: meta.RoleAdmin})
	onLeader(t, c, func(l *metaserver.Server) (meta.AlertSink, error) {
		return l.SetAlertSink(actx, meta.AlertSink{Name: "pager", Kind: meta.SinkWebhook, URL: url})
	})
	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 3<<20)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "big.bin"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	webID := identityFor(t, c, pki.IssueRequest{CommonName: "web01", Role: transport.RoleAgent, Vaults: []string{"v1"}})
	webCfg := nodetest.ConnectWith(t, webID, []string{c.WaitLeader(t).Addr()}, c.ChunkAddrs())
	web := webCfg.Meta.(meta.JobService)
	ag, err := client.Open(ctx, webCfg, "v1", passphrase)
	if err != nil {
		t.Fatal(err)
	}
	defer ag.Close()
	// Two snapshots of policy nightly (as its backups tag them) and one of another.
	var snaps []meta.Snapshot
	for i, tag := range []string{"policy-nightly", "policy-nightly", "policy-other"} {
		if err := os.WriteFile(filepath.Join(src, "note.txt"), []byte(fmt.Sprintf("snapshot %d\n", i)), 0o644); err != nil {
			t.Fatal(err)
		}
		res, err := ag.Backup(ctx, client.BackupOptions{Paths: []string{src}, Tags: []string{tag}})
		if err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, res.Snapshot)
	}
	pol := meta.BackupPolicy{Name: "nightly", Schedule: "@yearly", Paths: []string{src}, Hosts: []string{"web01"},
		Verify: &meta.VerifySchedule{Schedule: "*/2 * * * * *", Sample: 2}}
	if _, err := ajs.PutPolicy(ctx, pol, true); err != nil {
		t.Fatal(err)
	}
	verifier := agent.ChunkVerifier{Agent: ag, Jobs: web}
	d, err := agent.New(agent.Config{Jobs: web, Run: func(context.Context, meta.BackupPolicy) (agent.Outcome, error) {
		return agent.Outcome{}, errors.New("test: no backup expected")
	}, Verify: verifier.Verify, Hostname: "web01.test", Version: "test", Vault: "v1", Logger: nodetest.Logger(t),
		Poll: 500 * time.Millisecond, Heartbeat: time.Second, MaxJitter: -1, Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	dctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- d.Run(dctx) }()

	verifyJobs := func(want func([]meta.Job) bool, what string) []meta.Job {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for {
			jobs, err := ajs.ListJobs(ctx, meta.JobFilter{Host: "web01", Policy: "nightly"})
			if err == nil && want(jobs) {
				return jobs
			}
			if time.Now().After(deadline) {
				t.Fatalf("after 2 min, no %s: %+v (%v)", what, jobs, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	jobs := verifyJobs(func(js []meta.Job) bool {
		n := 0
		for _, j := range js {
			if j.Kind == meta.JobVerify && j.Status == meta.JobCompleted {
				n++
			}
		}
		return n >= 2
	}, "two completed sampled verify jobs")
	var first *meta.Job
	for i := range jobs {
		j := &jobs[i]
		if j.Kind != meta.JobVerify || j.Trigger != meta.TriggerSchedule || j.Report == nil {
			t.Fatalf("job %+v: want scheduled verify jobs with reports", j)
		}
		if j.Status == meta.JobCompleted && first == nil {
			first = j
		}
	}
	if r := first.Report; r.Full || r.Snapshots != 2 || r.Bad != 0 || r.Chunks < 3 {
		t.Fatalf("first sampled verify report %+v: want the policy's 2 snapshots (not the other policy's), no bad chunk", r)
	}
	if r := jobs[len(jobs)-1].Report; jobs[len(jobs)-1].Status == meta.JobCompleted && r.Snapshots != 0 {
		t.Fatalf("a later sampled verify checked %d snapshots again (report %+v)", r.Snapshots, r)
	}

	var victim chunk.ID
	if err := ag.List(ctx, snaps[1], "/", func(e client.Entry) error {
		if strings.HasSuffix(e.Path, "big.bin") && len(e.Node.Content) > 0 {
			victim = e.Node.Content[0].ID
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n := corruptChunk(t, c, victim); n < 2 {
		t.Fatalf("flipped %d shards of chunk %s", n, victim.Str())
	}
	pol.Verify = &meta.VerifySchedule{Full: "*/2 * * * * *"}
	if _, err := ajs.PutPolicy(ctx, pol, false); err != nil {
		t.Fatal(err)
	}
	jobs = verifyJobs(func(js []meta.Job) bool {
		for _, j := range js {
			if j.Status == meta.JobFailed && j.Report != nil && j.Report.Full {
				return true
			}
		}
		return false
	}, "a failed full verify job")
	for _, j := range jobs {
		if j.Status == meta.JobFailed && j.Report != nil && j.Report.Full {
			if j.Report.Bad != 1 || len(j.Report.Findings) != 1 || j.Report.Findings[0].Chunk != victim.String() || !strings.Contains(j.Error, "chunks bad") {
				t.Fatalf("failed full verify job %+v (report %+v): want chunk %s as the one bad chunk", j, j.Report, victim.Str())
			}
			t.Logf("full verify job %s: %s", j.ID, j.Error)
			break
		}
	}
	for _, j := range jobs {
		if j.ID == first.ID && (j.Report == nil || j.Report.Snapshots != 2 || j.Report.Bad != 0) {
			t.Fatalf("the first verify job's report changed: %+v", j.Report)
		}
	}
	deadline := time.Now().Add(time.Minute)
	for len(rcv.messages(meta.AlertVerifyFailed)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no verify-failed alert reached the receiver")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("verify-failed alert: %s", rcv.messages(meta.AlertVerifyFailed)[0])
	stop()
	if err := <-done; err != nil {
		t.Fatalf("daemon: %v", err)
	}
}
