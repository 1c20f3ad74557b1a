package server

import (
	"fmt"
	"strconv"
	"sync/atomic"

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
	gc, err := s.fsm.GCState()
	if err != nil {
		return f, fmt.Errorf("server: figures: %w", err)
	}
	f.GC = gc
	return f, nil
}
