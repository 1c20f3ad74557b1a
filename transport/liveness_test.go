package transport_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cofferhq/coffer/transport"
)

// tracker is an endpoint's goroutine tracking for transport.Prober.Go.
type tracker struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

var errTrackerClosed = errors.New("test: endpoint closed")

func (tr *tracker) Go(f func()) error {
	if !transport.GoTracked(&tr.mu, &tr.closed, &tr.wg, f) {
		return errTrackerClosed
	}
	return nil
}

func (tr *tracker) close() {
	tr.mu.Lock()
	tr.closed = true
	tr.mu.Unlock()
	tr.wg.Wait()
}

// TestProbeJoinsTheRunningProbe: a call that probes while another probe of the peer
// runs waits for that one instead of sending its own; a probe after it sends anew.
func TestProbeJoinsTheRunningProbe(t *testing.T) {
	tr := &tracker{}
	defer tr.wg.Wait()
	var pings atomic.Int32
	started, release := make(chan struct{}, 2), make(chan struct{})
	pr := transport.Prober{Go: tr.Go, Ping: func() (bool, error) {
		pings.Add(1)
		started <- struct{}{}
		<-release
		return false, nil
	}}
	l := transport.NewLive()
	first := make(chan error, 1)
	go func() { first <- l.Probe(context.Background(), pr) }()
	<-started
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Probe(cancelled, pr); !errors.Is(err, context.Canceled) {
		t.Fatalf("joined probe with an ended context: %v, want context.Canceled", err)
	}
	if n := pings.Load(); n != 1 {
		t.Fatalf("%d pings while one probe ran, want 1 (joined)", n)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatalf("answered probe: %v", err)
	}
	if err := l.Probe(context.Background(), pr); err != nil {
		t.Fatalf("second probe: %v", err)
	}
	if n := pings.Load(); n != 2 {
		t.Fatalf("%d pings after a finished probe and a new one, want 2", n)
	}
}

// TestProbeAsksAStarvedProbeAgain: a probe whose timeout fired late is asked again,
// twice at most; a plain failure is final; a closed endpoint probes nothing.
func TestProbeAsksAStarvedProbeAgain(t *testing.T) {
	tr := &tracker{}
	defer tr.wg.Wait()
	errSilent := errors.New("test: no answer")
	for _, tc := range []struct {
		starved bool
		want    int32
	}{{starved: true, want: 3}, {starved: false, want: 1}} {
		var pings atomic.Int32
		pr := transport.Prober{Go: tr.Go, Ping: func() (bool, error) {
			pings.Add(1)
			return tc.starved, errSilent
		}}
		if err := transport.NewLive().Probe(context.Background(), pr); !errors.Is(err, errSilent) {
			t.Fatalf("starved=%v: probe: %v, want %v", tc.starved, err, errSilent)
		}
		if n := pings.Load(); n != tc.want {
			t.Fatalf("starved=%v: %d pings, want %d", tc.starved, n, tc.want)
		}
	}
	tr.close()
	pr := transport.Prober{Go: tr.Go, Ping: func() (bool, error) {
		t.Error("a closed endpoint pinged")
		return false, nil
	}}
	if err := transport.NewLive().Probe(context.Background(), pr); !errors.Is(err, errTrackerClosed) {
		t.Fatalf("probe on a closed endpoint: %v, want its closed error", err)
	}
}

func TestLivenessDefaults(t *testing.T) {
	l, err := transport.Liveness{}.WithDefaults()
	if err != nil || l.After != transport.DefaultLivenessAfter || l.Timeout != transport.DefaultLivenessTimeout {
		t.Fatalf("zero Liveness with defaults: %+v, %v", l, err)
	}
	if _, err := (transport.Liveness{Timeout: -1}).WithDefaults(); err == nil {
		t.Fatal("negative timeout accepted")
	}
}
