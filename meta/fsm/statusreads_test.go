package fsm

import (
	"fmt"
	"testing"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
)

// TestRecentAudit: the newest entries come back newest first, bounded by the limit.
func TestRecentAudit(t *testing.T) {
	f := open(t, t.TempDir())
	if es, err := f.RecentAudit(5); err != nil || len(es) != 0 {
		t.Fatalf("empty log: %v, %v", es, err)
	}
	for i := uint64(1); i <= 7; i++ {
		r := result(t, f.Apply(entry(t, i*3, int64(1000+i), command.RecordAudit{Entry: meta.AuditEntry{Principal: fmt.Sprint("p", i), Action: "forget", Outcome: meta.AuditRefused}})))
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	es, err := f.RecentAudit(3)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 3 || es[0].Principal != "p7" || es[1].Principal != "p6" || es[2].Principal != "p5" || es[0].Seq != 21 {
		t.Fatalf("recent 3 = %+v, want p7 (seq 21), p6, p5", es)
	}
	if es, _ := f.RecentAudit(0); len(es) != 1 {
		t.Errorf("limit 0 gave %d entries, want 1", len(es))
	}
}

// TestRecentJobs: running jobs and jobs ended at or after the cut are returned, oldest
// first, the newest ones when a limit cuts.
func TestRecentJobs(t *testing.T) {
	f := open(t, t.TempDir())
	admin := meta.Principal{Name: "ops", Role: meta.RoleAdmin}
	sec := int64(time.Second)
	idx := uint64(0)
	apply := func(at int64, b command.Body) Result {
		t.Helper()
		idx++
		r := result(t, f.Apply(entry(t, idx, at, b)))
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		return r
	}
	var ids []string
	for i, host := range []string{"old", "recent", "running"} {
		j := apply(int64(100+i)*sec, command.StartJob{Start: meta.JobStart{Host: host, Trigger: meta.TriggerManual}, By: admin}).Value.(meta.Job)
		ids = append(ids, j.ID)
	}
	apply(110*sec, command.ReportJob{Report: meta.JobReport{ID: ids[0], Final: true, Status: meta.JobCompleted}, By: admin})
	apply(200*sec, command.ReportJob{Report: meta.JobReport{ID: ids[1], Final: true, Status: meta.JobFailed, Error: "hook"}, By: admin})
	// Cluster time advances at a bounded rate from the stamps: cut at the second job's
	// recorded end, after the first's.
	all, err := f.Jobs()
	if err != nil {
		t.Fatal(err)
	}
	cut := all[1].End
	if !all[0].End.Before(cut) {
		t.Fatalf("ends %v and %v not ordered", all[0].End, cut)
	}
	js, err := f.RecentJobs(cut, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(js) != 2 || js[0].Host != "recent" || js[1].Host != "running" {
		t.Fatalf("recent jobs %+v, want recent and running", js)
	}
	if js, _ := f.RecentJobs(cut, 1); len(js) != 1 || js[0].Host != "running" {
		t.Fatalf("limit 1: %+v, want the newest (running)", js)
	}
	if js, _ := f.RecentJobs(time.Unix(0, 0), 0); len(js) != 3 {
		t.Fatalf("since the epoch: %d jobs, want 3", len(js))
	}
}
