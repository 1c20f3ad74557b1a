package node_test

import (
	"crypto/rand"
	"encoding/json"
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
	"github.com/cofferhq/coffer/meta"
	metaserver "github.com/cofferhq/coffer/meta/server"
	"github.com/cofferhq/coffer/node/nodetest"
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
