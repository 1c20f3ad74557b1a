package server

import (
	"context"
	"errors"
	"math/bits"
	"slices"
	"sync"
	"testing"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/memstore"
	"github.com/cofferhq/coffer/chunkstore/reflist"
	"github.com/cofferhq/coffer/meta"
)

// askingStore counts the IDs Has is asked about and can hide chunks (as if swept).
type askingStore struct {
	chunkstore.Store
	mu     sync.Mutex
	asked  int
	gets   int
	hidden map[chunk.ID]bool
}

func (s *askingStore) Get(ctx context.Context, id chunk.ID) ([]byte, error) {
	s.mu.Lock()
	s.gets++
	s.mu.Unlock()
	return s.Store.Get(ctx, id)
}

// reads returns and resets the number of Gets.
func (s *askingStore) reads() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.gets
	s.gets = 0
	return n
}

func (s *askingStore) Has(ctx context.Context, ids []chunk.ID) ([]bool, error) {
	has, err := s.Store.Has(ctx, ids)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asked += len(ids)
	for i, id := range ids {
		if s.hidden[id] {
			has[i] = false
		}
	}
	return has, err
}

func (s *askingStore) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.asked
	s.asked = 0
	return n
}

// askingLeader returns the leader of a one-server cluster with vault "v" whose chunk
// store is an askingStore.
func askingLeader(t *testing.T) (*askingStore, *Server, context.Context) {
	t.Helper()
	st := &askingStore{Store: memstore.NewChunks(), hidden: map[chunk.ID]bool{}}
	c := newCluster(t, 1, func(cfg *Config) { cfg.Chunks = st })
	ctx := ctxT(t)
	l := c.srv[c.leader()]
	if _, err := l.CreateVault(ctx, newVault("v")); err != nil {
		t.Fatal(err)
	}
	return st, l, ctx
}

// TestCommitTrustsCommittedParent: a snapshot whose parent is committed is checked only
// for the chunks the parent does not reference; once the parent is forgotten, every chunk
// is checked again and a missing one refuses the commit.
func TestCommitTrustsCommittedParent(t *testing.T) {
	st, l, ctx := askingLeader(t)
	parent := storedSnapshot(t, st, "v", 200, 0)
	if _, err := l.CommitSnapshot(ctx, parent); err != nil {
		t.Fatal(err)
	}
	if n := st.count(); n < 201 {
		t.Fatalf("first commit asked about %d chunks, want all 201 and its reference list", n)
	}
	// The child references the parent's chunks plus 10 new ones (and its own tree).
	ids := listIDs(t, st, parent.Refs)
	extra := storedSnapshot(t, st, "v", 10, 0)
	extraIDs := listIDs(t, st, extra.Refs)
	var childRefs []chunkstore.Chunk
	for _, c := range reflist.Encode(append(append([]chunk.ID{}, ids...), extraIDs...)) {
		childRefs = append(childRefs, chunkstore.Chunk(c))
	}
	if err := st.Put(ctx, childRefs); err != nil {
		t.Fatal(err)
	}
	child := meta.Snapshot{ID: randID(t), Vault: "v", Host: "h", Paths: []string{"/"}, Tree: extra.Tree, Parent: &parent.ID}
	for _, r := range childRefs {
		child.Refs = append(child.Refs, r.ID)
	}
	if _, err := l.CommitSnapshot(ctx, child); err != nil {
		t.Fatal(err)
	}
	if n := st.count(); n > len(extraIDs)+len(childRefs) {
		t.Fatalf("child commit asked about %d chunks; its parent covers all but %d", n, len(extraIDs))
	}

	// Forget the parent and lose one of its chunks: a new child of it is checked in full.
	if _, err := l.DeleteSnapshots(ctx, "v", []meta.SnapshotID{parent.ID}, meta.Bypass{}); err != nil {
		t.Fatal(err)
	}
	st.mu.Lock()
	st.hidden[ids[0]] = true
	st.mu.Unlock()
	orphan := child
	orphan.ID = randID(t)
	if _, err := l.CommitSnapshot(ctx, orphan); !errors.Is(err, meta.ErrMissingChunks) {
		t.Fatalf("commit naming a forgotten parent with a chunk gone: %v, want ErrMissingChunks", err)
	}
	if n := st.count(); n < len(ids) {
		t.Fatalf("orphan commit asked about %d chunks, want every one (%d+)", n, len(ids))
	}
}

// listIDs reads and opens every chunk of a reference list and returns their IDs.
func listIDs(t *testing.T, st chunkstore.Store, refs []chunk.ID) []chunk.ID {
	t.Helper()
	var ids []chunk.ID
	for _, r := range refs {
		data, err := st.Get(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		more, err := reflist.Open(r, data)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, more...)
	}
	return ids
}

// bigSnapshot stores n fresh data chunks beside base's IDs and the reference list of all
// of them, and returns a snapshot whose tree is the last new chunk, with the list's IDs.
func bigSnapshot(t *testing.T, st chunkstore.Store, base []chunk.ID, n int) (meta.Snapshot, []chunk.ID) {
	t.Helper()
	ctx := context.Background()
	fresh := storedSnapshot(t, st, "v", n-1, 0)
	all := append(slices.Clone(base), listIDs(t, st, fresh.Refs)...)
	refs := reflist.Encode(all)
	var put []chunkstore.Chunk
	snap := meta.Snapshot{ID: randID(t), Vault: "v", Host: "h", Paths: []string{"/"}, Tree: fresh.Tree}
	for _, r := range refs {
		put = append(put, chunkstore.Chunk(r))
		snap.Refs = append(snap.Refs, r.ID)
	}
	if err := st.Put(ctx, put); err != nil {
		t.Fatal(err)
	}
	return snap, all
}

// TestCommitCostFollowsTheChange: reference lists split by content let the commit check
// of a child skip the list chunks it shares with its committed parent. A parent of 20,000
// chunks; a child adding 10 reads a handful of list chunks and asks about a few thousand
// IDs at most, not 20,000; an unchanged child (the same list, the same tree) reads
// O(log n) chunks to find its tree and asks about no data chunk. A child sharing every
// chunk whose tree is not listed is refused, and so is one whose new chunk is missing.
func TestCommitCostFollowsTheChange(t *testing.T) {
	st, l, ctx := askingLeader(t)
	parent, ids := bigSnapshot(t, st, nil, 20_000)
	st.count()
	st.reads()
	if _, err := l.CommitSnapshot(ctx, parent); err != nil {
		t.Fatal(err)
	}
	if asked := st.count(); asked < len(ids) {
		t.Fatalf("parent commit asked about %d chunks, want all %d", asked, len(ids))
	}
	st.reads()

	child, childIDs := bigSnapshot(t, st, ids, 10)
	child.Parent = &parent.ID
	st.count()
	st.reads()
	if _, err := l.CommitSnapshot(ctx, child); err != nil {
		t.Fatal(err)
	}
	asked, reads := st.count(), st.reads()
	t.Logf("child of %d list chunks (%d IDs, 11 new): %d list chunks read, %d IDs asked about", len(child.Refs), len(childIDs), reads, asked)
	if reads > 40 || asked > len(child.Refs)+8*reflist.AvgIDs {
		t.Fatalf("child commit read %d list chunks and asked about %d IDs; the parent's %d chunks cover all but 11 IDs", reads, asked, len(parent.Refs))
	}

	same := child
	same.ID, same.Parent = randID(t), &child.ID
	if _, err := l.CommitSnapshot(ctx, same); err != nil {
		t.Fatal(err)
	}
	asked, reads = st.count(), st.reads()
	t.Logf("unchanged child: %d list chunks read, %d IDs asked about", reads, asked)
	if asked != len(same.Refs) || reads > 2*bits.Len(uint(len(same.Refs)))+2 {
		t.Fatalf("unchanged child read %d list chunks and asked about %d IDs, want O(log %d) reads and only its list", reads, asked, len(same.Refs))
	}

	unlisted := same
	unlisted.ID, unlisted.Tree = randID(t), randID(t)
	if _, err := l.CommitSnapshot(ctx, unlisted); !errors.Is(err, meta.ErrInvalid) {
		t.Fatalf("a child sharing its whole list with an unlisted tree: %v, want ErrInvalid", err)
	}

	gone, _ := bigSnapshot(t, st, ids, 10)
	gone.Parent = &parent.ID
	st.mu.Lock()
	st.hidden[gone.Tree] = true
	st.mu.Unlock()
	if _, err := l.CommitSnapshot(ctx, gone); !errors.Is(err, meta.ErrMissingChunks) {
		t.Fatalf("a child whose new tree is not stored: %v, want ErrMissingChunks", err)
	}
}
