package server

import (
	"context"
	"fmt"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/anomaly"
	"github.com/cofferhq/coffer/meta/command"
)

// opsJobEnded handles an ended job on the leader, in the background: a failed or
// partially failed job raises an alert (job-failed, or verify-failed for a verify job);
// a backup job is compared with its host and policy's history (meta/anomaly) and an
// outlier is flagged on the job (FlagJob) and raises an anomaly alert. Alerts are keyed
// by the job, so a second call for the same job raises nothing new.
//
// NB: a leader that fails between recording the job's end and this check leaves the job
// unchecked; the next leader does not go back over ended jobs.
func (s *Server) opsJobEnded(j meta.Job) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := s.stopContext()
		defer cancel()
		s.checkEndedJob(ctx, j)
	}()
}

func (s *Server) checkEndedJob(ctx context.Context, j meta.Job) {
	policy := j.Policy
	if policy == "" {
		policy = "(manual)"
	}
	if j.Failed() {
		kind, sev := meta.AlertJobFailed, meta.SeverityCritical
		if j.Kind == meta.JobVerify {
			kind = meta.AlertVerifyFailed
		}
		if j.Status == meta.JobPartial {
			sev = meta.SeverityWarning
		}
		msg := fmt.Sprintf("%s job %s of policy %s on %s %s", j.Kind, j.ID, policy, j.Host, j.Status)
		if j.Error != "" {
			msg += ": " + j.Error
		}
		if _, err := s.RaiseAlert(ctx, meta.Alert{Key: fmt.Sprintf("%s/%s", kind, j.ID), Kind: kind, Severity: sev, Subject: j.Host, Message: msg,
			Details: map[string]string{"job": j.ID, "host": j.Host, "policy": j.Policy, "status": j.Status, "error": j.Error}}); err != nil {
			s.log.Warn("raise job alert", "job", j.ID, "err", err)
		}
	}
	if j.Kind != meta.JobBackup || j.Status == meta.JobFailed {
		return
	}
	reason, err := s.anomalyOf(j)
	if err != nil {
		s.log.Warn("anomaly check", "job", j.ID, "err", err)
		return
	}
	if reason == "" {
		return
	}
	if _, err := s.propose(timeoutOf(ctx), command.FlagJob{ID: j.ID, Anomaly: reason}); err != nil {
		s.log.Warn("flag job", "job", j.ID, "err", err)
	}
	if _, err := s.RaiseAlert(ctx, meta.Alert{Key: fmt.Sprintf("%s/%s", meta.AlertAnomaly, j.ID), Kind: meta.AlertAnomaly, Severity: meta.SeverityCritical,
		Subject: j.Host, Message: fmt.Sprintf("backup job %s of policy %s on %s is far outside its history: %s", j.ID, policy, j.Host, reason),
		Details: map[string]string{"job": j.ID, "host": j.Host, "policy": j.Policy, "anomaly": reason, "snapshot": j.Snapshot}}); err != nil {
		s.log.Warn("raise anomaly alert", "job", j.ID, "err", err)
	}
}

// anomalyOf compares an ended backup job with the earlier ended, not failed, backup jobs
// of its host and policy ("" when nothing stands out).
func (s *Server) anomalyOf(j meta.Job) (string, error) {
	jobs, err := s.fsm.Jobs() // oldest first: IDs sort in start order
	if err != nil {
		return "", err
	}
	var hist []meta.Job
	for _, o := range jobs {
		if o.ID < j.ID && o.Host == j.Host && o.Policy == j.Policy && o.Kind == meta.JobBackup && o.Done() && o.Status != meta.JobFailed {
			hist = append(hist, o)
		}
	}
	samples := make([]anomaly.Sample, len(hist))
	var prev *meta.Job
	for i := range hist {
		samples[i] = jobSample(hist[i], prev)
		prev = &hist[i]
	}
	return anomaly.Reason(anomaly.Check(samples, jobSample(j, prev), anomaly.Config{})), nil
}

// jobSample turns a job into the anomaly check's figures; files deleted are the files
// of the previous job that this one no longer saw unchanged or changed.
func jobSample(j meta.Job, prev *meta.Job) anomaly.Sample {
	st := j.Stats
	smp := anomaly.Sample{BytesAdded: float64(st.BytesAdded), FilesNew: float64(st.FilesNew), FilesChanged: float64(st.FilesChanged),
		Duration: j.Duration().Seconds()}
	if prev != nil {
		if gone := prev.Stats.Files() - st.FilesUnmodified - st.FilesChanged; gone > 0 {
			smp.FilesDeleted = float64(gone)
		}
	}
	if st.BytesNew > 0 && st.BytesAdded > 0 {
		smp.Ratio = float64(st.BytesNew) / float64(st.BytesAdded)
	}
	return smp
}

// missedRuns raises a missed-run alert (RPO breach) for each host and scheduled policy
// whose next run after its last one (or after the policy or the host appeared) is more
// than missedRunGrace overdue in cluster time. The key names the missed time, so each
// missed run is reported once.
func (s *Server) missedRuns(ctx context.Context) {
	pols, err := s.fsm.BackupPolicies()
	if err != nil || len(pols) == 0 {
		return
	}
	agents, err := s.fsm.Agents()
	if err != nil || len(agents) == 0 {
		return
	}
	jobs, err := s.fsm.Jobs()
	if err != nil {
		return
	}
	type hp struct{ host, policy string }
	last := map[hp]time.Time{}
	for _, j := range jobs {
		if j.Kind != meta.JobBackup && j.Kind != "" {
			continue // a verify run is not the policy's backup
		}
		t := j.Scheduled
		if t.IsZero() {
			t = j.Start
		}
		if k := (hp{j.Host, j.Policy}); t.After(last[k]) {
			last[k] = t
		}
	}
	now := s.fsm.Now()
	for _, p := range pols {
		if p.Schedule == "" {
			continue
		}
		sched, err := meta.ParseSchedule(p.Schedule)
		if err != nil {
			continue
		}
		for _, a := range agents {
			if a.Retired != nil || !p.AppliesTo(a.Host, a.Labels) {
				continue
			}
			from := last[hp{a.Host, p.Name}]
			for _, t := range []time.Time{p.Updated, p.Created, a.FirstSeen} {
				if t.After(from) {
					from = t
				}
			}
			due := sched.Next(from)
			if due.IsZero() || now.Sub(due) < s.cfg.Alerts.missedRunGrace() {
				continue
			}
			late := now.Sub(due).Round(time.Minute)
			if _, err := s.RaiseAlert(ctx, meta.Alert{Key: fmt.Sprintf("%s/%s/%s/%d", meta.AlertMissedRun, a.Host, p.Name, due.Unix()), Kind: meta.AlertMissedRun,
				Severity: meta.SeverityCritical, Subject: a.Host,
				Message: fmt.Sprintf("policy %s on %s was due at %s (%s ago) and has not run (last seen %s)", p.Name, a.Host, due.UTC().Format(time.RFC3339), late,
					a.LastSeen.UTC().Format(time.RFC3339)),
				Details: map[string]string{"host": a.Host, "policy": p.Name, "due": due.UTC().Format(time.RFC3339)}}); err != nil {
				s.log.Warn("raise missed-run alert", "host", a.Host, "policy", p.Name, "err", err)
			}
		}
	}
}
