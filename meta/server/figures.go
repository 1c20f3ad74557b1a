package server

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cofferhq/coffer/meta"
)

// Figures is what a meta server reports about itself for metrics and the status page:
// read from this server's Raft and its local FSM, never from the leader, so it answers
// on a follower or a server cut off from the group as well.
type Figures struct {
	// State is the Raft state: "Leader", "Follower", "Candidate" or "Shutdown".
	State        string
	Term         uint64
	CommitIndex  uint64
	AppliedIndex uint64
	LastLogIndex uint64
	// LeaderChanges counts the leaders this server has seen elected (including itself)
	// since it started.
	LeaderChanges uint64
	// EnrollRefused counts enrollment attempts this server refused since it started, by
	// reason: EnrollRefusedLimited, EnrollRefusedToken, EnrollRefusedInvalid.
	EnrollRefused map[string]uint64
	// GC is the collection state in the local FSM (the last collection's report in
	// GC.Last).
	GC meta.GCState
	// Jobs counts the job records the local FSM holds (up to the job retention) by kind
	// and status, every kind and status present. It is recounted at most every
	// jobCountEvery (a scan of every record), so it may be that much behind.
	Jobs map[JobClass]int
	// JobsEnded counts the jobs that ended while this server led (final reports and
	// expiries), by kind and status, since it started; summed over the meta servers it
	// counts every ended job once.
	JobsEnded map[JobClass]uint64
}

// JobClass is a job's kind (meta.JobBackup, meta.JobVerify) and status (meta.JobRunning,
// JobCompleted, JobPartial, JobFailed).
type JobClass struct{ Kind, Status string }

// jobCountEvery bounds how often Figures scans the job records.
const jobCountEvery = 30 * time.Second

// jobClasses are every kind and status of Figures.Jobs.
func jobClasses() []JobClass {
	var out []JobClass
	for _, k := range []string{meta.JobBackup, meta.JobVerify} {
		for _, st := range []string{meta.JobRunning, meta.JobCompleted, meta.JobPartial, meta.JobFailed} {
			out = append(out, JobClass{k, st})
		}
	}
	return out
}

// Reasons of Figures.EnrollRefused.
const (
	// EnrollRefusedLimited: too many failed attempts from the source or in all.
	EnrollRefusedLimited = "rate_limited"
	// EnrollRefusedToken: the token was not live (unknown, used, revoked or expired).
	EnrollRefusedToken = "token"
	// EnrollRefusedInvalid: a malformed request (CSR, agent name).
	EnrollRefusedInvalid = "invalid"
)

// figureCounters are the counters behind Figures that nothing else keeps.
type figureCounters struct {
	leaderChanges atomic.Uint64
	enrollLimited atomic.Uint64
	enrollToken   atomic.Uint64
	enrollInvalid atomic.Uint64

	mu        sync.Mutex
	jobsEnded map[JobClass]uint64 // guarded by mu
	// jobCount caches Figures.Jobs: counted at jobCountAt (monotonic clock); guarded
	// by countMu, which is held during a count (a scan), never together with mu.
	countMu    sync.Mutex
	jobCount   map[JobClass]int
	jobCountAt time.Time
}

// jobEnded counts an ended job (Server.jobEnded).
func (c *figureCounters) jobEnded(j meta.Job) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.jobsEnded == nil {
		c.jobsEnded = map[JobClass]uint64{}
	}
	c.jobsEnded[JobClass{j.Kind, j.Status}]++
}

// jobCounts returns the job records by class, counted again when the cached count is
// older than jobCountEvery.
func (s *Server) jobCounts() (map[JobClass]int, error) {
	c := &s.figs
	c.countMu.Lock()
	defer c.countMu.Unlock()
	if c.jobCount == nil || time.Since(c.jobCountAt) >= jobCountEvery {
		jobs, err := s.fsm.Jobs()
		if err != nil {
			return nil, err
		}
		count := map[JobClass]int{}
		for _, j := range jobs {
			count[JobClass{j.Kind, j.Status}]++
		}
		c.jobCount, c.jobCountAt = count, time.Now()
	}
	out := map[JobClass]int{}
	for _, jc := range jobClasses() {
		out[jc] = 0
	}
	for jc, n := range c.jobCount {
		out[jc] = n
	}
	return out, nil
}

// countLeaders registers a Raft observer that counts leader elections. NB: the count is
// taken in the observer's filter, which Raft calls synchronously for every observation,
// and the filter lets nothing through, so no channel or goroutine is needed.
func (s *Server) countLeaders() {
	s.raft.RegisterObserver(raft.NewObserver(nil, false, func(o *raft.Observation) bool {
		if lo, ok := o.Data.(raft.LeaderObservation); ok && lo.LeaderID != "" {
			s.figs.leaderChanges.Add(1)
		}
		return false
	}))
}

// Figures returns the server's figures now. It fails only when the local FSM cannot be
// read (the server is closed).
func (s *Server) Figures() (Figures, error) {
	st := s.raft.Stats()
	num := func(k string) uint64 { n, _ := strconv.ParseUint(st[k], 10, 64); return n }
	f := Figures{
		State: s.raft.State().String(), Term: num("term"), CommitIndex: num("commit_index"),
		AppliedIndex: num("applied_index"), LastLogIndex: num("last_log_index"),
		LeaderChanges: s.figs.leaderChanges.Load(),
		EnrollRefused: map[string]uint64{
			EnrollRefusedLimited: s.figs.enrollLimited.Load(),
			EnrollRefusedToken:   s.figs.enrollToken.Load(),
			EnrollRefusedInvalid: s.figs.enrollInvalid.Load(),
		},
	}
	s.figs.mu.Lock()
	f.JobsEnded = map[JobClass]uint64{}
	for _, jc := range jobClasses() {
		if jc.Status != meta.JobRunning {
			f.JobsEnded[jc] = s.figs.jobsEnded[jc]
		}
	}
	for jc, n := range s.figs.jobsEnded {
		f.JobsEnded[jc] = n
	}
	s.figs.mu.Unlock()
	gc, err := s.fsm.GCState()
	if err != nil {
		return f, fmt.Errorf("server: figures: %w", err)
	}
	f.GC = gc
	if f.Jobs, err = s.jobCounts(); err != nil {
		return f, fmt.Errorf("server: figures: %w", err)
	}
	return f, nil
}
