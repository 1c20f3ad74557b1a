package node

import (
	"testing"

	"github.com/cofferhq/coffer/meta"
)

// TestJobRowsAnomalies: a job's own anomaly flag wins, an anomaly alert naming the job
// (detail or key) marks it otherwise; rows come newest first with host · policy lanes.
func TestJobRowsAnomalies(t *testing.T) {
	js := []meta.Job{
		{ID: "j1", Host: "web01", Policy: "nightly", Kind: meta.JobBackup, Trigger: meta.TriggerSchedule, Status: meta.JobCompleted, Anomaly: "own flag"},
		{ID: "j2", Host: "db01", Kind: meta.JobBackup, Trigger: meta.TriggerManual, Status: meta.JobCompleted},
		{ID: "j3", Host: "mail01", Kind: meta.JobBackup, Status: meta.JobFailed},
	}
	alerts := []meta.Alert{
		{Kind: meta.AlertAnomaly, Key: "anomaly/j1", Message: "alert for j1"},
		{Kind: meta.AlertAnomaly, Key: "anomaly/other", Message: "by detail", Details: map[string]string{"job": "j2"}},
		{Kind: meta.AlertJobFailed, Key: "job-failed/j3", Message: "not an anomaly"},
	}
	rows := jobRows(js, anomalies(alerts))
	if len(rows) != 3 || rows[0].ID != "j3" || rows[2].Name != "web01 · nightly" || rows[1].Kind != "backup (manual)" {
		t.Fatalf("rows %+v", rows)
	}
	if rows[2].Anomaly != "own flag" || rows[1].Anomaly != "by detail" || rows[0].Anomaly != "" {
		t.Errorf("anomalies %q %q %q, want own flag, by detail and none", rows[2].Anomaly, rows[1].Anomaly, rows[0].Anomaly)
	}
}
