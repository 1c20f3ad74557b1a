// Package agentmetrics holds the Prometheus series of an agent daemon (`coffer agent
// run --metrics-listen`): what its backups, restores and jobs did, in a registry of its
// own (served by transport/metricsrv). The daemon records each job as it ends (WrapJobs
// sees every final job report the cluster accepts); a caller without job records uses
// Backup and Restore. Nothing is read from the cluster, and no path, vault key or
// passphrase is ever a label.
package agentmetrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/meta"
)

// Status labels of runs and jobs.
const (
	StatusCompleted       = client.StatusCompleted       // "completed"
	StatusPartiallyFailed = client.StatusPartiallyFailed // "partially failed"
	StatusFailed          = "failed"
)

// Metrics are one agent's series. Safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	backupRead, backupAdded, backupChunks, backupFiles prometheus.Counter
	backupDuration                                     *prometheus.HistogramVec
	restoreBytes, restoreFiles                         prometheus.Counter
	restoreDuration                                    *prometheus.HistogramVec
	jobs                                               *prometheus.CounterVec
	lastSuccess                                        *prometheus.GaugeVec
}

// durationBuckets span one second to a day.
func durationBuckets() []float64 { return prometheus.ExponentialBuckets(1, 4, 9) }

// New returns an agent's metrics in a fresh registry (with the Go runtime and process
// collectors). Every status of the jobs and duration series is present from the start,
// at zero, so dashboards and alerts see them before the first run.
func New() *Metrics {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	m := &Metrics{
		reg:          prometheus.NewRegistry(),
		backupRead:   counter("coffer_agent_backup_read_bytes_total", "Bytes this agent's backups read from their sources (unchanged files are not read)."),
		backupAdded:  counter("coffer_agent_backup_added_bytes_total", "Bytes of new content this agent's backups stored (before compression and encryption)."),
		backupChunks: counter("coffer_agent_backup_chunks_total", "New chunks this agent's backups stored."),
		backupFiles:  counter("coffer_agent_backup_files_total", "Files this agent's backups found new or changed."),
		backupDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "coffer_agent_backup_duration_seconds", Buckets: durationBuckets(),
			Help: "Duration of this agent's backups, by status (completed, partially failed, failed).",
		}, []string{"status"}),
		restoreBytes: counter("coffer_agent_restore_bytes_total", "Bytes this agent's restores wrote."),
		restoreFiles: counter("coffer_agent_restore_files_total", "Files this agent's restores wrote."),
		restoreDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "coffer_agent_restore_duration_seconds", Buckets: durationBuckets(),
			Help: "Duration of this agent's restores, by status (completed, failed).",
		}, []string{"status"}),
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coffer_agent_jobs_total",
			Help: "Jobs this agent ran, by kind (backup, verify) and status (completed, partially failed, failed).",
		}, []string{"kind", "status"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "coffer_agent_last_success_timestamp_seconds",
			Help: "When this agent's last successful run of a kind (backup, restore) ended (Unix time; 0: none yet).",
		}, []string{"kind"}),
	}
	for _, s := range []string{StatusCompleted, StatusPartiallyFailed, StatusFailed} {
		m.backupDuration.WithLabelValues(s)
		for _, k := range []string{meta.JobBackup, meta.JobVerify} {
			m.jobs.WithLabelValues(k, s)
		}
	}
	for _, s := range []string{StatusCompleted, StatusFailed} {
		m.restoreDuration.WithLabelValues(s)
	}
	for _, k := range []string{"backup", "restore"} {
		m.lastSuccess.WithLabelValues(k)
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.backupRead, m.backupAdded, m.backupChunks, m.backupFiles, m.backupDuration,
		m.restoreBytes, m.restoreFiles, m.restoreDuration, m.jobs, m.lastSuccess,
	)
	return m
}

// Registry is what the agent's metrics listener serves.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Backup records one backup run that took d and ended at end: res when err is nil (its
// snapshot's status: completed or partially failed), else a failed run. For callers
// without job records; the daemon's jobs are recorded by WrapJobs instead.
func (m *Metrics) Backup(res client.BackupResult, d time.Duration, end time.Time, err error) {
	status := StatusFailed
	if err == nil {
		st := res.Snapshot.Stats
		status = st.Status
		m.backupRun(meta.JobStats{BytesRead: res.BytesRead, BytesAdded: st.BytesAdded, ChunksAdded: st.ChunksAdded,
			FilesNew: st.FilesNew, FilesChanged: st.FilesChanged}, end)
	}
	m.backupDuration.WithLabelValues(bounded(status)).Observe(max(0, d.Seconds()))
}

// backupRun adds a successful (or partially failed) run's figures.
func (m *Metrics) backupRun(st meta.JobStats, end time.Time) {
	m.backupRead.Add(float64(max(0, st.BytesRead)))
	m.backupAdded.Add(float64(max(0, st.BytesAdded)))
	m.backupChunks.Add(float64(max(0, st.ChunksAdded)))
	m.backupFiles.Add(float64(max(0, st.FilesNew+st.FilesChanged)))
	m.lastSuccess.WithLabelValues("backup").Set(float64(end.Unix()))
}

// Restore records one restore that took d and ended at end: res when err is nil, else a
// failed one.
func (m *Metrics) Restore(res client.RestoreResult, d time.Duration, end time.Time, err error) {
	status := StatusFailed
	if err == nil {
		status = StatusCompleted
		m.restoreBytes.Add(float64(max(0, res.Bytes)))
		m.restoreFiles.Add(float64(max(0, res.Files)))
		m.lastSuccess.WithLabelValues("restore").Set(float64(end.Unix()))
	}
	m.restoreDuration.WithLabelValues(status).Observe(max(0, d.Seconds()))
}

// Job counts a finished job of kind (meta.JobBackup, meta.JobVerify) by status
// (StatusCompleted, StatusPartiallyFailed, StatusFailed). Other values count as
// "backup" and "failed", so the label set stays bounded.
func (m *Metrics) Job(kind, status string) {
	if kind != meta.JobVerify {
		kind = meta.JobBackup
	}
	m.jobs.WithLabelValues(kind, bounded(status)).Inc()
}

// JobEnded records an ended job as the cluster recorded it: its kind and status, and
// for a backup its duration and figures (cluster time, as the job's Start and End).
func (m *Metrics) JobEnded(j meta.Job) {
	kind := j.Kind
	if kind == "" {
		kind = meta.JobBackup
	}
	m.Job(kind, j.Status)
	if kind != meta.JobBackup {
		return
	}
	if j.Status == meta.JobCompleted || j.Status == meta.JobPartial {
		m.backupRun(j.Stats, j.End)
	}
	m.backupDuration.WithLabelValues(bounded(j.Status)).Observe(max(0, j.Duration().Seconds()))
}

// bounded maps a status outside the known ones to StatusFailed (a completed run with no
// status recorded is completed).
func bounded(status string) string {
	switch status {
	case StatusCompleted, StatusPartiallyFailed, StatusFailed:
		return status
	case "":
		return StatusCompleted
	}
	return StatusFailed
}

// WrapJobs returns js with every final job report the cluster accepts recorded by
// JobEnded: the agent daemon reports its jobs through it.
func (m *Metrics) WrapJobs(js meta.JobService) meta.JobService { return jobRecorder{js, m} }

type jobRecorder struct {
	meta.JobService
	m *Metrics
}

func (r jobRecorder) ReportJob(ctx context.Context, rep meta.JobReport) (meta.Job, error) {
	j, err := r.JobService.ReportJob(ctx, rep)
	if err == nil && j.Done() {
		r.m.JobEnded(j)
	}
	return j, err
}
