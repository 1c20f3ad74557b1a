package node_test

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/meta"
	metaserver "github.com/cofferhq/coffer/meta/server"
	"github.com/cofferhq/coffer/node/nodetest"
)

// onLeader calls fn on the current meta leader, again on the new one while leadership
// moves (a loaded machine), for up to a minute.
func onLeader[T any](t *testing.T, c *nodetest.Cluster, fn func(*metaserver.Server) (T, error)) T {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		v, err := fn(c.WaitLeader(t).Meta())
		var nl *meta.NotLeaderError
		if err == nil {
			return v
		}
		if (!errors.As(err, &nl) && !errors.Is(err, meta.ErrUnavailable)) || time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRansomwareRunFlaggedOnCluster is issue 15's anomaly acceptance on a whole cluster:
// ten ordinary backups of a tree of text files (a few files edited between runs), each
// recorded as a job with the backup's own figures, then a backup after every file was
// replaced by random bytes of the same size. The last job is flagged (bytes added, files
// changed, compression ratio) and the webhook receiver gets the anomaly alert exactly
// once.
func TestRansomwareRunFlaggedOnCluster(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	rng := mrand.New(mrand.NewPCG(15, 4))
	text := func(i int) []byte {
		var sb strings.Builder
		for sb.Len() < 40<<10 {
			fmt.Fprintf(&sb, "file %d line %d: the quick brown fox %d jumps over the lazy dog %d\n", i, sb.Len(), rng.IntN(1000), rng.IntN(100))
		}
		return []byte(sb.String())
	}
	const files = 60
	write := func(i int, data []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(src, fmt.Sprintf("doc-%02d.txt", i)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range files {
		write(i, text(i))
	}

	var mu sync.Mutex
	got := map[meta.AlertKind]int{}
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
		got[p.Kind]++
		mu.Unlock()
	}))
	defer hs.Close()

	c := nodetest.New(t, nodetest.Opts{})
	cfg := c.Connect(t)
	cfg.CacheDir = filepath.Join(t.TempDir(), "cache")
	if _, err := client.InitVault(ctxT(t, time.Minute), cfg, "default", passphrase); err != nil {
		t.Fatalf("init: %v", err)
	}
	a, err := client.Open(ctxT(t, time.Minute), cfg, "default", passphrase)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer a.Close()
	admin := meta.WithPrincipal(ctxT(t, time.Minute), meta.Principal{Name: "ops", Role: meta.RoleAdmin})
	onLeader(t, c, func(l *metaserver.Server) (meta.AlertSink, error) {
		return l.SetAlertSink(admin, meta.AlertSink{Name: "pager", Kind: meta.SinkWebhook, URL: hs.URL})
	})
	// backup runs one backup as the agent daemon does: a job around it, its figures in
	// the final report.
	backup := func() meta.Job {
		t.Helper()
		j := onLeader(t, c, func(l *metaserver.Server) (meta.Job, error) {
			return l.StartJob(admin, meta.JobStart{Host: "web01", Policy: "nightly", Vault: "default", Kind: meta.JobBackup, Trigger: meta.TriggerSchedule})
		})
		res, err := a.Backup(ctxT(t, 5*time.Minute), client.BackupOptions{Paths: []string{src}})
		if err != nil {
			t.Fatalf("backup: %v", err)
		}
		st := res.Snapshot.Stats
		rep := meta.JobReport{ID: j.ID, Final: true, Status: meta.JobCompleted, Snapshot: res.Snapshot.ID.String(),
			Stats: meta.JobStats{FilesNew: st.FilesNew, FilesChanged: st.FilesChanged, FilesUnmodified: st.FilesUnmodified, Dirs: st.DirsTotal,
				BytesProcessed: st.BytesProcessed, BytesRead: res.BytesRead, BytesAdded: st.BytesAdded, ChunksAdded: st.ChunksAdded, BytesNew: res.PlainAdded}}
		return onLeader(t, c, func(l *metaserver.Server) (meta.Job, error) { return l.ReportJob(admin, rep) })
	}
	var normal []meta.Job
	for run := range 10 {
		if run > 0 {
			for k := range 3 {
				i := (run*3 + k) % files
				write(i, text(i))
			}
		}
		normal = append(normal, backup())
	}
	for i := range files {
		b := make([]byte, 40<<10)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		write(i, b)
	}
	bad := backup()

	var flagged meta.Job
	deadline := time.Now().Add(30 * time.Second)
	for {
		jobs, err := c.WaitLeader(t).Meta().ListJobs(admin, meta.JobFilter{Host: "web01"})
		if err == nil {
			for _, j := range jobs {
				if j.ID == bad.ID {
					flagged = j
				}
			}
		}
		if flagged.Anomaly != "" || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("flagged %s: %s (bytes added %d, new %d)", flagged.ID, flagged.Anomaly, flagged.Stats.BytesAdded, flagged.Stats.BytesNew)
	for _, want := range []string{"bytes added", "files changed", "compression ratio 1"} {
		if !strings.Contains(flagged.Anomaly, want) {
			t.Errorf("job %s anomaly %q does not name %q", bad.ID, flagged.Anomaly, want)
		}
	}
	jobs := onLeader(t, c, func(l *metaserver.Server) ([]meta.Job, error) {
		return l.ListJobs(admin, meta.JobFilter{Host: "web01"})
	})
	for _, j := range jobs {
		if j.ID != bad.ID && j.Anomaly != "" {
			t.Errorf("ordinary job %s flagged: %s", j.ID, j.Anomaly)
		}
	}
	// Wait for the anomaly alert's delivery, then run one more delivery pass (a test
	// alert is delivered synchronously): the receiver still has it once.
	deadline = time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := got[meta.AlertAnomaly]
		mu.Unlock()
		if n > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	onLeader(t, c, func(l *metaserver.Server) (meta.Alert, error) { return l.TestAlert(admin, "sync") })
	mu.Lock()
	defer mu.Unlock()
	if got[meta.AlertAnomaly] != 1 || got[meta.AlertTest] != 1 {
		t.Errorf("receiver got %v, want exactly one anomaly alert (and the test alert)", got)
	}
	_ = normal
}
