// Package memmeta is an in-memory meta.Service and meta.RetentionService: vaults,
// snapshots, the cluster map and an audit log in maps, no Raft, no network, for the
// client pipeline benchmark and the client's tests (meta/server links Raft and Pebble,
// which the coffer binary must not). It makes the leader's decisions (authorization by
// the context's principal, validation, the commit check against a chunk store, locks,
// holds and deletes) so that meta/metatest holds it and the real server to one contract.
package memmeta

import (
	"context"
	"errors"
	"filippo.io/age"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/placement"
)

// Config configures a Service.
type Config struct {
	// Chunks is the store the commit check reads. Required.
	Chunks meta.CommitChunks
	// Now is the service's clock (commit and creation times). Required.
	Now func() time.Time
	// Map is the initial cluster map (nil: none, and ClusterMap answers ErrNotFound
	// until one is set).
	Map *placement.Map
	// PlatformKey is the platform key (nil: none; no vault can be platform-managed).
	PlatformKey *age.X25519Identity
}

// Service is an in-memory meta.Service. It is safe for concurrent use.
type Service struct {
	cfg Config
	mu  struct {
		sync.Mutex
		vaults map[meta.VaultID]meta.Vault
		snaps  map[meta.VaultID][]meta.Snapshot // in commit order (by time)
		cmap   *placement.Map
		last   time.Time // the latest time handed out: times never go back
		audit  []meta.AuditEntry
	}
}

var _ meta.Service = (*Service)(nil)

// New returns an empty service.
func New(cfg Config) (*Service, error) {
	if cfg.Chunks == nil || cfg.Now == nil {
		return nil, errors.New("memmeta: Config.Chunks and Config.Now are required")
	}
	if cfg.Map != nil {
		if err := meta.ValidateMap(*cfg.Map); err != nil {
			return nil, fmt.Errorf("memmeta: initial map: %w", err)
		}
	}
	s := &Service{cfg: cfg}
	s.mu.vaults = make(map[meta.VaultID]meta.Vault)
	s.mu.snaps = make(map[meta.VaultID][]meta.Snapshot)
	if cfg.Map != nil {
		m := *cfg.Map
		s.mu.cmap = &m
	}
	return s, nil
}

// nowLocked returns the service time: the clock, but never before a time already given.
func (s *Service) nowLocked() time.Time {
	t := s.cfg.Now()
	if t.Before(s.mu.last) {
		t = s.mu.last
	}
	s.mu.last = t
	return t
}

// CreateVault records v (see meta.Service). A zero Profile takes the cluster map's
// profile (placement.DefaultProfile without a map); a vault may not arrive with a
// retention policy or a deletion (ErrInvalid). The attempt is audited with its outcome.
func (s *Service) CreateVault(ctx context.Context, v meta.Vault) (meta.Vault, error) {
	p := meta.PrincipalFrom(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.createLocked(p, v)
	s.auditLocked(s.nowLocked(), meta.AuditEntry{Principal: p.Name, Role: p.Role, Action: "vault create", Vault: v.ID}, err, "")
	if err != nil {
		return meta.Vault{}, fmt.Errorf("memmeta: create vault: %w", err)
	}
	return v, nil
}

func (s *Service) createLocked(p meta.Principal, v meta.Vault) (meta.Vault, error) {
	if err := p.Authorize(meta.ActCreateVault, v.ID); err != nil {
		return v, err
	}
	if v.Profile == (placement.Profile{}) {
		v.Profile = placement.DefaultProfile
		if s.mu.cmap != nil {
			v.Profile = s.mu.cmap.Profile
		}
	}
	if v.Retention != nil || v.Deleted != nil {
		return v, fmt.Errorf("%w: vault %s: a new vault carries no retention policy or deletion", meta.ErrInvalid, v.ID)
	}
	if err := meta.ValidateVault(v); err != nil {
		return v, err
	}
	if _, ok := s.mu.vaults[v.ID]; ok {
		return v, fmt.Errorf("vault %s: %w", v.ID, meta.ErrExists)
	}
	v.KeyWraps = cloneWraps(v.KeyWraps)
	v.Created = s.nowLocked()
	meta.InitVaultKeys(&v, p.Name, v.Created)
	s.mu.vaults[v.ID] = v
	return v, nil
}

// GetVault returns a vault as the principal may see it (meta.VaultFor), ErrDenied
// outside the principal's vaults, or ErrNotFound.
func (s *Service) GetVault(ctx context.Context, id meta.VaultID) (meta.Vault, error) {
	p := meta.PrincipalFrom(ctx)
	if err := p.Authorize(meta.ActRead, id); err != nil {
		return meta.Vault{}, fmt.Errorf("memmeta: get vault: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.mu.vaults[id]
	if !ok {
		return meta.Vault{}, fmt.Errorf("memmeta: vault %s: %w", id, meta.ErrNotFound)
	}
	v.KeyWraps, v.Keys = cloneWraps(v.KeyWraps), v.Keys.Clone()
	return meta.VaultFor(p, v), nil
}

// ListVaults returns the vaults the principal may read, sorted by ID, as it may see them
// (meta.VaultFor).
func (s *Service) ListVaults(ctx context.Context) ([]meta.Vault, error) {
	p := meta.PrincipalFrom(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]meta.Vault, 0, len(s.mu.vaults))
	for _, v := range s.mu.vaults {
		if p.Can(meta.ActRead, v.ID) {
			v.KeyWraps, v.Keys = cloneWraps(v.KeyWraps), v.Keys.Clone()
			out = append(out, meta.VaultFor(p, v))
		}
	}
	slices.SortFunc(out, func(a, b meta.Vault) int { return strings.Compare(string(a.ID), string(b.ID)) })
	return out, nil
}

// CommitSnapshot validates and authorizes snap, checks it against the chunk store and
// records it (see meta.Service): the checks and their order are the meta server's.
func (s *Service) CommitSnapshot(ctx context.Context, snap meta.Snapshot) (meta.Snapshot, error) {
	if err := meta.ValidateSnapshot(snap); err != nil {
		return meta.Snapshot{}, fmt.Errorf("memmeta: commit snapshot: %w", err)
	}
	by := meta.PrincipalFrom(ctx)
	if err := s.authorizeCommit(by, snap); err != nil {
		return meta.Snapshot{}, fmt.Errorf("memmeta: commit snapshot %s: %w", snap.ID.Str(), err)
	}
	if _, err := s.vaultFor(by, snap); err != nil {
		return meta.Snapshot{}, fmt.Errorf("memmeta: commit snapshot %s: %w", snap.ID.Str(), err)
	}
	if err := (meta.CommitCheck{Chunks: s.cfg.Chunks}).Run(ctx, snap, nil); err != nil {
		return meta.Snapshot{}, fmt.Errorf("memmeta: commit snapshot %s: %w", snap.ID.Str(), err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.vaultForLocked(by, snap) // again: another commit may have won meanwhile
	if err != nil {
		return meta.Snapshot{}, fmt.Errorf("memmeta: commit snapshot %s: %w", snap.ID.Str(), err)
	}
	now := s.nowLocked()
	snap = meta.ApplyDefaultLock(snap, v.Retention, now)
	snap.Time = now
	snap.Paths, snap.Tags, snap.Refs = slices.Clone(snap.Paths), slices.Clone(snap.Tags), slices.Clone(snap.Refs)
	s.mu.snaps[snap.Vault] = append(s.mu.snaps[snap.Vault], snap)
	return snap, nil
}

// authorizeCommit is the server's: commit permission, and the lock and hold permissions
// (and a valid lock) when the snapshot brings them.
func (s *Service) authorizeCommit(p meta.Principal, snap meta.Snapshot) error {
	if err := p.Authorize(meta.ActCommit, snap.Vault); err != nil {
		return err
	}
	if snap.Lock != nil {
		if err := p.Authorize(meta.ActLock, snap.Vault); err != nil {
			return err
		}
		s.mu.Lock()
		now := s.nowLocked()
		s.mu.Unlock()
		if err := meta.ValidateLock(*snap.Lock, now); err != nil {
			return err
		}
	}
	if snap.LegalHold {
		return p.Authorize(meta.ActHold, snap.Vault)
	}
	return nil
}

// vaultFor returns snap's vault when snap may be recorded in it: ErrNotFound without the
// vault, ErrInvalid while it is soft-deleted, ErrDenied for a lock beyond the agent's limit, ErrExists for a committed ID.
func (s *Service) vaultFor(by meta.Principal, snap meta.Snapshot) (meta.Vault, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.vaultForLocked(by, snap)
}

func (s *Service) vaultForLocked(by meta.Principal, snap meta.Snapshot) (meta.Vault, error) {
	v, ok := s.mu.vaults[snap.Vault]
	if !ok {
		return meta.Vault{}, fmt.Errorf("vault %s: %w", snap.Vault, meta.ErrNotFound)
	}
	if v.Deleted != nil {
		return meta.Vault{}, fmt.Errorf("%w: vault %s is deleted", meta.ErrInvalid, v.ID)
	}
	if snap.Lock != nil {
		if err := meta.CheckAgentLockLimit(by, snap.Vault, *snap.Lock, s.nowLocked(), v.Retention); err != nil {
			return meta.Vault{}, err
		}
	}
	if slices.ContainsFunc(s.mu.snaps[snap.Vault], func(o meta.Snapshot) bool { return o.ID == snap.ID }) {
		return meta.Vault{}, fmt.Errorf("snapshot %s in vault %s: %w", snap.ID.Str(), snap.Vault, meta.ErrExists)
	}
	return v, nil
}

// ListSnapshots returns a vault's snapshots by commit time: ErrDenied outside the
// principal's vaults, ErrNotFound for an unknown vault.
func (s *Service) ListSnapshots(ctx context.Context, vault meta.VaultID) ([]meta.Snapshot, error) {
	if err := meta.PrincipalFrom(ctx).Authorize(meta.ActRead, vault); err != nil {
		return nil, fmt.Errorf("memmeta: list snapshots: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.mu.vaults[vault]; !ok {
		return nil, fmt.Errorf("memmeta: vault %s: %w", vault, meta.ErrNotFound)
	}
	return slices.Clone(s.mu.snaps[vault]), nil
}

// GetSnapshot returns one snapshot, ErrDenied outside the principal's vaults, or
// ErrNotFound.
func (s *Service) GetSnapshot(ctx context.Context, vault meta.VaultID, id meta.SnapshotID) (meta.Snapshot, error) {
	if err := meta.PrincipalFrom(ctx).Authorize(meta.ActRead, vault); err != nil {
		return meta.Snapshot{}, fmt.Errorf("memmeta: get snapshot: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, snap := range s.mu.snaps[vault] {
		if snap.ID == id {
			return snap, nil
		}
	}
	return meta.Snapshot{}, fmt.Errorf("memmeta: snapshot %s in vault %s: %w", id.Str(), vault, meta.ErrNotFound)
}

// ClusterMap returns the current map as the principal may see it (meta.MapFor), or
// ErrNotFound before one is set.
func (s *Service) ClusterMap(ctx context.Context) (placement.Map, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.cmap == nil {
		return placement.Map{}, fmt.Errorf("memmeta: cluster map: %w", meta.ErrNotFound)
	}
	return meta.MapFor(meta.PrincipalFrom(ctx), cloneMap(*s.mu.cmap)), nil
}

// SetClusterMap replaces the map when m is valid and m.Epoch is the current epoch + 1
// (ErrInvalid otherwise), for a principal with the cluster-map permission (ErrDenied).
func (s *Service) SetClusterMap(ctx context.Context, m placement.Map) error {
	if err := meta.ValidateMap(m); err != nil {
		return fmt.Errorf("memmeta: set cluster map: %w", err)
	}
	if err := meta.PrincipalFrom(ctx).Authorize(meta.ActClusterMap, ""); err != nil {
		return fmt.Errorf("memmeta: set cluster map: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var cur uint64
	if s.mu.cmap != nil {
		cur = s.mu.cmap.Epoch
	}
	if m.Epoch != cur+1 {
		return fmt.Errorf("memmeta: set cluster map: %w: epoch %d, want exactly %d (current %d + 1)", meta.ErrInvalid, m.Epoch, cur+1, cur)
	}
	m = cloneMap(m)
	s.mu.cmap = &m
	return nil
}

// SetVault stores v as it is, replacing any vault of its ID and keeping its snapshots:
// for tests that stage what happens outside meta.Service (a rotated key wrapping, a soft
// delete, a vault created again under a purged vault's name). It checks nothing.
func (s *Service) SetVault(v meta.Vault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v.KeyWraps, v.Keys = cloneWraps(v.KeyWraps), v.Keys.Clone()
	s.mu.vaults[v.ID] = v
}

// PurgeVault removes a vault and its snapshots, as the meta server's purge does once a
// soft delete's recovery window ends, and returns the vault (false when there was none).
func (s *Service) PurgeVault(id meta.VaultID) (meta.Vault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.mu.vaults[id]
	delete(s.mu.vaults, id)
	delete(s.mu.snaps, id)
	return v, ok
}

// RaftStatus reports this process as the only server, leading.
func (s *Service) RaftStatus(context.Context) (meta.RaftStatus, error) {
	const self = "memmeta"
	return meta.RaftStatus{Self: self, Leader: self,
		Servers: []meta.Server{{ID: self, Voter: true, Leader: true, Reachable: true}}}, nil
}

func cloneWraps(w [][]byte) [][]byte {
	out := make([][]byte, len(w))
	for i, b := range w {
		out[i] = slices.Clone(b)
	}
	return out
}

func cloneMap(m placement.Map) placement.Map {
	m.Nodes = slices.Clone(m.Nodes)
	return m
}
