package server

import (
	"context"
	"errors"
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
	hidden map[chunk.ID]bool
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

// TestCommitTrustsCommittedParent: a snapshot whose parent is committed is checked only
// for the chunks the parent does not reference; once the parent is forgotten, every chunk
// is checked again and a missing one refuses the commit.
func TestCommitTrustsCommittedParent(t *testing.T) {
	st := &askingStore{Store: memstore.NewChunks(), hidden: map[chunk.ID]bool{}}
	c := newCluster(t, 1, func(cfg *Config) { cfg.Chunks = st })
	ctx := ctxT(t)
	l := c.srv[c.leader()]
	if _, err := l.CreateVault(ctx, newVault("v")); err != nil {
		t.Fatal(err)
	}
	parent := storedSnapshot(t, st, "v", 200, 0)
	if _, err := l.CommitSnapshot(ctx, parent); err != nil {
		t.Fatal(err)
	}
	if n := st.count(); n < 201 {
		t.Fatalf("first commit asked about %d chunks, want all 201 and its reference list", n)
	}
	// The child references the parent's chunks plus 10 new ones (and its own tree).
	refData, err := st.Get(ctx, parent.Refs[0])
	if err != nil {
		t.Fatal(err)
	}
	ids, err := reflist.Decode(refData)
	if err != nil {
		t.Fatal(err)
	}
	extra := storedSnapshot(t, st, "v", 10, 0)
	extraData, _ := st.Get(ctx, extra.Refs[0])
	extraIDs, _ := reflist.Decode(extraData)
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
