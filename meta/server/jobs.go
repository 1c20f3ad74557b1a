package server

import (
	"context"
	"fmt"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
)

var _ meta.JobService = (*Server)(nil)

// How often the leader looks for silent jobs and for job records past their retention
// (real time between checks; the decisions use cluster time).
const (
	jobExpiryEvery  = 5 * time.Second
	jobCompactEvery = time.Hour
)

// jobLoop is the leader loop's state for job duties (only the loop goroutine touches
// it).
type jobLoop struct {
	lastExpiry, lastCompact time.Time // real time (monotonic) of the last check
}

// PutPolicy implements meta.JobService.
func (s *Server) PutPolicy(ctx context.Context, p meta.BackupPolicy, create bool) (meta.BackupPolicy, error) {
	if err := s.leaderWrite(); err != nil {
		return meta.BackupPolicy{}, err
	}
	p.Created, p.Updated, p.By, p.Version = time.Time{}, time.Time{}, "", 0
	res, err := s.propose(timeoutOf(ctx), command.PutPolicy{Policy: p, Create: create, By: meta.PrincipalFrom(ctx)})
	if err != nil {
		return meta.BackupPolicy{}, fmt.Errorf("server: policy %s: %w", p.Name, err)
	}
	return res.(meta.BackupPolicy), nil
}

// DeletePolicy implements meta.JobService.
func (s *Server) DeletePolicy(ctx context.Context, name string) error {
	if err := s.leaderWrite(); err != nil {
		return err
	}
	if _, err := s.propose(timeoutOf(ctx), command.DeletePolicy{Name: name, By: meta.PrincipalFrom(ctx)}); err != nil {
		return fmt.Errorf("server: delete policy %s: %w", name, err)
	}
	return nil
}

// ListPolicies implements meta.JobService (a current read on the leader).
func (s *Server) ListPolicies(ctx context.Context) ([]meta.BackupPolicy, error) {
	if err := s.leaderRead(); err != nil {
		return nil, err
	}
	if err := meta.PrincipalFrom(ctx).Authorize(meta.ActJobsAll, ""); err != nil {
		return nil, fmt.Errorf("server: list policies: %w", err)
	}
	return s.fsm.BackupPolicies()
}

// HostPolicies implements meta.JobService (a current read on the leader).
func (s *Server) HostPolicies(ctx context.Context, host string, known uint64) (meta.HostPolicies, error) {
	if err := s.leaderRead(); err != nil {
		return meta.HostPolicies{}, err
	}
	host, err := meta.JobHost(meta.PrincipalFrom(ctx), host)
	if err != nil {
		return meta.HostPolicies{}, fmt.Errorf("server: host policies: %w", err)
	}
	out := meta.HostPolicies{Host: host, Now: s.fsm.Now()}
	if out.Version, err = s.fsm.PolicyVersion(); err != nil {
		return meta.HostPolicies{}, err
	}
	if known != 0 && known == out.Version {
		out.Unchanged = true
		return out, nil
	}
	if out.Labels, err = s.fsm.HostLabels(host); err != nil {
		return meta.HostPolicies{}, err
	}
	agents, err := s.fsm.Agents()
	if err != nil {
		return meta.HostPolicies{}, err
	}
	for _, a := range agents {
		if a.Host == host {
			out.Retired, out.RunRequested = a.Retired != nil, a.RunRequested
		}
	}
	if out.Retired {
		return out, nil // a decommissioned host's schedules stop
	}
	all, err := s.fsm.BackupPolicies()
	if err != nil {
		return meta.HostPolicies{}, err
	}
	for _, p := range all {
		if p.AppliesTo(host, out.Labels) {
			out.Policies = append(out.Policies, p)
		}
	}
	return out, nil
}

// StartJob implements meta.JobService.
func (s *Server) StartJob(ctx context.Context, st meta.JobStart) (meta.Job, error) {
	if err := s.leaderWrite(); err != nil {
		return meta.Job{}, err
	}
	res, err := s.propose(timeoutOf(ctx), command.StartJob{Start: st, By: meta.PrincipalFrom(ctx)})
	if err != nil {
		return meta.Job{}, fmt.Errorf("server: start job: %w", err)
	}
	return res.(meta.Job), nil
}

// ReportJob implements meta.JobService. A final report calls Config.OnJobEnd.
func (s *Server) ReportJob(ctx context.Context, r meta.JobReport) (meta.Job, error) {
	if err := s.leaderWrite(); err != nil {
		return meta.Job{}, err
	}
	res, err := s.propose(timeoutOf(ctx), command.ReportJob{Report: r, By: meta.PrincipalFrom(ctx)})
	if err != nil {
		return meta.Job{}, fmt.Errorf("server: report job %s: %w", r.ID, err)
	}
	j := res.(meta.Job)
	if j.Done() {
		s.jobEnded(j)
	}
	return j, nil
}

// Heartbeat implements meta.JobService.
func (s *Server) Heartbeat(ctx context.Context, hb meta.Heartbeat) error {
	if err := s.leaderWrite(); err != nil {
		return err
	}
	if _, err := s.propose(timeoutOf(ctx), command.Heartbeat{Heartbeat: hb, By: meta.PrincipalFrom(ctx)}); err != nil {
		return fmt.Errorf("server: heartbeat: %w", err)
	}
	return nil
}

// ListJobs implements meta.JobService (a current read on the leader). An agent's filter
// is narrowed to its own host.
func (s *Server) ListJobs(ctx context.Context, f meta.JobFilter) ([]meta.Job, error) {
	if err := s.leaderRead(); err != nil {
		return nil, err
	}
	p := meta.PrincipalFrom(ctx)
	if !p.Can(meta.ActJobsAll, "") {
		host, err := meta.JobHost(p, f.Host)
		if err != nil {
			return nil, fmt.Errorf("server: list jobs: %w", err)
		}
		f.Host = host
	}
	if f.Limit < 0 {
		return nil, fmt.Errorf("%w: server: list jobs: negative limit", meta.ErrInvalid)
	}
	all, err := s.fsm.Jobs()
	if err != nil {
		return nil, err
	}
	var out []meta.Job
	for _, j := range all {
		if f.Match(j) {
			out = append(out, j)
		}
	}
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[len(out)-f.Limit:]
	}
	return out, nil
}

// ListAgents implements meta.JobService (a current read on the leader).
func (s *Server) ListAgents(ctx context.Context) ([]meta.Agent, error) {
	if err := s.leaderRead(); err != nil {
		return nil, err
	}
	if err := meta.PrincipalFrom(ctx).Authorize(meta.ActJobsAll, ""); err != nil {
		return nil, fmt.Errorf("server: list agents: %w", err)
	}
	return s.fsm.Agents()
}

// jobEnded hands an ended job to Config.OnJobEnd.
func (s *Server) jobEnded(j meta.Job) {
	s.opsJobEnded(j)
	s.figs.jobEnded(j) // figures.go
	if s.cfg.OnJobEnd != nil {
		s.cfg.OnJobEnd(j)
	}
}

// jobsDue runs the leader's job duties from its loop: running jobs not updated for
// JobTimeout of cluster time are marked failed (every jobExpiryEvery), and ended jobs
// older than JobRetention are removed, and so are alerts resolved (or, for one-time
// events, raised) longer ago than that (every jobCompactEvery).
func (s *Server) jobsDue() {
	now := time.Now()
	if now.Sub(s.jobs.lastExpiry) >= min(jobExpiryEvery, s.cfg.JobTimeout/4) {
		s.jobs.lastExpiry = now
		s.expireJobs()
	}
	if now.Sub(s.jobs.lastCompact) >= jobCompactEvery {
		s.jobs.lastCompact = now
		res, err := s.propose(0, command.CompactJobs{Retain: int64(s.cfg.JobRetention)})
		if err != nil {
			s.log.Warn("compact job records", "err", err)
		} else if n := res.(int); n > 0 {
			s.log.Info("job records past their retention removed", "jobs", n, "retention", s.cfg.JobRetention)
		}
		// Fired alerts are kept as long as job records: resolved ones from their
		// resolution, one-time events from when they were raised.
		res, err = s.propose(0, command.CompactAlerts{Retain: int64(s.cfg.JobRetention)})
		if err != nil {
			s.log.Warn("compact alerts", "err", err)
		} else if n := res.(int); n > 0 {
			s.log.Info("alerts past their retention removed", "alerts", n, "retention", s.cfg.JobRetention)
		}
	}
}

func (s *Server) expireJobs() {
	jobs, err := s.fsm.Jobs()
	if err != nil {
		s.log.Warn("read jobs for expiry", "err", err)
		return
	}
	now := s.fsm.Now()
	var ids []string
	for _, j := range jobs {
		if !j.Done() && now.Sub(j.Updated) >= s.cfg.JobTimeout {
			ids = append(ids, j.ID)
		}
	}
	if len(ids) == 0 {
		return
	}
	res, err := s.propose(0, command.ExpireJobs{IDs: ids, Timeout: int64(s.cfg.JobTimeout)})
	if err != nil {
		s.log.Warn("expire silent jobs", "err", err)
		return
	}
	for _, j := range res.([]meta.Job) {
		s.log.Warn("job failed: its agent went silent", "job", j.ID, "host", j.Host, "policy", j.Policy, "last_update", j.Updated)
		s.jobEnded(j)
	}
}
