package agentmetrics_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/client/agentmetrics"
	"github.com/cofferhq/coffer/meta"
)

func TestRunsAndJobs(t *testing.T) {
	m := agentmetrics.New()
	end := time.Unix(1_800_000_000, 0)
	res := client.BackupResult{BytesRead: 100, Snapshot: meta.Snapshot{Stats: meta.SnapshotStats{
		Status: client.StatusPartiallyFailed, BytesAdded: 40, ChunksAdded: 2, FilesNew: 3, FilesChanged: 1}}}
	m.Backup(res, 2*time.Second, end, nil)
	m.Backup(client.BackupResult{BytesRead: 999}, time.Second, end.Add(time.Hour), errors.New("hook failed"))
	m.Restore(client.RestoreResult{Bytes: 7, Files: 1}, time.Second, end, nil)
	m.Job(meta.JobVerify, agentmetrics.StatusCompleted)
	m.Job("other", "something else") // counted as a failed backup job: the label set stays bounded
	// A daemon job through the wrapped job service: only final reports count.
	js := m.WrapJobs(fakeJobs{})
	if _, err := js.ReportJob(context.Background(), meta.JobReport{ID: "j1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.ReportJob(context.Background(), meta.JobReport{ID: "j1", Final: true, Status: meta.JobCompleted,
		Stats: meta.JobStats{BytesRead: 1000, BytesAdded: 10, ChunksAdded: 1, FilesNew: 1}}); err != nil {
		t.Fatal(err)
	}
	reg := m.Registry()

	if n, err := testutil.GatherAndCount(reg, "coffer_agent_jobs_total"); err != nil || n != 6 {
		t.Errorf("job series: %d, %v (want every status present)", n, err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range mt.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			switch {
			case mt.Counter != nil:
				got[key] = mt.GetCounter().GetValue()
			case mt.Gauge != nil:
				got[key] = mt.GetGauge().GetValue()
			case mt.Histogram != nil:
				got[key] = float64(mt.GetHistogram().GetSampleCount())
			}
		}
	}
	want := map[string]float64{
		"coffer_agent_backup_read_bytes_total":                         1100, // the failed run adds nothing
		"coffer_agent_backup_added_bytes_total":                        50,
		"coffer_agent_backup_chunks_total":                             3,
		"coffer_agent_backup_files_total":                              5,
		"coffer_agent_backup_duration_seconds,status=partially failed": 1,
		"coffer_agent_backup_duration_seconds,status=failed":           1,
		"coffer_agent_backup_duration_seconds,status=completed":        1, // the job
		"coffer_agent_restore_bytes_total":                             7,
		"coffer_agent_restore_duration_seconds,status=completed":       1,
		"coffer_agent_jobs_total,kind=verify,status=completed":         1,
		"coffer_agent_jobs_total,kind=backup,status=completed":         1,
		"coffer_agent_jobs_total,kind=backup,status=failed":            1,
		"coffer_agent_last_success_timestamp_seconds,kind=backup":      float64(jobEnd.Unix()),
		"coffer_agent_last_success_timestamp_seconds,kind=restore":     float64(end.Unix()),
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
}

// jobEnd is when fakeJobs' job ended.
var jobEnd = time.Unix(1_800_000_600, 0) // immutable: a test constant

// fakeJobs answers ReportJob as the cluster does: the job, ended when the report is final.
type fakeJobs struct{ meta.JobService }

func (fakeJobs) ReportJob(_ context.Context, r meta.JobReport) (meta.Job, error) {
	j := meta.Job{ID: r.ID, Kind: meta.JobBackup, Status: meta.JobRunning, Start: jobEnd.Add(-90 * time.Second), Stats: r.Stats}
	if r.Final {
		j.Status, j.End = r.Status, jobEnd
	}
	return j, nil
}
