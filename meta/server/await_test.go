package server

import (
	"errors"
	"testing"

	"github.com/hashicorp/raft"
)

// stuckFuture is a raft future that is never answered, as one queued by VerifyLeader
// just before raft shut down.
type stuckFuture struct{ never chan struct{} }

func (f stuckFuture) Error() error { <-f.never; return nil }

type doneFuture struct{ err error }

func (f doneFuture) Error() error { return f.err }

// TestAwaitEndsAtClose: an answered future gives its answer; a request waiting on a
// future raft never answers is released with ErrRaftShutdown once the server closes.
func TestAwaitEndsAtClose(t *testing.T) {
	s := &Server{stop: make(chan struct{})}
	answered := errors.New("applied")
	if err := s.await(doneFuture{answered}); !errors.Is(err, answered) {
		t.Fatalf("answered future: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.await(stuckFuture{make(chan struct{})}) }()
	close(s.stop)
	if err := <-done; !errors.Is(err, raft.ErrRaftShutdown) {
		t.Fatalf("unanswered future at close: %v, want ErrRaftShutdown", err)
	}
}
