package node_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/client/agentmetrics"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/node"
	"github.com/cofferhq/coffer/node/nodetest"
	"github.com/cofferhq/coffer/transport/metricsrv"
)

// Families every node serves, and those only nodes of one role serve.
var (
	familiesAll = []string{
		"coffer_node_info",
		"coffer_backup_bytes_total", "coffer_backup_chunks_total", "coffer_degraded_writes_total",
		"coffer_restore_bytes_total", "coffer_restore_chunks_total",
		"coffer_rpc_duration_seconds",
		"coffer_audit_refusals_total", "coffer_audit_reports_dropped_total",
		"coffer_revoked_requests_total", "coffer_revocations", "coffer_revocation_list_version", "coffer_revocation_list_current",
		"coffer_cluster_map_epoch", "coffer_cluster_nodes", "coffer_gossip_members",
		"go_goroutines", "process_cpu_seconds_total",
	}
	familiesChunk = []string{
		"coffer_segstore_shards", "coffer_segstore_live_bytes", "coffer_segstore_file_bytes", "coffer_segstore_segments",
		"coffer_segstore_capacity_available_bytes", "coffer_segstore_damaged_records_total",
		"coffer_segstore_compactions_total", "coffer_segstore_compacted_segments_total",
		"coffer_segstore_compaction_copied_bytes_total", "coffer_segstore_compaction_reclaimed_bytes_total",
		"coffer_pgs",
		"coffer_repair_running", "coffer_repair_map_epoch", "coffer_repair_pgs_led", "coffer_repair_pgs_done",
		"coffer_repair_passes_total", "coffer_repair_shards_total", "coffer_repair_written_bytes_total",
		"coffer_repair_last_pass_duration_seconds", "coffer_repair_unreadable_stripes",
		"coffer_scrub_deep_running", "coffer_scrub_findings_total", "coffer_scrub_last_deep_stripes",
		"coffer_gc_reclaimed_bytes_total", "coffer_gc_swept_chunks_total", "coffer_gc_swept_shards_total", "coffer_gc_spared_chunks_total",
	}
	familiesMeta = []string{
		"coffer_raft_state", "coffer_raft_term", "coffer_raft_commit_index", "coffer_raft_applied_index",
		"coffer_raft_last_log_index", "coffer_raft_leader_changes_total",
		"coffer_enroll_refusals_total",
		"coffer_gc_epoch", "coffer_gc_running", "coffer_gc_last_reclaimed_bytes", "coffer_gc_last_swept_chunks",
		"coffer_gc_last_end_timestamp_seconds",
		"coffer_backup_duration_seconds",
		"coffer_jobs", "coffer_jobs_ended_total",
	}
	familiesAgent = []string{
		"coffer_agent_backup_read_bytes_total", "coffer_agent_backup_added_bytes_total", "coffer_agent_backup_chunks_total",
		"coffer_agent_backup_files_total", "coffer_agent_backup_duration_seconds",
		"coffer_agent_restore_bytes_total", "coffer_agent_restore_files_total", "coffer_agent_restore_duration_seconds",
		"coffer_agent_jobs_total", "coffer_agent_last_success_timestamp_seconds",
	}
)

// scrape GETs a metrics URL and parses it with the Prometheus text parser.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return fams
}

// value returns the sum of a family's samples whose labels include want (counter,
// gauge or untyped value; a histogram's sample count).
func value(fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
	f := fams[name]
	if f == nil {
		return 0
	}
	var sum float64
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(want); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == want[i] && l.GetValue() == want[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		case m.Untyped != nil:
			sum += m.GetUntyped().GetValue()
		}
	}
	return sum
}

// TestMetricsOnEveryNode is issue 16's metrics acceptance: a cluster backs up and
// restores a tree; every node's metrics address serves, in the Prometheus text format,
// every family named in docs/operations.md for its roles, with sane values; the agent's
// registry serves its own; and every query of the Grafana dashboard names a series seen
// here.
func TestMetricsOnEveryNode(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	nodetest.MakeTree(t, src, nodetest.TreeOpts{Seed: 16, BigFile: 2 << 20})
	c := nodetest.New(t, nodetest.Opts{PGCount: 32, RepairInterval: 300 * time.Millisecond})
	cfg := c.Connect(t)
	if _, err := client.InitVault(ctxT(t, time.Minute), cfg, "default", passphrase); err != nil {
		t.Fatalf("init: %v", err)
	}
	a, err := client.Open(ctxT(t, time.Minute), cfg, "default", passphrase)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer a.Close()

	// The agent's side, recorded as the agent daemon records its runs.
	am := agentmetrics.New()
	bres, err := a.Backup(ctxT(t, 5*time.Minute), client.BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	start := time.Now()
	target := filepath.Join(t.TempDir(), "restore")
	start = time.Now()
	rres, err := a.Restore(ctxT(t, 5*time.Minute), bres.Snapshot, client.RestoreOptions{Target: target})
	am.Restore(rres, time.Since(start), time.Now(), err)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	nodetest.CompareTrees(t, src, filepath.Join(target, filepath.Base(src)))

	// The backup recorded as a job, as the agent daemon records its runs (through the
	// agent's metrics), over the meta RPC client (which follows the leader).
	js, ok := cfg.Meta.(meta.JobService)
	if !ok {
		t.Fatalf("the meta client %T is no meta.JobService", cfg.Meta)
	}
	jobs := am.WrapJobs(js)
	job, err := jobs.StartJob(ctxT(t, time.Minute), meta.JobStart{Host: "nodetest", Vault: "default",
		Kind: meta.JobBackup, Trigger: meta.TriggerManual})
	if err != nil {
		t.Fatalf("start job: %v", err)
	}
	if _, err := jobs.ReportJob(ctxT(t, time.Minute), meta.JobReport{ID: job.ID, Final: true, Status: meta.JobCompleted,
		Stats: meta.JobStats{BytesRead: bres.BytesRead}}); err != nil {
		t.Fatalf("report job: %v", err)
	}

	// A read of a chunk that does not exist fails (an RPC error by method and code).
	var missing chunk.ID
	missing[0] = 1
	if _, err := cfg.Chunks.Get(ctxT(t, time.Minute), missing); !errors.Is(err, chunkstore.ErrNotFound) {
		t.Fatalf("get of a missing chunk: %v", err)
	}

	// An enrollment with a malformed request is refused and counted by the leader.
	// (Raft may elect another leader meanwhile on a loaded machine: try until one
	// answers as leader.)
	var leader *node.Node
	for deadline := time.Now().Add(time.Minute); ; {
		leader = c.Leader()
		if leader != nil {
			_, err := leader.Meta().Enroll(ctxT(t, 10*time.Second), meta.EnrollRequest{Token: "not-a-token"})
			if errors.Is(err, meta.ErrInvalid) {
				break
			}
			var nl *meta.NotLeaderError
			if !errors.As(err, &nl) {
				t.Fatalf("an enrollment without a CSR: %v, want ErrInvalid", err)
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no meta leader answered an enrollment")
		}
		time.Sleep(100 * time.Millisecond)
	}

	seen := map[string]bool{} // every series name seen (histograms with their suffixes)
	note := func(fams map[string]*dto.MetricFamily) {
		for name, f := range fams {
			seen[name] = true
			if f.GetType() == dto.MetricType_HISTOGRAM {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					seen[name+s] = true
				}
			}
		}
	}

	// PG reports come from repair passes: wait until the chunk nodes lead every PG and
	// the meta replicas hold the job.
	deadline := time.Now().Add(90 * time.Second)
	var scraped map[string]map[string]*dto.MetricFamily
	for {
		scraped = map[string]map[string]*dto.MetricFamily{}
		var pgs, heldJobs float64
		for _, n := range c.Nodes {
			if n.MetricsAddr() == "" {
				t.Fatalf("node %s serves no metrics", n.ID())
			}
			fams := scrape(t, "http://"+n.MetricsAddr()+metricsrv.Path)
			scraped[n.ID()] = fams
			pgs += value(fams, "coffer_pgs")
			heldJobs = max(heldJobs, value(fams, "coffer_jobs", "kind", "backup", "status", "completed"))
		}
		if pgs == 32 && heldJobs == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("chunk nodes report %v PGs (want 32), the meta replicas hold %v completed backup jobs (want 1)", pgs, heldJobs)
		}
		time.Sleep(200 * time.Millisecond)
	}

	var backupBytes, restoreBytes, leaders, putCalls, notFound, commits, invalidEnrolls, jobsEnded float64
	for _, n := range c.Nodes {
		fams := scraped[n.ID()]
		note(fams)
		want := slices.Clone(familiesAll)
		if n.Shards() != nil {
			want = append(want, familiesChunk...)
		}
		if n.Meta() != nil {
			want = append(want, familiesMeta...)
		}
		for _, f := range want {
			if fams[f] == nil {
				t.Errorf("node %s: no %s", n.ID(), f)
			}
		}
		if n.Shards() == nil {
			for _, f := range familiesChunk {
				if fams[f] != nil {
					t.Errorf("node %s without the chunk role serves %s", n.ID(), f)
				}
			}
		}
		if value(fams, "coffer_node_info", "node", n.ID()) != 1 {
			t.Errorf("node %s: coffer_node_info does not name it", n.ID())
		}
		if value(fams, "coffer_cluster_map_epoch") < 1 || value(fams, "coffer_cluster_nodes", "state", "active") != 6 {
			t.Errorf("node %s: map epoch %v, active nodes %v", n.ID(), value(fams, "coffer_cluster_map_epoch"),
				value(fams, "coffer_cluster_nodes", "state", "active"))
		}
		if value(fams, "coffer_revocation_list_current") != 1 {
			t.Errorf("node %s: revocation list not current", n.ID())
		}
		backupBytes += value(fams, "coffer_backup_bytes_total")
		restoreBytes += value(fams, "coffer_restore_bytes_total")
		putCalls += value(fams, "coffer_rpc_duration_seconds", "method", "chunk.Put")
		notFound += value(fams, "coffer_rpc_errors_total", "method", "chunk.Get", "code", "not_found")
		if n.Shards() != nil {
			if value(fams, "coffer_segstore_live_bytes") <= 0 || value(fams, "coffer_segstore_shards") <= 0 {
				t.Errorf("node %s: segment store empty after a backup", n.ID())
			}
			if value(fams, "coffer_segstore_capacity_available_bytes") <= 0 {
				t.Errorf("node %s: no capacity", n.ID())
			}
			if value(fams, "coffer_repair_passes_total") < 1 {
				t.Errorf("node %s: no repair pass", n.ID())
			}
		}
		if n.Meta() != nil {
			if value(fams, "coffer_raft_applied_index") <= 0 || value(fams, "coffer_raft_term") <= 0 {
				t.Errorf("node %s: raft applied %v term %v", n.ID(), value(fams, "coffer_raft_applied_index"), value(fams, "coffer_raft_term"))
			}
			if value(fams, "coffer_raft_commit_index") < value(fams, "coffer_raft_applied_index") {
				t.Errorf("node %s: commit index below applied", n.ID())
			}
			// Exactly one state is 1 on each server; at most one server leads (none
			// while an election runs, which a loaded machine sees often).
			if got := value(fams, "coffer_raft_state"); got != 1 {
				t.Errorf("node %s: raft state values sum to %v, want 1", n.ID(), got)
			}
			leaders += value(fams, "coffer_raft_state", "state", "Leader")
			if value(fams, "coffer_raft_leader_changes_total") < 1 {
				t.Errorf("node %s: no leader election observed", n.ID())
			}
		}
		commits += value(fams, "coffer_backup_duration_seconds", "status", "completed")
		invalidEnrolls += value(fams, "coffer_enroll_refusals_total", "reason", "invalid")
		jobsEnded += value(fams, "coffer_jobs_ended_total", "kind", "backup", "status", "completed")
	}
	if backupBytes <= 0 || restoreBytes <= 0 {
		t.Errorf("cluster: backup bytes %v, restore bytes %v", backupBytes, restoreBytes)
	}
	if putCalls < 1 {
		t.Errorf("no chunk.Put in the RPC latency histograms")
	}
	if leaders > 1 {
		t.Errorf("%v meta servers report being leader", leaders)
	}
	if jobsEnded != 1 {
		t.Errorf("%v completed backup jobs ended, want 1", jobsEnded)
	}
	if invalidEnrolls != 1 {
		t.Errorf("%v invalid enrollments counted, want 1", invalidEnrolls)
	}
	if commits != 1 {
		t.Errorf("%v backups in the meta servers' duration histograms, want 1", commits)
	}
	if notFound < 1 {
		t.Errorf("%v chunk.Get not-found errors counted, want at least 1", notFound)
	}
	t.Logf("cluster: backup %v bytes, restore %v bytes, %v chunk.Put calls", backupBytes, restoreBytes, putCalls)

	// The agent daemon's registry, over its own listener.
	srv, err := metricsrv.Start("127.0.0.1:0", am.Registry(), nodetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close(ctxT(t, 5*time.Second))
	afams := scrape(t, srv.URL())
	note(afams)
	for _, f := range familiesAgent {
		if afams[f] == nil {
			t.Errorf("agent: no %s", f)
		}
	}
	if value(afams, "coffer_agent_backup_read_bytes_total") <= 0 || value(afams, "coffer_agent_restore_bytes_total") <= 0 ||
		value(afams, "coffer_agent_restore_duration_seconds", "status", "completed") != 1 ||
		value(afams, "coffer_agent_jobs_total", "kind", "backup", "status", "completed") != 1 ||
		value(afams, "coffer_agent_backup_duration_seconds", "status", "completed") != 1 {
		t.Errorf("agent: read %v, restored %v, restores %v, jobs %v", value(afams, "coffer_agent_backup_read_bytes_total"),
			value(afams, "coffer_agent_restore_bytes_total"), value(afams, "coffer_agent_restore_duration_seconds", "status", "completed"),
			value(afams, "coffer_agent_jobs_total", "kind", "backup", "status", "completed"))
	}

	if t.Failed() {
		return
	}
	checkDashboard(t, filepath.Join("..", "deploy", "grafana", "coffer.json"), seen)
}

// seriesName matches the metric names a PromQL expression of the dashboard may use.
var seriesName = regexp.MustCompile(`\b(?:coffer|go|process)_[a-zA-Z0-9_]+\b`)

// checkDashboard loads a Grafana dashboard as JSON and checks that every target's PromQL
// expression names at least one series and only series in seen.
func checkDashboard(t *testing.T, path string, seen map[string]bool) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title      string `json:"title"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s is not valid JSON: %v", path, err)
	}
	exprs := 0
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("dashboard panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs++
			names := seriesName.FindAllString(tg.Expr, -1)
			if len(names) == 0 {
				t.Errorf("dashboard panel %q: query %q names no coffer series", p.Title, tg.Expr)
			}
			for _, n := range names {
				if !seen[n] {
					t.Errorf("dashboard panel %q: query %q names %s, which the metrics test did not see", p.Title, tg.Expr, n)
				}
			}
		}
	}
	for _, v := range dash.Templating.List {
		for _, n := range seriesName.FindAllString(v.Definition, -1) {
			if !seen[n] {
				t.Errorf("dashboard variable %q names %s, which the metrics test did not see", v.Name, n)
			}
		}
	}
	if exprs < 10 {
		t.Errorf("dashboard %q has only %d queries", dash.Title, exprs)
	}
	t.Logf("dashboard %q: %d panels, %d queries checked", dash.Title, len(dash.Panels), exprs)
}

// TestMetricsListenConfig: a bad metrics_listen is refused by name, and a node without
// one serves no metrics.
func TestMetricsListenConfig(t *testing.T) {
	c := node.Config{ID: "n1", Listen: "127.0.0.1:1", Gossip: "127.0.0.1:2", DataDir: "d",
		TLS: node.TLSFiles{CA: "a", Cert: "b", Key: "c"}, ClusterSecretFile: "s",
		MetaServers: []node.MetaServer{{ID: "m1", Addr: "127.0.0.1:3"}}, Roles: []node.Role{node.RoleChunk},
		MetricsListen: "localhost"}
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "metrics_listen") {
		t.Fatalf("metrics_listen without a port: %v", err)
	}
	c.MetricsListen = "127.0.0.1:9450"
	if err := c.Validate(); err != nil {
		t.Fatalf("valid metrics_listen refused: %v", err)
	}
}
