package server

import (
	"context"
	"fmt"

	"github.com/cofferhq/coffer/meta"
)

// RecentAudit returns up to limit of the newest audit entries, newest first, read from
// this server's replica: on a follower it may lag the leader by the replication delay.
// It is for the status page of the node this server runs in (an in-process caller); the
// principal in ctx needs the audit permission like AuditLog's.
func (s *Server) RecentAudit(ctx context.Context, limit int) ([]meta.AuditEntry, error) {
	if err := meta.PrincipalFrom(ctx).Authorize(meta.ActAudit, ""); err != nil {
		return nil, fmt.Errorf("server: recent audit: %w", err)
	}
	return s.fsm.RecentAudit(limit)
}
