package server

import (
	"context"
	"fmt"
	"time"

	"github.com/cofferhq/coffer/chunkstore/grant"
	"github.com/cofferhq/coffer/meta"
)

var _ meta.GrantService = (*Server)(nil)

// IssueGrant implements meta.GrantService (on the leader; audited).
func (s *Server) IssueGrant(ctx context.Context, vault meta.VaultID, id meta.SnapshotID, ttl time.Duration) ([]byte, grant.Grant, error) {
	if len(s.cfg.GrantKey) == 0 {
		return nil, grant.Grant{}, fmt.Errorf("%w: server: this cluster issues no restore grants (no grant key)", meta.ErrUnavailable)
	}
	if ttl < 0 || ttl > grant.MaxTTL {
		return nil, grant.Grant{}, fmt.Errorf("%w: grant lifetime %v not in (0, %v]", meta.ErrInvalid, ttl, grant.MaxTTL)
	}
	if ttl == 0 {
		ttl = grant.MaxTTL
	}
	if err := s.leaderRead(); err != nil {
		return nil, grant.Grant{}, err
	}
	p := meta.PrincipalFrom(ctx)
	if err := p.Authorize(meta.ActRead, vault); err != nil {
		return nil, grant.Grant{}, fmt.Errorf("server: issue grant: %w", err)
	}
	snap, err := s.fsm.GetSnapshot(vault, id)
	if err != nil {
		return nil, grant.Grant{}, err
	}
	if err := s.gateLockedRestore(ctx, vault, snap); err != nil {
		return nil, grant.Grant{}, err
	}
	g := grant.Grant{Vault: string(vault), Snapshot: id, Refs: snap.Refs, Principal: p.Name, Expires: s.fsm.Now().Add(ttl)}
	tok, err := grant.Sign(s.cfg.GrantKey, g)
	if err != nil {
		return nil, grant.Grant{}, fmt.Errorf("%w: server: issue grant: %w", meta.ErrInvalid, err)
	}
	s.auditOK(ctx, p, "restore grant", vault, id.String(), fmt.Sprintf("read-only until %s", g.Expires.Format(time.RFC3339)))
	return tok, g, nil
}
