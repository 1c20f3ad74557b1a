package server

import (
	"context"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
)

var _ meta.VaultService = (*Server)(nil)

// DeleteVault implements meta.VaultService; the FSM decides and audits.
func (s *Server) DeleteVault(ctx context.Context, id meta.VaultID, window time.Duration, reason string) (meta.Vault, error) {
	if err := s.leaderWrite(); err != nil {
		return meta.Vault{}, err
	}
	if window <= 0 {
		window = meta.DefaultRecoveryWindow
	}
	if err := s.gateDeleteVault(ctx, id, window, reason); err != nil {
		return meta.Vault{}, err
	}
	res, err := s.propose(timeoutOf(ctx), command.DeleteVault{Vault: id, Window: int64(window), By: meta.PrincipalFrom(ctx), Reason: reason})
	if err != nil {
		return meta.Vault{}, err
	}
	return res.(meta.Vault), nil
}

// UndeleteVault implements meta.VaultService.
func (s *Server) UndeleteVault(ctx context.Context, id meta.VaultID) (meta.Vault, error) {
	if err := s.leaderWrite(); err != nil {
		return meta.Vault{}, err
	}
	res, err := s.propose(timeoutOf(ctx), command.UndeleteVault{Vault: id, By: meta.PrincipalFrom(ctx)})
	if err != nil {
		return meta.Vault{}, err
	}
	return res.(meta.Vault), nil
}

// SetVaultPolicy implements meta.VaultService.
func (s *Server) SetVaultPolicy(ctx context.Context, id meta.VaultID, p meta.VaultPolicy) (meta.Vault, error) {
	if err := s.leaderWrite(); err != nil {
		return meta.Vault{}, err
	}
	if err := s.gateVaultPolicy(ctx, id, p); err != nil {
		return meta.Vault{}, err
	}
	res, err := s.propose(timeoutOf(ctx), command.SetVaultPolicy{Vault: id, Policy: p, By: meta.PrincipalFrom(ctx)})
	if err != nil {
		return meta.Vault{}, err
	}
	return res.(meta.Vault), nil
}

// purgeDue proposes the purge of every soft-deleted vault whose window has ended (the
// leader's loop calls it each tick; the FSM checks again at the entry's cluster time).
func (s *Server) purgeDue() {
	due, err := s.fsm.PurgeDue()
	if err != nil {
		s.log.Warn("list vaults due for purge", "err", err)
		return
	}
	for _, id := range due {
		if _, err := s.propose(0, command.PurgeVault{Vault: id}); err != nil {
			s.log.Warn("purge vault", "vault", id, "err", err)
			continue
		}
		s.log.Info("purged deleted vault", "vault", id)
	}
}
