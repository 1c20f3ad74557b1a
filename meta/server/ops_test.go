package server

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/meta"
)

// TestAutoRetentionKeepLast is issue 15's retention acceptance on a three-server
// cluster: a vault with policy keep-last 3 and eight backups loses five within one
// retention interval (cluster time), with no command from anyone; in a second vault a
// locked snapshot the policy would remove is kept, reported and audited.
func TestAutoRetentionKeepLast(t *testing.T) {
	const interval = 2 * time.Second
	c := newCluster(t, 3, func(cfg *Config) { cfg.TickInterval = 50 * time.Millisecond; cfg.RetentionInterval = interval })
	l := c.srv[c.leader()]
	admin := meta.WithPrincipal(ctxT(t), meta.Principal{Name: "ops", Role: meta.RoleAdmin})
	snaps := map[meta.VaultID][]meta.Snapshot{}
	for _, v := range []meta.VaultID{"plain", "locked"} {
		if _, err := l.CreateVault(admin, newVault(v)); err != nil {
			t.Fatal(err)
		}
		for range 8 {
			s, err := l.CommitSnapshot(admin, storedSnapshot(t, c.chunks, v, 1, 0))
			if err != nil {
				t.Fatal(err)
			}
			snaps[v] = append(snaps[v], s)
		}
	}
	held := snaps["locked"][1] // the second oldest: keep-last 3 would remove it
	if _, err := l.SetLock(admin, "locked", held.ID, meta.Lock{Mode: meta.Governance, Until: l.fsm.Now().Add(time.Hour)}, meta.Bypass{}); err != nil {
		t.Fatal(err)
	}
	var setAt time.Time
	for _, v := range []meta.VaultID{"plain", "locked"} {
		vv, err := l.SetVaultPolicy(admin, v, meta.VaultPolicy{Keep: meta.Policy{Last: 3}})
		if err != nil {
			t.Fatal(err)
		}
		_ = vv
		setAt = l.fsm.Now()
	}
	reps := map[meta.VaultID]meta.RetentionReport{}
	waitFor(t, "automatic retention in both vaults", func() bool {
		for _, v := range []meta.VaultID{"plain", "locked"} {
			rep, ok, err := c.srv[c.leader()].fsm.RetentionReport(v)
			if err != nil || !ok {
				return false
			}
			reps[v] = rep
		}
		return true
	})
	// NB: a round under way when the policy is set read the vaults before it and does
	// not apply it; the next is due one interval after that round ended, and is noticed
	// at a tick and proposed after that: a loaded machine took 2.011 s. A quarter
	// interval of slack allows for that and still tells one interval from two.
	for v, rep := range reps {
		if took := rep.Time.Sub(setAt); took > interval+interval/4 {
			t.Errorf("vault %s: retention ran %v after the policy was set, more than one interval (%v)", v, took, interval)
		}
		left, err := c.srv[c.leader()].fsm.Snapshots(v)
		if err != nil {
			t.Fatal(err)
		}
		gone := map[meta.SnapshotID]bool{}
		for _, id := range rep.Removed {
			gone[id] = true
		}
		for i, s := range snaps[v] {
			kept := i >= 5 || (v == "locked" && s.ID == held.ID)
			if gone[s.ID] == kept {
				t.Errorf("vault %s: snapshot %d (%s) removed=%v, want %v", v, i, s.ID.Str(), gone[s.ID], !kept)
			}
		}
		wantLeft := 3
		if v == "locked" {
			wantLeft = 4
		}
		if len(left) != wantLeft {
			t.Errorf("vault %s: %d snapshots left, want %d", v, len(left), wantLeft)
		}
	}
	if got := len(reps["plain"].Removed); got != 5 {
		t.Errorf("plain: removed %d, want 5", got)
	}
	if h := reps["locked"].Held; len(h) != 1 || h[0].ID != held.ID || !strings.Contains(h[0].Reason, "governance-locked until") {
		t.Errorf("locked: held %+v, want the locked snapshot %s with its lock", h, held.ID.Str())
	}
	log, err := c.srv[c.leader()].AuditLog(admin, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var audited int
	for _, e := range log {
		if e.Action == "retention" && e.Principal == "system" && e.Outcome == meta.AuditOK {
			audited++
			if e.Vault == "locked" && !strings.Contains(e.Reason, held.ID.Str()) {
				t.Errorf("retention audit of vault locked does not name the held snapshot: %q", e.Reason)
			}
		}
	}
	if audited != 2 {
		t.Errorf("%d retention audit entries, want 2 (one per vault)", audited)
	}
	// A quiet round changes nothing and writes nothing per vault.
	before := l.fsm.AppliedIndex()
	st, err := l.RetentionStatus(admin)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a later round", func() bool {
		last, _ := c.srv[c.leader()].fsm.RetentionLast()
		return last.After(st.LastRound)
	})
	for _, v := range []meta.VaultID{"plain", "locked"} {
		rep, _, _ := c.srv[c.leader()].fsm.RetentionReport(v)
		if rep.Seq != reps[v].Seq {
			t.Errorf("vault %s: a quiet round rewrote the report (seq %d, was %d; log was at %d)", v, rep.Seq, reps[v].Seq, before)
		}
	}
}

// receiver is a webhook endpoint that counts what it accepted per idempotency key.
type receiver struct {
	mu       sync.Mutex
	accepted map[string]int
	bodies   []AlertPayload
	seen     atomic.Int64 // requests, accepted or not
	fail     atomic.Bool  // answer 503
}

func newReceiver(t *testing.T) (*receiver, *httptest.Server) {
	r := &receiver{accepted: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.seen.Add(1)
		var p AlertPayload
		if err := json.NewDecoder(req.Body).Decode(&p); err != nil || req.Header.Get("Idempotency-Key") != p.ID {
			http.Error(w, "bad alert", http.StatusBadRequest)
			return
		}
		if r.fail.Load() {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		r.mu.Lock()
		r.accepted[p.ID]++
		r.bodies = append(r.bodies, p)
		r.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	return r, srv
}

func (r *receiver) count(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.accepted[id]
}

// TestAlertDeliveredOnceAcrossRetriesAndLeaderChange: an event raised twice (a retry,
// a second leader) is one alert; a receiver that fails first gets it on a retry with the
// same idempotency key; after a leader change the new leader neither resends a
// delivered alert nor loses an undelivered one; each delivery is audited.
func TestAlertDeliveredOnceAcrossRetriesAndLeaderChange(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) {
		cfg.TickInterval = 50 * time.Millisecond
		cfg.Alerts.RetryBase = 100 * time.Millisecond
	})
	rcv, hs := newReceiver(t)
	li := c.leader()
	l := c.srv[li]
	admin := meta.WithPrincipal(ctxT(t), meta.Principal{Name: "ops", Role: meta.RoleAdmin})
	if _, err := l.SetAlertSink(admin, meta.AlertSink{Name: "pager", Kind: meta.SinkWebhook, URL: hs.URL + "/hook"}); err != nil {
		t.Fatal(err)
	}
	ev := meta.Alert{Key: "job-failed/j1", Kind: meta.AlertJobFailed, Severity: meta.SeverityCritical, Subject: "host1", Message: "backup failed: pre-hook exited 1"}
	a1, err := l.RaiseAlert(ctxT(t), ev)
	if err != nil {
		t.Fatal(err)
	}
	a2, err := l.RaiseAlert(ctxT(t), ev)
	if err != nil || a2.Seq != a1.Seq {
		t.Fatalf("raising the same event again gave alert %d (%v), want the first, %d", a2.Seq, err, a1.Seq)
	}
	waitFor(t, "the first alert to be delivered", func() bool { return rcv.count(a1.ID()) == 1 })

	// The receiver fails: the second alert is retried until it comes back.
	rcv.fail.Store(true)
	b, err := l.RaiseAlert(ctxT(t), meta.Alert{Key: "anomaly/j2", Kind: meta.AlertAnomaly, Severity: meta.SeverityWarning, Subject: "host1", Message: "bytes added 41x the mean"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "two failed attempts", func() bool {
		got, _, _ := c.srv[c.leader()].fsm.OpenAlert(b.Key)
		return got.Delivery("pager").Attempts >= 2
	})
	// The leader goes; the new one takes over the delivery state from the log.
	c.kill(li)
	nl := c.srv[c.leader()]
	rcv.fail.Store(false)
	waitFor(t, "the second alert after the leader change", func() bool { return rcv.count(b.ID()) == 1 })
	passes := nl.alertPasses.Load()
	waitFor(t, "more delivery passes on the new leader", func() bool { return nl.alertPasses.Load() >= passes+5 })
	if n, m := rcv.count(a1.ID()), rcv.count(b.ID()); n != 1 || m != 1 {
		t.Errorf("receiver accepted alert %s %d times and %s %d times, want once each", a1.ID(), n, b.ID(), m)
	}
	got, _, _ := nl.fsm.OpenAlert(b.Key)
	if d := got.Delivery("pager"); !d.Delivered || d.Attempts < 3 {
		t.Errorf("second alert's delivery %+v, want delivered after at least 3 attempts", d)
	}
	log, err := nl.AuditLog(admin, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var delivered int
	for _, e := range log {
		if e.Action == "alert delivered" {
			delivered++
		}
	}
	if delivered != 2 {
		t.Errorf("%d 'alert delivered' audit entries, want 2", delivered)
	}
}

// TestAlertSinksAdminOnlyAndValidated: sinks are checked, admin-only and audited; a
// command sink runs only programs the server's configuration allows.
func TestAlertSinksAdminOnlyAndValidated(t *testing.T) {
	c := newCluster(t, 1, func(cfg *Config) { cfg.TickInterval = 50 * time.Millisecond })
	l := c.srv[c.leader()]
	admin := meta.WithPrincipal(ctxT(t), meta.Principal{Name: "ops", Role: meta.RoleAdmin})
	agent := meta.WithPrincipal(ctxT(t), meta.Principal{Name: "host1", Role: meta.RoleBackupAgent})
	if _, err := l.SetAlertSink(agent, meta.AlertSink{Name: "x", Kind: meta.SinkWebhook, URL: "http://example.net/"}); !isDenied(err) {
		t.Errorf("agent adding a sink: %v, want denied", err)
	}
	for _, bad := range []meta.AlertSink{
		{Name: "Bad Name", Kind: meta.SinkWebhook, URL: "http://example.net/"},
		{Name: "x", Kind: meta.SinkWebhook, URL: "ftp://example.net/"},
		{Name: "x", Kind: meta.SinkCommand, Command: []string{"relative"}},
		{Name: "x", Kind: meta.SinkWebhook, URL: "http://example.net/", Kinds: []meta.AlertKind{"nope"}},
	} {
		if _, err := l.SetAlertSink(admin, bad); !isInvalid(err) {
			t.Errorf("sink %+v: %v, want invalid", bad, err)
		}
	}
	if _, err := l.SetAlertSink(admin, meta.AlertSink{Name: "script", Kind: meta.SinkCommand, Command: []string{"/bin/true"}}); err != nil {
		t.Fatal(err)
	}
	a, err := l.TestAlert(admin, "hello")
	if err != nil {
		t.Fatal(err)
	}
	if d := a.Delivery("script"); d.Delivered || !strings.Contains(d.Error, "not among the alert commands") {
		t.Errorf("command sink not allowed by the config: %+v, want a failed attempt naming the rule", d)
	}
	if err := l.RemoveAlertSink(admin, "script"); err != nil {
		t.Fatal(err)
	}
	if err := l.RemoveAlertSink(admin, "script"); !isNotFound(err) {
		t.Errorf("removing a removed sink: %v, want not found", err)
	}
	sinks, err := l.AlertSinks(admin)
	if err != nil || len(sinks) != 0 {
		t.Errorf("sinks %v (%v), want none", sinks, err)
	}
}

func isDenied(err error) bool   { return errors.Is(err, meta.ErrDenied) }
func isInvalid(err error) bool  { return errors.Is(err, meta.ErrInvalid) }
func isNotFound(err error) bool { return errors.Is(err, meta.ErrNotFound) }

// TestAnomalyFlaggedAndAlertedOnce is issue 15's anomaly acceptance at the meta layer:
// ten ordinary backup jobs of a host and policy, then one whose files were all replaced
// by random bytes (everything changed, added in full, incompressible). The job is flagged
// with the reason and the webhook receiver gets the anomaly alert exactly once; a failed
// job raises its own alert once, even when its end is handled twice.
func TestAnomalyFlaggedAndAlertedOnce(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) { cfg.TickInterval = 50 * time.Millisecond })
	rcv, hs := newReceiver(t)
	l := c.srv[c.leader()]
	admin := meta.WithPrincipal(ctxT(t), meta.Principal{Name: "ops", Role: meta.RoleAdmin})
	if _, err := l.SetAlertSink(admin, meta.AlertSink{Name: "pager", Kind: meta.SinkWebhook, URL: hs.URL}); err != nil {
		t.Fatal(err)
	}
	run := func(st meta.JobStats, status string) meta.Job {
		t.Helper()
		j, err := l.StartJob(admin, meta.JobStart{Host: "web01", Policy: "nightly", Kind: meta.JobBackup, Trigger: meta.TriggerSchedule})
		if err != nil {
			t.Fatal(err)
		}
		j, err = l.ReportJob(admin, meta.JobReport{ID: j.ID, Final: true, Status: status, Stats: st})
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	for i := range 10 {
		run(meta.JobStats{FilesNew: 1, FilesChanged: int64(5 + i%3), FilesUnmodified: 200, BytesAdded: int64(300<<10 + i*10<<10),
			BytesNew: int64(800<<10 + i*25<<10), BytesProcessed: 40 << 20}, meta.JobCompleted)
	}
	bad := run(meta.JobStats{FilesChanged: 206, BytesAdded: 41 << 20, BytesNew: 40 << 20, BytesProcessed: 40 << 20}, meta.JobCompleted)
	var flagged meta.Job
	waitFor(t, "the job to be flagged", func() bool {
		j, err := c.srv[c.leader()].fsm.Job(bad.ID)
		flagged = j
		return err == nil && j.Anomaly != ""
	})
	for _, want := range []string{"bytes added", "x the mean", "files changed", "compression ratio 0.98 vs 2.6"} {
		if !strings.Contains(flagged.Anomaly, want) {
			t.Errorf("anomaly %q does not say %q", flagged.Anomaly, want)
		}
	}
	key := "anomaly/" + bad.ID
	waitFor(t, "the anomaly alert's delivery", func() bool {
		a, ok, _ := c.srv[c.leader()].fsm.OpenAlert(key)
		return ok && rcv.count(a.ID()) == 1
	})
	failed := run(meta.JobStats{}, meta.JobFailed)
	l.opsJobEnded(failed) // handled a second time (a retried hook): still one alert
	waitFor(t, "the failed job's alert", func() bool {
		a, ok, _ := c.srv[c.leader()].fsm.OpenAlert("job-failed/" + failed.ID)
		return ok && rcv.count(a.ID()) == 1
	})
	passes := l.alertPasses.Load()
	waitFor(t, "more delivery passes", func() bool { return l.alertPasses.Load() >= passes+5 })
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	kinds := map[meta.AlertKind]int{}
	for _, b := range rcv.bodies {
		kinds[b.Kind]++
	}
	if kinds[meta.AlertAnomaly] != 1 || kinds[meta.AlertJobFailed] != 1 || len(rcv.bodies) != 2 {
		t.Errorf("receiver got %v (%d alerts), want one anomaly and one job-failed", kinds, len(rcv.bodies))
	}
	for _, b := range rcv.bodies {
		if b.Kind == meta.AlertAnomaly && (b.Subject != "web01" || !strings.Contains(b.Message, flagged.Anomaly) || b.Details["job"] != bad.ID) {
			t.Errorf("anomaly alert %+v", b)
		}
	}
	// Ten ordinary jobs were not flagged.
	jobs, _ := l.fsm.Jobs()
	for _, j := range jobs {
		if j.ID != bad.ID && j.Anomaly != "" {
			t.Errorf("ordinary job %s flagged: %s", j.ID, j.Anomaly)
		}
	}
}

// TestMissedRunAlertedOnce: a policy due every second for a host that never runs it
// raises one missed-run alert (RPO breach) for the gap, not one per missed second; a
// run closes the gap, and the next missed run is a new alert.
func TestMissedRunAlertedOnce(t *testing.T) {
	c := newCluster(t, 1, func(cfg *Config) {
		cfg.TickInterval = 50 * time.Millisecond
		cfg.Alerts.ProbeInterval = 50 * time.Millisecond
		cfg.Alerts.MissedRunGrace = 300 * time.Millisecond
	})
	l := c.srv[c.leader()]
	admin := meta.WithPrincipal(ctxT(t), meta.Principal{Name: "ops", Role: meta.RoleAdmin})
	if _, err := l.PutPolicy(admin, meta.BackupPolicy{Name: "often", Schedule: "* * * * * *", Paths: []string{"/srv"}, Hosts: []string{"web01"}}, true); err != nil {
		t.Fatal(err)
	}
	agent := meta.WithPrincipal(ctxT(t), meta.Principal{Name: "web01", Role: meta.RoleBackupAgent})
	if err := l.Heartbeat(agent, meta.Heartbeat{}); err != nil {
		t.Fatal(err)
	}
	missed := func() []meta.Alert {
		all, _ := l.fsm.Alerts(meta.AlertFilter{}, nil)
		var out []meta.Alert
		for _, a := range all {
			if a.Kind == meta.AlertMissedRun {
				out = append(out, a)
			}
		}
		return out
	}
	waitFor(t, "a missed-run alert", func() bool { return len(missed()) == 1 })
	first := missed()[0]
	if first.Subject != "web01" || first.Details["policy"] != "often" || !strings.Contains(first.Message, "has not run") {
		t.Errorf("missed-run alert %+v", first)
	}
	at := l.fsm.Now()
	waitFor(t, "two seconds of cluster time", func() bool { return l.fsm.Now().Sub(at) > 2*time.Second })
	if n := len(missed()); n != 1 {
		t.Fatalf("%d missed-run alerts for one gap, want 1", n)
	}
	j, err := l.StartJob(agent, meta.JobStart{Policy: "often", Kind: meta.JobBackup, Trigger: meta.TriggerSchedule, Scheduled: l.fsm.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.ReportJob(agent, meta.JobReport{ID: j.ID, Final: true, Status: meta.JobCompleted}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a second missed-run alert after the run", func() bool { return len(missed()) == 2 })
}
