package server

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
)

var _ meta.ReplicationService = (*Server)(nil)

// AddReplication implements meta.ReplicationService (admin only; audited).
func (s *Server) AddReplication(ctx context.Context, r meta.Replication) (meta.Replication, error) {
	if err := s.leaderWrite(); err != nil {
		return meta.Replication{}, err
	}
	if err := meta.ValidateReplication(r); err != nil {
		return meta.Replication{}, fmt.Errorf("server: add replication: %w", err)
	}
	if len(r.SealedKey) > 0 || r.KeySeal != "" {
		return meta.Replication{}, fmt.Errorf("%w: server: add replication %s: give the key in the clear (the leader seals it)", meta.ErrInvalid, r.Name)
	}
	sealed, id, err := s.sealReplicationKey(ctx, r.Name, r.Key)
	if err != nil {
		return meta.Replication{}, fmt.Errorf("server: add replication %s: %w", r.Name, err)
	}
	r.Key, r.SealedKey, r.KeySeal = nil, sealed, id
	res, err := s.propose(timeoutOf(ctx), command.AddReplication{Replication: r, By: meta.PrincipalFrom(ctx)})
	if err != nil {
		return meta.Replication{}, err
	}
	return meta.ReplicationFor(res.(meta.Replication)), nil
}

// replicationSealLabel names the key derived from the cluster seal key that seals
// replication jobs' source keys.
const replicationSealLabel = "coffer replication key seal v1"

// sealReplicationKey seals job name's source key under the cluster seal key
// (XChaCha20-Poly1305, the name as associated data, so a sealed key cannot be moved to
// another job). It returns the sealed key (the nonce first) and the seal key's ID.
func (s *Server) sealReplicationKey(ctx context.Context, name string, key []byte) ([]byte, string, error) {
	k, id, err := s.derivedSealKey(ctx, "", replicationSealLabel)
	if err != nil {
		return nil, "", err
	}
	aead, err := chacha20poly1305.NewX(k)
	if err != nil {
		return nil, "", fmt.Errorf("server: seal replication key: %w", err)
	}
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(key)+aead.Overhead())
	if _, err := io.ReadFull(rand.Reader, nonce); err != nil {
		return nil, "", fmt.Errorf("server: seal replication key: %w", err)
	}
	return aead.Seal(nonce, nonce, key, []byte(name)), id, nil
}

// openReplicationKey returns job r's source key: opened from r.SealedKey, or r.Key as an
// entry written before keys were sealed left it.
func (s *Server) openReplicationKey(ctx context.Context, r meta.Replication) ([]byte, error) {
	if len(r.SealedKey) == 0 {
		return r.Key, nil
	}
	k, _, err := s.derivedSealKey(ctx, r.KeySeal, replicationSealLabel)
	if err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.NewX(k)
	if err != nil {
		return nil, fmt.Errorf("server: open replication key: %w", err)
	}
	if len(r.SealedKey) < aead.NonceSize()+aead.Overhead() {
		return nil, fmt.Errorf("%w: server: sealed key of replication %s too short", meta.ErrInvalid, r.Name)
	}
	out, err := aead.Open(nil, r.SealedKey[:aead.NonceSize()], r.SealedKey[aead.NonceSize():], []byte(r.Name))
	if err != nil {
		return nil, fmt.Errorf("server: open the key of replication %s: %w", r.Name, err)
	}
	return out, nil
}

// ListReplications implements meta.ReplicationService (a current read; admin only).
func (s *Server) ListReplications(ctx context.Context) ([]meta.Replication, error) {
	if err := s.leaderRead(); err != nil {
		return nil, err
	}
	if err := meta.PrincipalFrom(ctx).Authorize(meta.ActReplicate, ""); err != nil {
		return nil, fmt.Errorf("server: list replications: %w", err)
	}
	rs, err := s.fsm.Replications()
	for i := range rs {
		rs[i] = meta.ReplicationFor(rs[i])
	}
	return rs, err
}

// RemoveReplication implements meta.ReplicationService (admin only; audited).
func (s *Server) RemoveReplication(ctx context.Context, name string) error {
	if err := s.leaderWrite(); err != nil {
		return err
	}
	_, err := s.propose(timeoutOf(ctx), command.RemoveReplication{Name: name, By: meta.PrincipalFrom(ctx)})
	return err
}

// RunReplication implements meta.ReplicationService (admin only; audited): the
// leader's runner (node) starts the run.
func (s *Server) RunReplication(ctx context.Context, name string) (meta.Replication, error) {
	if err := s.leaderWrite(); err != nil {
		return meta.Replication{}, err
	}
	res, err := s.propose(timeoutOf(ctx), command.RequestReplicationRun{Name: name, By: meta.PrincipalFrom(ctx)})
	if err != nil {
		return meta.Replication{}, err
	}
	return meta.ReplicationFor(res.(meta.Replication)), nil
}

// Replications returns the replication jobs with their credentials (the source key as
// stored: sealed), for the leader's runner to schedule (in-process only; no RPC carries
// it). Replication opens one job's key.
func (s *Server) Replications() ([]meta.Replication, error) {
	if err := s.leaderRead(); err != nil {
		return nil, err
	}
	return s.fsm.Replications()
}

// Replication returns one job with its credentials, its source key opened (Key set,
// SealedKey cleared), for the leader's runner.
func (s *Server) Replication(ctx context.Context, name string) (meta.Replication, error) {
	if err := s.leaderRead(); err != nil {
		return meta.Replication{}, err
	}
	r, err := s.fsm.Replication(name)
	if err != nil {
		return meta.Replication{}, err
	}
	key, err := s.openReplicationKey(ctx, r)
	if err != nil {
		return meta.Replication{}, err
	}
	r.Key, r.SealedKey, r.KeySeal = key, nil, ""
	return r, nil
}

// RecordReplicationRun records a run's start or end in its job's state (the runner).
func (s *Server) RecordReplicationRun(ctx context.Context, run meta.ReplicationRun) error {
	if err := s.leaderWrite(); err != nil {
		return err
	}
	_, err := s.propose(timeoutOf(ctx), command.ReplicationRun{Run: run})
	return err
}

// ImportReplicaVault creates job name's replica vault from the source's record, or
// merges the source's key wraps into it (the runner).
func (s *Server) ImportReplicaVault(ctx context.Context, name string, v meta.Vault) (meta.Vault, error) {
	if err := s.leaderWrite(); err != nil {
		return meta.Vault{}, err
	}
	res, err := s.propose(timeoutOf(ctx), command.ImportReplicaVault{Name: name, Vault: v})
	if err != nil {
		return meta.Vault{}, err
	}
	return res.(meta.Vault), nil
}

// ImportReplicaSnapshot records a source snapshot in job name's replica vault once
// every chunk it references is stored here (the commit check of CommitSnapshot, redone
// when a garbage collection begins meanwhile), or strengthens the lock and hold of the
// replica's copy (the runner).
func (s *Server) ImportReplicaSnapshot(ctx context.Context, name string, snap meta.Snapshot) (meta.ReplicaImport, error) {
	if err := s.leaderWrite(); err != nil {
		return meta.ReplicaImport{}, err
	}
	_, err := s.fsm.GetSnapshot(snap.Vault, snap.ID)
	have := err == nil
	if err != nil && !errors.Is(err, meta.ErrNotFound) {
		return meta.ReplicaImport{}, err
	}
	for attempt := 1; ; attempt++ {
		gc, err := s.fsm.GCState()
		if err != nil {
			return meta.ReplicaImport{}, fmt.Errorf("server: import snapshot %s: %w", snap.ID.Str(), err)
		}
		if !have {
			if err := s.checkChunks(ctx, snap); err != nil {
				return meta.ReplicaImport{}, fmt.Errorf("server: import snapshot %s: %w", snap.ID.Str(), err)
			}
		}
		res, err := s.propose(timeoutOf(ctx), command.ImportReplicaSnapshot{Name: name, Snapshot: snap, GCEpoch: gc.Epoch})
		if errors.Is(err, meta.ErrGCEpoch) && attempt < 5 {
			continue
		}
		if err != nil {
			return meta.ReplicaImport{}, err
		}
		return res.(meta.ReplicaImport), nil
	}
}

// LocalReplications returns the replication jobs as this server's state holds them
// (any meta server, no leadership check), without their credentials: the metrics.
func (s *Server) LocalReplications() ([]meta.Replication, error) {
	rs, err := s.fsm.Replications()
	for i := range rs {
		rs[i] = meta.ReplicationFor(rs[i])
	}
	return rs, err
}

// ClusterNow returns the cluster clock as this server's state holds it (zero before the
// first entry).
func (s *Server) ClusterNow() time.Time { return s.fsm.Now() }
