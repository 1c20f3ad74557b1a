package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/transport"
)

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// twin is an in-memory meta.JobService for the daemon's tests.
type twin struct {
	mu       sync.Mutex
	version  uint64
	policies []meta.BackupPolicy
	jobs     []meta.Job
	beats    int
	polls    int
}

func (s *twin) PutPolicy(context.Context, meta.BackupPolicy, bool) (meta.BackupPolicy, error) {
	return meta.BackupPolicy{}, errors.New("twin: not used")
}
func (s *twin) DeletePolicy(context.Context, string) error { return errors.New("twin: not used") }
func (s *twin) ListPolicies(context.Context) ([]meta.BackupPolicy, error) {
	return nil, errors.New("twin: not used")
}
func (s *twin) HostPolicies(_ context.Context, _ string, known uint64) (meta.HostPolicies, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.polls++
	if known == s.version {
		return meta.HostPolicies{Version: s.version, Unchanged: true}, nil
	}
	return meta.HostPolicies{Version: s.version, Policies: append([]meta.BackupPolicy(nil), s.policies...)}, nil
}
func (s *twin) StartJob(_ context.Context, st meta.JobStart) (meta.Job, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	kind := st.Kind
	if kind == "" {
		kind = meta.JobBackup
	}
	j := meta.Job{ID: meta.JobID(uint64(len(s.jobs) + 1)), Policy: st.Policy, Kind: kind, Trigger: st.Trigger, Status: meta.JobRunning}
	s.jobs = append(s.jobs, j)
	return j, nil
}
func (s *twin) ReportJob(_ context.Context, r meta.JobReport) (meta.Job, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.jobs {
		if s.jobs[i].ID == r.ID {
			s.jobs[i].Status, s.jobs[i].Error, s.jobs[i].Attempts = r.Status, r.Error, r.Attempts
			if r.Final && r.Report != nil && s.jobs[i].Kind == meta.JobVerify {
				s.jobs[i].Report = r.Report
			}
			return s.jobs[i], nil
		}
	}
	return meta.Job{}, meta.ErrNotFound
}
func (s *twin) Heartbeat(context.Context, meta.Heartbeat) error {
	s.mu.Lock()
	s.beats++
	s.mu.Unlock()
	return nil
}
func (s *twin) ListJobs(context.Context, meta.JobFilter) ([]meta.Job, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]meta.Job(nil), s.jobs...), nil
}
func (s *twin) ListAgents(context.Context) ([]meta.Agent, error) { return nil, nil }

func (s *twin) set(version uint64, ps ...meta.BackupPolicy) {
	s.mu.Lock()
	s.version, s.policies = version, ps
	s.mu.Unlock()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestNoOverlapAndReschedule: a policy due every second whose run takes long never runs
// twice at once (the fires in between are skipped); a changed policy version replaces
// the schedule and a removed policy stops.
func TestNoOverlapAndReschedule(t *testing.T) {
	js := &twin{}
	js.set(1, meta.BackupPolicy{Name: "slow", Schedule: "* * * * * *", Version: 1})
	var running, maxRunning, runs atomic.Int32
	release := make(chan struct{})
	run := func(ctx context.Context, p meta.BackupPolicy) (Outcome, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			m := maxRunning.Load()
			if n <= m || maxRunning.CompareAndSwap(m, n) {
				break
			}
		}
		runs.Add(1)
		if p.Name == "slow" {
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return Outcome{Status: meta.JobCompleted}, nil
	}
	a, err := New(Config{Jobs: js, Run: run, Poll: 50 * time.Millisecond, Heartbeat: 50 * time.Millisecond, MaxJitter: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	waitFor(t, "the first run", func() bool { return runs.Load() == 1 })
	time.Sleep(2500 * time.Millisecond) // two or three fires come due while it runs
	if runs.Load() != 1 || maxRunning.Load() != 1 {
		t.Fatalf("%d runs, at most %d at once, while the first still ran", runs.Load(), maxRunning.Load())
	}
	close(release)
	waitFor(t, "a second run after the first ended", func() bool { return runs.Load() >= 2 })

	js.set(2, meta.BackupPolicy{Name: "fast", Schedule: "* * * * * *", Version: 2})
	waitFor(t, "the new policy's run", func() bool {
		jobs, _ := js.ListJobs(ctx, meta.JobFilter{})
		for _, j := range jobs {
			if j.Policy == "fast" && j.Status == meta.JobCompleted {
				return true
			}
		}
		return false
	})
	if nr := a.NextRuns(); len(nr) != 1 || nr[0].Policy != "fast" {
		t.Fatalf("next runs after the change: %+v", nr)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if maxRunning.Load() != 1 {
		t.Fatalf("%d runs at once", maxRunning.Load())
	}
	js.mu.Lock()
	defer js.mu.Unlock()
	if js.beats < 2 || js.polls < 2 {
		t.Fatalf("%d heartbeats, %d polls", js.beats, js.polls)
	}
}

// TestExecuteRetries: transient failures are retried with backoff up to the limit; a
// permanent one is not.
func TestExecuteRetries(t *testing.T) {
	p := meta.BackupPolicy{Name: "p"}
	calls := 0
	flaky := func(context.Context, meta.BackupPolicy) (Outcome, error) {
		calls++
		if calls < 3 {
			return Outcome{}, &transport.Error{Code: transport.Unavailable, Msg: "node down"}
		}
		return Outcome{Status: meta.JobCompleted, Snapshot: "ab"}, nil
	}
	r := Execute(context.Background(), flaky, p, 3, time.Millisecond, discard())
	if r.Status != meta.JobCompleted || r.Attempts != 3 || r.Snapshot != "ab" {
		t.Fatalf("flaky run: %+v", r)
	}
	calls = 0
	always := func(context.Context, meta.BackupPolicy) (Outcome, error) {
		calls++
		return Outcome{}, fmt.Errorf("backup: %w", meta.ErrUnavailable)
	}
	if r := Execute(context.Background(), always, p, 2, time.Millisecond, discard()); r.Status != meta.JobFailed || r.Attempts != 3 || calls != 3 {
		t.Fatalf("always unavailable: %+v after %d calls", r, calls)
	}
	calls = 0
	perm := func(context.Context, meta.BackupPolicy) (Outcome, error) {
		calls++
		return Outcome{}, errors.New("hooks: pre-hook failed: exit status 3")
	}
	if r := Execute(context.Background(), perm, p, 5, time.Millisecond, discard()); r.Status != meta.JobFailed || calls != 1 || r.Error == "" {
		t.Fatalf("permanent failure retried: %+v after %d calls", r, calls)
	}
}

// TestJitterBounds: the random delay stays within MaxJitter and a tenth of the period.
func TestJitterBounds(t *testing.T) {
	a, err := New(Config{Jobs: &twin{}, Run: func(context.Context, meta.BackupPolicy) (Outcome, error) { return Outcome{}, nil },
		MaxJitter: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	sched, err := meta.ParseSchedule("*/10 * * * *") // every 10 min: jitter < 1 min
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 6, 5, 0, 30, 0, time.UTC)
	sawDelay := false
	for range 200 {
		e := &entry{sched: sched}
		a.plan(e, now)
		if !e.want.Equal(time.Date(2026, 12, 6, 5, 10, 0, 0, time.UTC)) {
			t.Fatalf("scheduled %v", e.want)
		}
		d := e.next.Sub(e.want)
		if d < 0 || d >= time.Minute {
			t.Fatalf("jitter %v outside [0, 1m)", d)
		}
		sawDelay = sawDelay || d > 0
	}
	if !sawDelay {
		t.Fatal("no jitter at all")
	}
}

// TestVerifySchedules: a policy's sampled and full verify schedules run as verify jobs
// beside its backup schedule, each with its report on its record; a run that finds bad
// chunks is a failed job that keeps its report and is not retried; the next runs list
// each schedule; a policy without verify schedules, or an agent without a Verifier,
// schedules its backup only.
func TestVerifySchedules(t *testing.T) {
	js := &twin{}
	js.set(1, meta.BackupPolicy{Name: "nightly", Schedule: "@daily", Version: 1,
		Verify: &meta.VerifySchedule{Schedule: "* * * * * *", Sample: 4, Full: "*/2 * * * * *"}})
	var mu sync.Mutex
	calls := map[bool]int{}
	samples := map[int]bool{}
	verify := func(_ context.Context, p meta.BackupPolicy, full bool) (Outcome, error) {
		mu.Lock()
		defer mu.Unlock()
		calls[full]++
		samples[p.Verify.Sample] = true
		if full {
			rep := meta.VerifyReport{Full: true, Snapshots: 3, Chunks: 40, Bad: 1,
				Findings: []meta.VerifyFinding{{Snapshot: "aa", Chunk: "bb", Error: "chunk bb: unreadable"}}}
			return Outcome{Status: meta.JobFailed, Report: &rep}, errors.New("1 of 40 chunks bad (first: chunk bb: unreadable)")
		}
		return Outcome{Status: meta.JobCompleted, Report: &meta.VerifyReport{Snapshots: 1, Chunks: 5}}, nil
	}
	backups := atomic.Int32{}
	run := func(context.Context, meta.BackupPolicy) (Outcome, error) {
		backups.Add(1)
		return Outcome{Status: meta.JobCompleted}, nil
	}
	a, err := New(Config{Jobs: js, Run: run, Verify: verify, Poll: 50 * time.Millisecond, Heartbeat: 50 * time.Millisecond, MaxJitter: -1})
	if err != nil {
		t.Fatal(err)
	}
	if nr := func() []meta.NextRun { _ = a.refresh(context.Background()); return a.NextRuns() }(); len(nr) != 3 ||
		nr[0].Kind != "" || nr[1].Kind != RunVerify || nr[2].Kind != RunVerifyFull {
		t.Fatalf("next runs %+v, want the backup, the sampled and the full verify", nr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var jobs []meta.Job
	waitFor(t, "a completed sampled verify and a failed full verify", func() bool {
		jobs, _ = js.ListJobs(ctx, meta.JobFilter{})
		ok, bad := false, false
		for _, j := range jobs {
			ok = ok || j.Kind == meta.JobVerify && j.Status == meta.JobCompleted && j.Report != nil && !j.Report.Full
			bad = bad || j.Kind == meta.JobVerify && j.Status == meta.JobFailed && j.Report != nil && j.Report.Bad == 1
		}
		return ok && bad
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		if j.Policy != "nightly" || j.Kind != meta.JobVerify || j.Trigger != meta.TriggerSchedule {
			t.Errorf("job %+v: want verify jobs of nightly by the schedule only", j)
		}
		if j.Status == meta.JobFailed && (j.Attempts != 1 || !strings.Contains(j.Error, "chunks bad")) {
			t.Errorf("failed verify job %+v: want one attempt and the bad chunks as its error", j)
		}
	}
	mu.Lock()
	if !samples[4] || len(samples) != 1 {
		t.Errorf("verifier saw samples %v, want the policy's 4", samples)
	}
	mu.Unlock()
	if backups.Load() != 0 {
		t.Errorf("the daily backup ran %d times", backups.Load())
	}

	// Without a Verifier only the backup is scheduled.
	plain, err := New(Config{Jobs: js, Run: run, MaxJitter: -1})
	if err != nil {
		t.Fatal(err)
	}
	js.set(2, meta.BackupPolicy{Name: "nightly", Schedule: "@daily", Version: 2, Verify: &meta.VerifySchedule{Schedule: "@hourly"}})
	if err := plain.refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if nr := plain.NextRuns(); len(nr) != 1 || nr[0].Kind != "" {
		t.Fatalf("next runs without a verifier: %+v", nr)
	}
}
