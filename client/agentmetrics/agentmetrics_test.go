package agentmetrics_test

import (
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
	m.Job(agentmetrics.StatusCompleted)
	m.Job("something else") // counted as failed: the label set stays bounded
	reg := m.Registry()

	if n, err := testutil.GatherAndCount(reg, "coffer_agent_jobs_total"); err != nil || n != 3 {
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
		"coffer_agent_backup_read_bytes_total":                         100, // the failed run adds nothing
		"coffer_agent_backup_added_bytes_total":                        40,
		"coffer_agent_backup_chunks_total":                             2,
		"coffer_agent_backup_files_total":                              4,
		"coffer_agent_backup_duration_seconds,status=partially failed": 1,
		"coffer_agent_backup_duration_seconds,status=failed":           1,
		"coffer_agent_backup_duration_seconds,status=completed":        0,
		"coffer_agent_restore_bytes_total":                             7,
		"coffer_agent_restore_duration_seconds,status=completed":       1,
		"coffer_agent_jobs_total,status=completed":                     1,
		"coffer_agent_jobs_total,status=failed":                        1,
		"coffer_agent_last_success_timestamp_seconds,kind=backup":      float64(end.Unix()),
		"coffer_agent_last_success_timestamp_seconds,kind=restore":     float64(end.Unix()),
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
}
