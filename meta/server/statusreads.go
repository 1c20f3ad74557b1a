package server

import (
	"context"
	"fmt"
	"time"

	"github.com/cofferhq/coffer/meta"
)

// The reads below serve the status page of the node this server runs in (an in-process
// caller). They read this server's replica, so on a follower they may lag the leader
// by the replication delay; a status page prefers that to showing nothing.

// RecentAudit returns up to limit of the newest audit entries, newest first. The
// principal in ctx needs the audit permission, as for AuditLog.
func (s *Server) RecentAudit(ctx context.Context, limit int) ([]meta.AuditEntry, error) {
	if err := meta.PrincipalFrom(ctx).Authorize(meta.ActAudit, ""); err != nil {
		return nil, fmt.Errorf("server: recent audit: %w", err)
	}
	return s.fsm.RecentAudit(limit)
}

// RecentJobs returns the jobs still running or ended at or after since, oldest first,
// at most limit (the newest ones; limit <= 0: all). The principal in ctx must read
// every host's jobs (meta.ActJobsAll).
func (s *Server) RecentJobs(ctx context.Context, since time.Time, limit int) ([]meta.Job, error) {
	if err := meta.PrincipalFrom(ctx).Authorize(meta.ActJobsAll, ""); err != nil {
		return nil, fmt.Errorf("server: recent jobs: %w", err)
	}
	return s.fsm.RecentJobs(since, limit)
}
