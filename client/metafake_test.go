package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/placement"
)

// fakeMeta is a map-backed meta.Service for tests. CommitSnapshot checks, like the real
// leader, that the tree and every chunk of the decoded reference lists are stored.
type fakeMeta struct {
	chunks chunkstore.Store
	mu     sync.Mutex
	clock  time.Time
	vaults map[meta.VaultID]meta.Vault
	snaps  map[meta.VaultID][]meta.Snapshot
	writes int
	// beforeCommit, when set, runs once at the start of the next CommitSnapshot.
	beforeCommit func()
	refused      int // commits refused for missing chunks
}

// refusedCommits is how many commits were refused for missing chunks.
func (m *fakeMeta) refusedCommits() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.refused
}

var _ meta.Service = (*fakeMeta)(nil)

func newFakeMeta(chunks chunkstore.Store) *fakeMeta {
	return &fakeMeta{
		chunks: chunks,
		clock:  time.Unix(1_700_000_000, 0).UTC(),
		vaults: make(map[meta.VaultID]meta.Vault),
		snaps:  make(map[meta.VaultID][]meta.Snapshot),
	}
}

func (m *fakeMeta) tick() time.Time {
	m.clock = m.clock.Add(time.Second)
	return m.clock
}

func (m *fakeMeta) CreateVault(ctx context.Context, v meta.Vault) (meta.Vault, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.vaults[v.ID]; ok {
		return meta.Vault{}, fmt.Errorf("fake: vault %s: %w", v.ID, meta.ErrExists)
	}
	v.Created = m.tick()
	m.vaults[v.ID] = v
	m.writes++
	return v, nil
}

func (m *fakeMeta) GetVault(ctx context.Context, id meta.VaultID) (meta.Vault, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.vaults[id]
	if !ok {
		return meta.Vault{}, fmt.Errorf("fake: vault %s: %w", id, meta.ErrNotFound)
	}
	return v, nil
}

func (m *fakeMeta) ListVaults(ctx context.Context) ([]meta.Vault, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []meta.Vault
	for _, v := range m.vaults {
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b meta.Vault) int { return cmpStr(string(a.ID), string(b.ID)) })
	return out, nil
}

func cmpStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (m *fakeMeta) CommitSnapshot(ctx context.Context, s meta.Snapshot) (meta.Snapshot, error) {
	m.mu.Lock()
	hook := m.beforeCommit
	m.beforeCommit = nil
	m.mu.Unlock()
	if hook != nil {
		hook()
	}
	snap, err := m.commit(ctx, s)
	if errors.Is(err, meta.ErrMissingChunks) {
		m.mu.Lock()
		m.refused++
		m.mu.Unlock()
	}
	return snap, err
}

func (m *fakeMeta) commit(ctx context.Context, s meta.Snapshot) (meta.Snapshot, error) {
	ids := append(slices.Clone(s.Refs), s.Tree)
	for _, r := range s.Refs {
		data, err := m.chunks.Get(ctx, r)
		if err != nil {
			return meta.Snapshot{}, fmt.Errorf("fake: ref list %s: %w", r.Str(), meta.ErrMissingChunks)
		}
		list, err := meta.DecodeRefList(data)
		if err != nil {
			return meta.Snapshot{}, err
		}
		ids = append(ids, list...)
	}
	have, err := m.chunks.Has(ctx, ids)
	if err != nil {
		return meta.Snapshot{}, err
	}
	for i, ok := range have {
		if !ok {
			return meta.Snapshot{}, fmt.Errorf("fake: chunk %s: %w", ids[i].Str(), meta.ErrMissingChunks)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.vaults[s.Vault]; !ok {
		return meta.Snapshot{}, fmt.Errorf("fake: vault %s: %w", s.Vault, meta.ErrNotFound)
	}
	for _, o := range m.snaps[s.Vault] {
		if o.ID == s.ID {
			return meta.Snapshot{}, fmt.Errorf("fake: snapshot %s: %w", s.ID.Str(), meta.ErrExists)
		}
	}
	s.Time = m.tick()
	m.snaps[s.Vault] = append(m.snaps[s.Vault], s)
	m.writes++
	return s, nil
}

func (m *fakeMeta) ListSnapshots(ctx context.Context, vault meta.VaultID) ([]meta.Snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.snaps[vault]), nil
}

func (m *fakeMeta) GetSnapshot(ctx context.Context, vault meta.VaultID, id meta.SnapshotID) (meta.Snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.snaps[vault] {
		if s.ID == id {
			return s, nil
		}
	}
	return meta.Snapshot{}, fmt.Errorf("fake: snapshot %s: %w", id.Str(), meta.ErrNotFound)
}

func (m *fakeMeta) ClusterMap(ctx context.Context) (placement.Map, error) {
	return placement.Map{Epoch: 1, PGCount: 1, Profile: placement.DefaultProfile}, nil
}

func (m *fakeMeta) SetClusterMap(ctx context.Context, pm placement.Map) error {
	return fmt.Errorf("fake: %w", meta.ErrDenied)
}

func (m *fakeMeta) RaftStatus(ctx context.Context) (meta.RaftStatus, error) {
	return meta.RaftStatus{Leader: "fake"}, nil
}
