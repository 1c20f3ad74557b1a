package bench

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/placement"
)

// memMeta is an in-process meta.Service for the client pipeline scenario: one vault
// table and one snapshot list in memory, no Raft, no network. (meta/server links Raft
// and Pebble, which the coffer binary must not.) CommitSnapshot makes the leader's
// check: the snapshot validates, every reference list is stored and hashes to its ID,
// the tree is listed, and every listed chunk is stored; ErrMissingChunks otherwise.
// It is safe for concurrent use.
type memMeta struct {
	chunks chunkstore.Store
	now    func() time.Time
	mu     struct {
		sync.Mutex
		vaults map[meta.VaultID]meta.Vault
		snaps  map[meta.VaultID][]meta.Snapshot
	}
}

var _ meta.Service = (*memMeta)(nil)

// newMemMeta returns an empty service whose commit check reads chunks and whose
// timestamps come from now.
func newMemMeta(chunks chunkstore.Store, now func() time.Time) *memMeta {
	m := &memMeta{chunks: chunks, now: now}
	m.mu.vaults = make(map[meta.VaultID]meta.Vault)
	m.mu.snaps = make(map[meta.VaultID][]meta.Snapshot)
	return m
}

// CreateVault records v; meta.ErrExists if its ID is taken.
func (m *memMeta) CreateVault(_ context.Context, v meta.Vault) (meta.Vault, error) {
	if err := meta.ValidateVault(v); err != nil {
		return meta.Vault{}, fmt.Errorf("bench: meta: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.mu.vaults[v.ID]; ok {
		return meta.Vault{}, fmt.Errorf("bench: meta: vault %s: %w", v.ID, meta.ErrExists)
	}
	v.Created = m.now()
	m.mu.vaults[v.ID] = v
	return v, nil
}

// GetVault returns a vault or meta.ErrNotFound.
func (m *memMeta) GetVault(_ context.Context, id meta.VaultID) (meta.Vault, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.mu.vaults[id]
	if !ok {
		return meta.Vault{}, fmt.Errorf("bench: meta: vault %s: %w", id, meta.ErrNotFound)
	}
	return v, nil
}

// ListVaults returns the vaults sorted by ID.
func (m *memMeta) ListVaults(context.Context) ([]meta.Vault, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]meta.Vault, 0, len(m.mu.vaults))
	for _, v := range m.mu.vaults {
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b meta.Vault) int { return strings.Compare(string(a.ID), string(b.ID)) })
	return out, nil
}

// CommitSnapshot checks s against the chunk store (see memMeta) and records it.
func (m *memMeta) CommitSnapshot(ctx context.Context, s meta.Snapshot) (meta.Snapshot, error) {
	if err := meta.ValidateSnapshot(s); err != nil {
		return meta.Snapshot{}, fmt.Errorf("bench: meta: commit: %w", err)
	}
	if err := m.check(ctx, s); err != nil {
		return meta.Snapshot{}, fmt.Errorf("bench: meta: commit %s: %w", s.ID.Str(), err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.mu.vaults[s.Vault]; !ok {
		return meta.Snapshot{}, fmt.Errorf("bench: meta: vault %s: %w", s.Vault, meta.ErrNotFound)
	}
	for _, o := range m.mu.snaps[s.Vault] {
		if o.ID == s.ID {
			return meta.Snapshot{}, fmt.Errorf("bench: meta: snapshot %s: %w", s.ID.Str(), meta.ErrExists)
		}
	}
	s.Time = m.now()
	m.mu.snaps[s.Vault] = append(m.mu.snaps[s.Vault], s)
	return s, nil
}

// check is the leader's commit check (meta/server checkChunks, without the parent
// shortcut).
func (m *memMeta) check(ctx context.Context, s meta.Snapshot) error {
	var ids []chunk.ID
	treeListed := false
	for i, ref := range s.Refs {
		data, err := m.chunks.Get(ctx, ref)
		if err != nil {
			return fmt.Errorf("%w: reference list %d (%s): %v", meta.ErrMissingChunks, i, ref.Str(), err)
		}
		list, err := meta.OpenRefList(ref, data)
		if err != nil {
			return fmt.Errorf("reference list %d: %w", i, err)
		}
		if slices.Contains(list, s.Tree) {
			treeListed = true
		}
		ids = append(ids, list...)
	}
	if !treeListed {
		return fmt.Errorf("%w: tree %s is not in the reference list", meta.ErrInvalid, s.Tree.Str())
	}
	have, err := m.chunks.Has(ctx, ids)
	if err != nil {
		return fmt.Errorf("%w: %v", meta.ErrUnavailable, err)
	}
	for i, ok := range have {
		if !ok {
			return fmt.Errorf("%w: chunk %s", meta.ErrMissingChunks, ids[i].Str())
		}
	}
	return nil
}

// ListSnapshots returns a vault's snapshots in commit order.
func (m *memMeta) ListSnapshots(_ context.Context, vault meta.VaultID) ([]meta.Snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.mu.snaps[vault]), nil
}

// GetSnapshot returns one snapshot or meta.ErrNotFound.
func (m *memMeta) GetSnapshot(_ context.Context, vault meta.VaultID, id meta.SnapshotID) (meta.Snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.mu.snaps[vault] {
		if s.ID == id {
			return s, nil
		}
	}
	return meta.Snapshot{}, fmt.Errorf("bench: meta: snapshot %s: %w", id.Str(), meta.ErrNotFound)
}

// ClusterMap returns a one-PG map with the default profile (the agent does not place
// chunks itself; the in-memory store takes them whole).
func (m *memMeta) ClusterMap(context.Context) (placement.Map, error) {
	return placement.Map{Epoch: 1, PGCount: 1, Profile: placement.DefaultProfile}, nil
}

// SetClusterMap is refused: there are no nodes.
func (m *memMeta) SetClusterMap(context.Context, placement.Map) error {
	return fmt.Errorf("bench: meta: set cluster map: %w", meta.ErrDenied)
}

// RaftStatus reports this process as the only, leading server.
func (m *memMeta) RaftStatus(context.Context) (meta.RaftStatus, error) {
	return meta.RaftStatus{Leader: "in-process", Servers: []meta.Server{{ID: "in-process", Voter: true, Leader: true, Reachable: true}}}, nil
}
