// Package agent is the backup agent daemon (`coffer agent run`): it fetches its host's
// backup policies from the cluster (re-read when their version changes), schedules them
// with cron expressions (github.com/robfig/cron/v3) and a random delay, runs each due
// policy with a Runner (and each due verify schedule of a policy with a Verifier),
// records every run as a job (meta.JobService), retries transient failures with backoff,
// never runs two jobs of one schedule at once, and sends heartbeats that keep its running
// jobs alive.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/transport"
	"github.com/robfig/cron/v3"
)

// Defaults for Config's zero fields.
const (
	DefaultPoll      = 30 * time.Second
	DefaultHeartbeat = 30 * time.Second
	DefaultMaxJitter = 5 * time.Minute
	DefaultRetries   = 3
	DefaultBackoff   = 10 * time.Second
	// reportTries bounds the attempts to record a job's end.
	reportTries = 5
)

// Outcome is what a Runner reports of one attempt that got as far as a snapshot (or
// failed): the job's final status, stats and snapshot.
type Outcome struct {
	Status   string // meta.JobCompleted or meta.JobPartial; failures are errors
	Stats    meta.JobStats
	Snapshot string // hex snapshot ID
	// Warning, when set, is recorded as the job's error while the status stands (a
	// post-hook that failed after the snapshot was saved).
	Warning string
	// Report is a verify run's report, kept on its job record also when the run failed
	// (bad chunks).
	Report *meta.VerifyReport
}

// Runner runs one policy once. An error means the attempt failed; Transient (or an
// error the agent classifies as transient) makes the agent try again.
type Runner func(ctx context.Context, p meta.BackupPolicy) (Outcome, error)

// Verifier runs one verification of a policy's snapshots: sampled (full false, by
// p.Verify.Sample) or of every chunk (full true). Bad chunks are an error that is not
// transient, with the report in the Outcome.
type Verifier func(ctx context.Context, p meta.BackupPolicy, full bool) (Outcome, error)

// Config configures an Agent.
type Config struct {
	Jobs meta.JobService // required: the cluster
	Run  Runner          // required
	// Verify runs the policies' verify schedules (meta.BackupPolicy.Verify); nil: they
	// are not scheduled (logged once per policy version).
	Verify   Verifier
	Hostname string       // reported in heartbeats
	Version  string       // the agent's version
	Vault    meta.VaultID // recorded on jobs
	Logger   *slog.Logger
	// Now is the clock of the schedule (default time.Now).
	Now func() time.Time
	// Poll is how often the policies are re-read; Heartbeat how often a heartbeat is
	// sent; MaxJitter bounds the random delay of a scheduled run (it is also at most a
	// tenth of the time between two runs); Retries and Backoff: how many times a
	// transient failure is retried, and the first wait (doubling). Zero: defaults;
	// MaxJitter < 0: no jitter; Retries < 0: no retries.
	Poll, Heartbeat, MaxJitter time.Duration
	Retries                    int
	Backoff                    time.Duration
}

// Agent is the daemon. Run it once.
type Agent struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	policies map[string][]*entry // by policy name: its backup and verify schedules
	version  uint64
	running  map[string]string // entry key → job ID (while running)
	wg       sync.WaitGroup
	// runRequested is the newest final-run request seen (HostPolicies.RunRequested);
	// runNow is set until startDue has started the requested runs.
	runRequested time.Time
	runNow       bool
}

// Kinds of scheduled runs (entry.kind, meta.NextRun.Kind).
const (
	RunBackup     = meta.JobBackup // the policy's backup
	RunVerify     = "verify"       // its sampled verify
	RunVerifyFull = "verify-full"  // its full verify
)

// entry is one schedule of a policy: its backup, sampled verify or full verify.
type entry struct {
	p     meta.BackupPolicy
	kind  string // RunBackup, RunVerify, RunVerifyFull
	sched cron.Schedule
	next  time.Time // next fire (with jitter)
	want  time.Time // the schedule's time for next
}

// key names the entry in Agent.running: one job of an entry at a time.
func (e *entry) key() string { return e.p.Name + "/" + e.kind }

// New checks cfg and returns an agent.
func New(cfg Config) (*Agent, error) {
	if cfg.Jobs == nil || cfg.Run == nil {
		return nil, errors.New("agent: config needs Jobs and Run")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Poll <= 0 {
		cfg.Poll = DefaultPoll
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.MaxJitter == 0 {
		cfg.MaxJitter = DefaultMaxJitter
	}
	switch {
	case cfg.Retries == 0:
		cfg.Retries = DefaultRetries
	case cfg.Retries < 0:
		cfg.Retries = 0
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = DefaultBackoff
	}
	return &Agent{cfg: cfg, log: cfg.Logger.With("component", "agent"), policies: map[string][]*entry{}, running: map[string]string{}}, nil
}

// Run schedules and runs the host's policies until ctx is done, then waits for the jobs
// it started (they see ctx cancelled and record themselves failed). It returns an error
// only when the very first read of the policies fails for a reason other than
// unavailability (a refused certificate, for one).
func (a *Agent) Run(ctx context.Context) error {
	if err := a.refresh(ctx); err != nil && !Transient(err) {
		return fmt.Errorf("agent: read policies: %w", err)
	} else if err != nil {
		a.log.Warn("cluster unavailable; retrying", "err", err)
	}
	a.heartbeat(ctx)
	now := a.cfg.Now()
	nextPoll, nextBeat := now.Add(a.cfg.Poll), now.Add(a.cfg.Heartbeat)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		now = a.cfg.Now()
		if !now.Before(nextPoll) {
			if err := a.refresh(ctx); err != nil {
				a.log.Warn("read policies", "err", err)
			}
			nextPoll = now.Add(a.cfg.Poll)
		}
		if !now.Before(nextBeat) {
			a.heartbeat(ctx)
			nextBeat = now.Add(a.cfg.Heartbeat)
		}
		wake := a.startDue(ctx, now)
		wake = minTime(wake, nextPoll, nextBeat)
		timer.Reset(max(wake.Sub(a.cfg.Now()), time.Millisecond))
		select {
		case <-ctx.Done():
			a.wg.Wait()
			return nil
		case <-timer.C:
		}
	}
}

func minTime(ts ...time.Time) time.Time {
	var m time.Time
	for _, t := range ts {
		if !t.IsZero() && (m.IsZero() || t.Before(m)) {
			m = t
		}
	}
	return m
}

// refresh re-reads the policies when their version changed and reschedules the ones
// that are new or changed (a changed schedule takes effect from now).
func (a *Agent) refresh(ctx context.Context) error {
	a.mu.Lock()
	known := a.version
	a.mu.Unlock()
	hp, err := a.cfg.Jobs.HostPolicies(ctx, "", known)
	if err != nil {
		return err
	}
	if hp.Unchanged {
		return nil
	}
	now := a.cfg.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.version = hp.Version
	seen := map[string]bool{}
	for _, p := range hp.Policies {
		seen[p.Name] = true
		if old := a.policies[p.Name]; len(old) > 0 && old[0].p.Version == p.Version {
			continue
		}
		es := a.entries(p)
		for _, e := range es {
			a.plan(e, now)
			a.log.Info("policy scheduled", "policy", p.Name, "run", e.kind, "next", e.next)
		}
		if len(es) == 0 {
			delete(a.policies, p.Name)
			continue
		}
		a.policies[p.Name] = es
	}
	for name := range a.policies {
		if !seen[name] {
			delete(a.policies, name)
			a.log.Info("policy removed", "policy", name)
		}
	}
	if hp.Retired {
		a.log.Warn("this host is decommissioned: no policies run")
	}
	// A final-run request (host decommission --final-snapshot): each backup policy runs
	// once now. One older than an hour seen at start is history, not a request.
	if hp.RunRequested.After(a.runRequested) {
		first := a.runRequested.IsZero()
		a.runRequested = hp.RunRequested
		if !first || hp.Now.Sub(hp.RunRequested) < time.Hour {
			a.runNow = true
			a.log.Info("final run of every policy requested", "at", hp.RunRequested)
		}
	}
	return nil
}

// entries returns p's schedules: its backup, and its sampled and full verify when it
// has them and the agent has a Verifier. A bad spec is logged and skipped (the cluster
// validates them, so only a newer cluster's syntax gets here).
func (a *Agent) entries(p meta.BackupPolicy) []*entry {
	specs := []struct{ kind, spec string }{{RunBackup, p.Schedule}}
	if v := p.Verify; v != nil {
		if a.cfg.Verify == nil {
			a.log.Warn("policy's verify schedule not run: this agent has no verifier", "policy", p.Name)
		} else {
			specs = append(specs, struct{ kind, spec string }{RunVerify, v.Schedule}, struct{ kind, spec string }{RunVerifyFull, v.Full})
		}
	}
	var out []*entry
	for _, s := range specs {
		if s.spec == "" && s.kind != RunBackup {
			continue
		}
		sched, err := meta.ParseSchedule(s.spec)
		if err != nil {
			a.log.Error("policy with a bad schedule skipped", "policy", p.Name, "run", s.kind, "err", err)
			continue
		}
		out = append(out, &entry{p: p, kind: s.kind, sched: sched})
	}
	return out
}

// plan sets e's next run after now: the schedule's next time plus a random delay of at
// most MaxJitter and a tenth of the time to the run after it.
func (a *Agent) plan(e *entry, now time.Time) {
	want := e.sched.Next(now)
	e.want, e.next = want, want
	if a.cfg.MaxJitter <= 0 || want.IsZero() {
		return
	}
	limit := min(a.cfg.MaxJitter, e.sched.Next(want).Sub(want)/10)
	if limit > 0 {
		e.next = want.Add(time.Duration(rand.Int64N(int64(limit))))
	}
}

// startDue starts the due runs and returns the earliest next run.
func (a *Agent) startDue(ctx context.Context, now time.Time) time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	var wake time.Time
	if a.runNow {
		a.runNow = false
		for _, es := range a.policies {
			for _, e := range es {
				if e.kind != RunBackup {
					continue
				}
				if id, busy := a.running[e.key()]; busy {
					a.log.Warn("requested run skipped: a job of the policy runs", "policy", e.p.Name, "job", id)
					continue
				}
				a.running[e.key()] = ""
				a.wg.Add(1)
				go a.runJob(ctx, e.p, e.kind, time.Time{})
			}
		}
	}
	for _, es := range a.policies {
		for _, e := range es {
			if !now.Before(e.next) {
				if id, busy := a.running[e.key()]; busy {
					a.log.Warn("scheduled run skipped: the previous job of the schedule still runs", "policy", e.p.Name, "run", e.kind, "job", id, "scheduled", e.want)
				} else {
					a.running[e.key()] = ""
					a.wg.Add(1)
					go a.runJob(ctx, e.p, e.kind, e.want)
				}
				a.plan(e, now)
			}
			wake = minTime(wake, e.next)
		}
	}
	return wake
}

// NextRuns returns the next scheduled run of each policy's schedules, sorted by policy
// and kind.
func (a *Agent) NextRuns() []meta.NextRun {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []meta.NextRun
	for _, es := range a.policies {
		for _, e := range es {
			r := meta.NextRun{Policy: e.p.Name, At: e.next.UTC()}
			if e.kind != RunBackup {
				r.Kind = e.kind
			}
			out = append(out, r)
		}
	}
	if out == nil {
		out = []meta.NextRun{}
	}
	slices.SortFunc(out, func(x, y meta.NextRun) int {
		if c := strings.Compare(x.Policy, y.Policy); c != 0 {
			return c
		}
		return strings.Compare(x.Kind, y.Kind)
	})
	return out
}

func (a *Agent) heartbeat(ctx context.Context) {
	a.mu.Lock()
	var ids []string
	for _, id := range a.running {
		if id != "" {
			ids = append(ids, id)
		}
	}
	a.mu.Unlock()
	slices.Sort(ids)
	hb := meta.Heartbeat{Hostname: a.cfg.Hostname, Version: a.cfg.Version, Running: ids, NextRuns: a.NextRuns()}
	if err := a.cfg.Jobs.Heartbeat(ctx, hb); err != nil && ctx.Err() == nil {
		a.log.Warn("heartbeat", "err", err)
	}
}

// runJob records and runs one scheduled run of p: its backup, or a verify.
func (a *Agent) runJob(ctx context.Context, p meta.BackupPolicy, kind string, scheduled time.Time) {
	defer a.wg.Done()
	key := p.Name + "/" + kind
	defer func() {
		a.mu.Lock()
		delete(a.running, key)
		a.mu.Unlock()
	}()
	st := meta.JobStart{Policy: p.Name, Vault: a.cfg.Vault, Trigger: meta.TriggerSchedule, Scheduled: scheduled.UTC(), Version: a.cfg.Version}
	if scheduled.IsZero() { // a requested run (final snapshot)
		st.Trigger, st.Scheduled = meta.TriggerManual, time.Time{}
	}
	run := a.cfg.Run
	if kind != RunBackup {
		st.Kind = meta.JobVerify
		full := kind == RunVerifyFull
		run = func(ctx context.Context, p meta.BackupPolicy) (Outcome, error) { return a.cfg.Verify(ctx, p, full) }
	}
	job, err := a.cfg.Jobs.StartJob(ctx, st)
	if err != nil {
		a.log.Error("scheduled run not started: the job could not be recorded", "policy", p.Name, "run", kind, "err", err)
		return
	}
	a.mu.Lock()
	a.running[key] = job.ID
	a.mu.Unlock()
	log := a.log.With("policy", p.Name, "run", kind, "job", job.ID)
	log.Info("job started")
	rep := Execute(ctx, run, p, a.cfg.Retries, a.cfg.Backoff, log)
	rep.ID = job.ID
	if _, err := Report(context.WithoutCancel(ctx), a.cfg.Jobs, rep, a.cfg.Backoff); err != nil {
		log.Error("job end not recorded", "status", rep.Status, "err", err)
		return
	}
	log.Info("job ended", "status", rep.Status, "error", rep.Error, "snapshot", rep.Snapshot)
}

// Execute runs p with run, retrying transient failures up to retries times with
// doubling waits from backoff, and returns the final report (without its ID).
func Execute(ctx context.Context, run Runner, p meta.BackupPolicy, retries int, backoff time.Duration, log *slog.Logger) meta.JobReport {
	wait := backoff
	for attempt := 1; ; attempt++ {
		out, err := run(ctx, p)
		if err == nil {
			return meta.JobReport{Final: true, Status: out.Status, Error: out.Warning, Attempts: attempt, Stats: out.Stats, Snapshot: out.Snapshot, Report: out.Report}
		}
		if attempt > retries || !Transient(err) || ctx.Err() != nil {
			return meta.JobReport{Final: true, Status: meta.JobFailed, Error: err.Error(), Attempts: attempt, Stats: out.Stats, Report: out.Report}
		}
		log.Warn("transient failure; retrying", "attempt", attempt, "wait", wait, "err", err)
		select {
		case <-ctx.Done():
			return meta.JobReport{Final: true, Status: meta.JobFailed, Error: fmt.Sprintf("%v (stopped before retry %d: %v)", err, attempt, ctx.Err()), Attempts: attempt}
		case <-time.After(wait):
		}
		wait *= 2
	}
}

// Report records a job's end, retrying a transient failure a few times with waits from
// backoff (the cluster may be electing a leader).
func Report(ctx context.Context, js meta.JobService, r meta.JobReport, backoff time.Duration) (meta.Job, error) {
	wait := backoff
	for try := 1; ; try++ {
		j, err := js.ReportJob(ctx, r)
		if err == nil || try == reportTries || !Transient(err) {
			return j, err
		}
		select {
		case <-ctx.Done():
			return j, err
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Minute)
	}
}

// transientError marks an error as worth retrying.
type transientError struct{ err error }

func (e transientError) Error() string { return e.err.Error() }
func (e transientError) Unwrap() error { return e.err }

// MarkTransient wraps err so that Transient reports true.
func MarkTransient(err error) error { return transientError{err} }

// Transient reports whether err is worth retrying: the cluster or a node was
// unavailable (meta.ErrUnavailable, transport.Unavailable, a network error), a deadline
// passed, or it was marked so.
func Transient(err error) bool {
	if err == nil {
		return false
	}
	var te transientError
	var ne net.Error
	var we *transport.Error
	switch {
	case errors.As(err, &te), errors.Is(err, meta.ErrUnavailable), errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne):
		return true
	case errors.As(err, &we):
		return we.Code == transport.Unavailable || we.Code == transport.NotLeader
	}
	return false
}
