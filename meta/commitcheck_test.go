package meta

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/reflist"
)

// gatedChunks is a CommitChunks over a map whose Get calls wait until `want` of them are
// in flight together (or until the context ends): a check that reads reference lists
// one after another never gets past its first read.
type gatedChunks struct {
	lists map[chunk.ID][]byte
	want  int

	mu      sync.Mutex
	waiting int
	open    chan struct{}
	missing map[chunk.ID]bool // data IDs Has answers false for
	asked   int
}

func (s *gatedChunks) Get(ctx context.Context, id chunk.ID) ([]byte, error) {
	s.mu.Lock()
	s.waiting++
	if s.waiting == s.want {
		close(s.open)
	}
	s.mu.Unlock()
	select {
	case <-s.open:
	case <-ctx.Done():
		return nil, fmt.Errorf("gated get %s: %w", id.Str(), ctx.Err())
	}
	d, ok := s.lists[id]
	if !ok {
		return nil, errors.New("not stored")
	}
	return d, nil
}

func (s *gatedChunks) Has(ctx context.Context, ids []chunk.ID) ([]bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asked += len(ids)
	out := make([]bool, len(ids))
	for i, id := range ids {
		_, isList := s.lists[id]
		out[i] = isList || !s.missing[id]
	}
	return out, nil
}

// gatedSnapshot returns a snapshot of n random data IDs (its tree the first) whose
// reference lists are in a gatedChunks that opens once `want` reads are in flight.
func gatedSnapshot(t testing.TB, n, want int) (Snapshot, *gatedChunks, []chunk.ID) {
	t.Helper()
	ids := make([]chunk.ID, n)
	for i := range ids {
		if _, err := rand.Read(ids[i][:]); err != nil {
			t.Fatal(err)
		}
	}
	st := &gatedChunks{lists: map[chunk.ID][]byte{}, want: want, open: make(chan struct{}), missing: map[chunk.ID]bool{}}
	snap := Snapshot{Tree: ids[0]}
	for _, c := range reflist.Encode(ids) {
		st.lists[c.ID] = c.Data
		snap.Refs = append(snap.Refs, c.ID)
	}
	if len(snap.Refs) < want {
		t.Fatalf("%d IDs made %d reference-list chunks, fewer than the %d reads the gate waits for", n, len(snap.Refs), want)
	}
	return snap, st, ids
}

// TestCommitCheckReadsListsTogether: the check reads a snapshot's reference lists
// several at a time (each read and Has is a round trip to the chunk nodes; one after
// another they were most of an initial backup's commit). The store lets no read finish
// until four are in flight, so the sequential check fails with ErrUnavailable; the
// concurrent one passes, asks about every ID, and still names what is missing.
func TestCommitCheckReadsListsTogether(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	snap, st, ids := gatedSnapshot(t, 20*reflist.AvgIDs, 4)
	if err := (CommitCheck{Chunks: st}).Run(ctx, snap, nil); err != nil {
		t.Fatalf("check of %d lists: %v", len(snap.Refs), err)
	}
	if st.asked < len(ids)+len(snap.Refs) {
		t.Fatalf("asked about %d IDs, want every one of %d and the %d lists", st.asked, len(ids), len(snap.Refs))
	}

	snap, st, ids = gatedSnapshot(t, 20*reflist.AvgIDs, 4)
	st.missing[ids[len(ids)-1]] = true
	st.missing[ids[1]] = true
	err := (CommitCheck{Chunks: st}).Run(ctx, snap, nil)
	if !errors.Is(err, ErrMissingChunks) {
		t.Fatalf("two chunks missing: %v, want ErrMissingChunks", err)
	}
	if want := "2 chunks missing"; !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not say %q", err, want)
	}
}

// remoteChunks answers like gatedChunks without a gate, after rtt per call: the round
// trip to the chunk nodes a leader pays on a cluster of separate machines.
type remoteChunks struct {
	*gatedChunks
	rtt time.Duration
}

func (s remoteChunks) Get(ctx context.Context, id chunk.ID) ([]byte, error) {
	time.Sleep(s.rtt)
	d, ok := s.lists[id]
	if !ok {
		return nil, errors.New("not stored")
	}
	return d, nil
}

func (s remoteChunks) Has(ctx context.Context, ids []chunk.ID) ([]bool, error) {
	time.Sleep(s.rtt)
	return s.gatedChunks.Has(ctx, ids)
}

// BenchmarkCommitCheck: the check of a snapshot of 20,480 chunks (about 20 reference-list
// chunks) against a store that takes 1 ms per call, as chunk nodes across a network do.
func BenchmarkCommitCheck(b *testing.B) {
	snap, st, _ := gatedSnapshot(b, 20*reflist.AvgIDs, 1)
	rc := remoteChunks{gatedChunks: st, rtt: time.Millisecond}
	for b.Loop() {
		if err := (CommitCheck{Chunks: rc}).Run(context.Background(), snap, nil); err != nil {
			b.Fatal(err)
		}
	}
}
