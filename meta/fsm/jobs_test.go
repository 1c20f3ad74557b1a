package fsm

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
)

// TestJobsLifecycle: an admin's policy reaches the hosts it names and those whose
// enrollment labels it selects; agents start, report and beat only for themselves; a
// silent job is expired by cluster time; old ended jobs are compacted; the state
// survives a snapshot and restore.
func TestJobsLifecycle(t *testing.T) {
	f := open(t, t.TempDir())
	const sec = int64(time.Second)
	idx := uint64(0)
	var logs []command.Body
	var stamps []int64
	apply := func(stamp int64, b command.Body) Result {
		idx++
		logs, stamps = append(logs, b), append(stamps, stamp)
		return result(t, f.Apply(entry(t, idx, stamp, b)))
	}
	// advance ticks the cluster clock to stamp (ticks of at most a second each).
	advance := func(stamp int64) {
		for f.Now().UnixNano() < stamp {
			apply(min(f.Now().UnixNano()+sec, stamp), command.Tick{Elapsed: sec})
		}
	}
	web := meta.Principal{Name: "web01", Role: meta.RoleBackupAgent, Vaults: []meta.VaultID{"a"}}
	db := meta.Principal{Name: "db01", Role: meta.RoleBackupAgent, Vaults: []meta.VaultID{"a"}}
	apply(100*sec, vault("a"))

	// Labels come with the enrollment token.
	h := meta.EnrollTokenHash("tok-db01")
	if r := apply(101*sec, command.CreateEnrollToken{Hash: h, Vault: "a", Name: "db01", TTL: int64(time.Hour), By: admin,
		Labels: map[string]string{"role": "db"}}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := apply(101*sec, command.CreateEnrollToken{Hash: meta.EnrollTokenHash("bad"), Vault: "a", Name: "x1", TTL: int64(time.Hour), By: admin,
		Labels: map[string]string{"bad key": "v"}}); !errors.Is(r.Err, meta.ErrInvalid) {
		t.Fatalf("bad label: %v, want ErrInvalid", r.Err)
	}
	v0, _ := f.PolicyVersion()
	if r := apply(102*sec, command.ConsumeEnrollToken{Hash: h, Name: "db01", Serial: "s1"}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if v1, _ := f.PolicyVersion(); v1 <= v0 {
		t.Fatalf("policy version %d after an enrollment with labels, was %d", v1, v0)
	}
	if l, err := f.HostLabels("db01"); err != nil || l["role"] != "db" {
		t.Fatalf("db01 labels %v, %v", l, err)
	}

	webPol := meta.BackupPolicy{Name: "web", Schedule: "*/1 * * * *", Paths: []string{"/srv"}, Hosts: []string{"web01"}}
	dbPol := meta.BackupPolicy{Name: "db", Schedule: "@hourly", Paths: []string{"/var/lib/db"}, Labels: map[string]string{"role": "db"},
		PreHook: "pg_dump", Retention: &meta.Policy{Last: 3}}
	for _, p := range []meta.Principal{web, nodeP, nobody} {
		if r := apply(103*sec, command.PutPolicy{Policy: webPol, Create: true, By: p}); !errors.Is(r.Err, meta.ErrDenied) {
			t.Fatalf("policy by %s: %v, want ErrDenied", p, r.Err)
		}
	}
	if r := apply(103*sec, command.PutPolicy{Policy: meta.BackupPolicy{Name: "x", Schedule: "61 * * * *", Paths: []string{"/a"}, Hosts: []string{"a"}},
		Create: true, By: admin}); !errors.Is(r.Err, meta.ErrInvalid) {
		t.Fatalf("bad schedule: %v", r.Err)
	}
	for _, p := range []meta.BackupPolicy{webPol, dbPol} {
		if r := apply(103*sec, command.PutPolicy{Policy: p, Create: true, By: admin}); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	if r := apply(103*sec, command.PutPolicy{Policy: webPol, Create: true, By: admin}); !errors.Is(r.Err, meta.ErrExists) {
		t.Fatalf("create twice: %v", r.Err)
	}
	if r := apply(103*sec, command.PutPolicy{Policy: meta.BackupPolicy{Name: "nope", Schedule: "@daily", Paths: []string{"/a"}, Hosts: []string{"a"}},
		By: admin}); !errors.Is(r.Err, meta.ErrNotFound) {
		t.Fatalf("update of a missing policy: %v", r.Err)
	}
	webPol.Excludes = []string{"*.tmp"}
	r := apply(104*sec, command.PutPolicy{Policy: webPol, By: admin})
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	if p := r.Value.(meta.BackupPolicy); p.Version != idx || p.By != "ops" || p.Created.After(p.Updated) || len(p.Excludes) != 1 {
		t.Fatalf("updated policy %+v", p)
	}

	// Starting jobs: an agent only for itself and only its policies.
	start := func(by meta.Principal, s meta.JobStart) (meta.Job, error) {
		r := apply(105*sec, command.StartJob{Start: s, By: by})
		if r.Err != nil {
			return meta.Job{}, r.Err
		}
		return r.Value.(meta.Job), nil
	}
	if _, err := start(web, meta.JobStart{Host: "db01", Policy: "db", Trigger: meta.TriggerSchedule}); !errors.Is(err, meta.ErrDenied) {
		t.Fatalf("web01 starts a job as db01: %v", err)
	}
	if _, err := start(web, meta.JobStart{Policy: "db", Trigger: meta.TriggerSchedule}); !errors.Is(err, meta.ErrDenied) {
		t.Fatalf("web01 runs db01's policy: %v", err)
	}
	if _, err := start(web, meta.JobStart{Policy: "web", Vault: "b", Trigger: meta.TriggerSchedule}); !errors.Is(err, meta.ErrDenied) {
		t.Fatalf("web01 reports into a vault outside its scope: %v", err)
	}
	if _, err := start(nodeP, meta.JobStart{Host: "web01", Trigger: meta.TriggerManual}); !errors.Is(err, meta.ErrDenied) {
		t.Fatalf("node starts a job: %v", err)
	}
	wj, err := start(web, meta.JobStart{Policy: "web", Vault: "a", Trigger: meta.TriggerSchedule, Version: "dev"})
	if err != nil {
		t.Fatal(err)
	}
	if wj.Host != "web01" || wj.Status != meta.JobRunning || wj.ID != meta.JobID(idx) || wj.Kind != meta.JobBackup {
		t.Fatalf("started job %+v", wj)
	}
	dj, err := start(db, meta.JobStart{Policy: "db", Trigger: meta.TriggerSchedule})
	if err != nil {
		t.Fatal(err)
	}
	mj, err := start(db, meta.JobStart{Trigger: meta.TriggerManual})
	if err != nil {
		t.Fatal(err)
	}

	// Reports: only the job's own agent; once ended, never again.
	if r := apply(106*sec, command.ReportJob{Report: meta.JobReport{ID: dj.ID, Final: true, Status: meta.JobCompleted}, By: web}); !errors.Is(r.Err, meta.ErrDenied) {
		t.Fatalf("web01 reports db01's job: %v", r.Err)
	}
	if r := apply(106*sec, command.Heartbeat{Heartbeat: meta.Heartbeat{Running: []string{dj.ID}}, By: web}); !errors.Is(r.Err, meta.ErrDenied) {
		t.Fatalf("web01 keeps db01's job alive: %v", r.Err)
	}
	if r := apply(106*sec, command.Heartbeat{Heartbeat: meta.Heartbeat{Host: "db01"}, By: web}); !errors.Is(r.Err, meta.ErrDenied) {
		t.Fatalf("web01 beats as db01: %v", r.Err)
	}
	snap := strings.Repeat("ab", 32)
	r = apply(107*sec, command.ReportJob{Report: meta.JobReport{ID: wj.ID, Final: true, Status: meta.JobCompleted, Snapshot: snap,
		Stats: meta.JobStats{FilesNew: 2, BytesAdded: 10}}, By: web})
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	if j := r.Value.(meta.Job); j.Status != meta.JobCompleted || j.Snapshot != snap || j.Stats.Files() != 2 || j.End.IsZero() {
		t.Fatalf("completed job %+v", j)
	}
	if r := apply(108*sec, command.ReportJob{Report: meta.JobReport{ID: wj.ID, Final: true, Status: meta.JobFailed}, By: web}); !errors.Is(r.Err, meta.ErrInvalid) {
		t.Fatalf("second final report: %v", r.Err)
	}
	if r := apply(108*sec, command.ReportJob{Report: meta.JobReport{ID: mj.ID, Final: true, Status: meta.JobFailed,
		Error: strings.Repeat("x", 2*meta.MaxJobError)}, By: db}); r.Err != nil || len(r.Value.(meta.Job).Error) != meta.MaxJobError {
		t.Fatalf("long error: %v", r.Err)
	}
	if r := apply(108*sec, command.Heartbeat{Heartbeat: meta.Heartbeat{Hostname: "db01.example", Version: "dev", Running: []string{dj.ID},
		NextRuns: []meta.NextRun{{Policy: "db", At: time.Unix(3600, 0).UTC()}}}, By: db}); r.Err != nil {
		t.Fatal(r.Err)
	}

	// Expiry by cluster time: dj was refreshed at 108 s.
	advance(200 * sec)
	r = apply(200*sec, command.ExpireJobs{IDs: []string{dj.ID, wj.ID}, Timeout: int64(100 * time.Second)})
	if r.Err != nil || len(r.Value.([]meta.Job)) != 0 {
		t.Fatalf("expire before the timeout: %v %v", r.Value, r.Err)
	}
	r = apply(200*sec, command.ExpireJobs{IDs: []string{dj.ID, wj.ID}, Timeout: int64(90 * time.Second)})
	if ex := r.Value.([]meta.Job); r.Err != nil || len(ex) != 1 || ex[0].ID != dj.ID || ex[0].Status != meta.JobFailed ||
		!strings.Contains(ex[0].Error, "no heartbeat") {
		t.Fatalf("expired %+v %v", r.Value, r.Err)
	}

	agents, err := f.Agents()
	if err != nil || len(agents) != 1 || agents[0].Host != "db01" || agents[0].LastJob != mj.ID || agents[0].LastStatus != meta.JobFailed ||
		agents[0].Labels["role"] != "db" || agents[0].Hostname != "db01.example" || len(agents[0].NextRuns) != 1 {
		t.Fatalf("agents %+v %v", agents, err)
	}

	// Compaction: jobs that ended more than 100 s before 260 s go (wj ended at 107 s, mj at
	// 108 s); dj ended at 200 s and stays.
	advance(260 * sec)
	r = apply(260*sec, command.CompactJobs{Retain: int64(100 * time.Second)})
	if r.Err != nil || r.Value.(int) != 2 {
		t.Fatalf("compacted %v %v", r.Value, r.Err)
	}
	jobs, err := f.Jobs()
	if err != nil || len(jobs) != 1 || jobs[0].ID != dj.ID {
		t.Fatalf("jobs after compaction %+v %v", jobs, err)
	}

	if r := apply(261*sec, command.DeletePolicy{Name: "web", By: web}); !errors.Is(r.Err, meta.ErrDenied) {
		t.Fatalf("agent deletes a policy: %v", r.Err)
	}
	if r := apply(261*sec, command.DeletePolicy{Name: "web", By: admin}); r.Err != nil {
		t.Fatal(r.Err)
	}
	ps, _ := f.BackupPolicies()
	if len(ps) != 1 || ps[0].Name != "db" {
		t.Fatalf("policies %+v", ps)
	}

	// Audit: policy changes and refusals are there.
	es, _ := f.AuditLog(0, 0)
	var acts []string
	for _, e := range es {
		acts = append(acts, e.Action+"/"+e.Outcome)
	}
	all := strings.Join(acts, " ")
	for _, want := range []string{"policy create/ok", "policy update/ok", "policy delete/ok", "policy create/refused",
		"job start/refused", "job report/refused", "agent heartbeat/refused"} {
		if !strings.Contains(all, want) {
			t.Fatalf("audit log lacks %q: %s", want, all)
		}
	}
	if strings.Contains(all, "job start/ok") {
		t.Fatalf("successful job starts are not audited: %s", all)
	}

	// The state survives a snapshot and restore (every key is a known one).
	dst := open(t, t.TempDir())
	if err := dst.Restore(io.NopCloser(bytes.NewReader(persist(t, f)))); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dump(t, dst), dump(t, f)) {
		t.Fatal("restored state differs")
	}
	if pv, _ := dst.PolicyVersion(); pv == 0 {
		t.Fatal("policy version lost in the restore")
	}
}
