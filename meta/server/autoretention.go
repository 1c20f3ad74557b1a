package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
)

var _ meta.RetentionAdmin = (*Server)(nil)

// retentionInterval is the configured interval, or the default.
func (s *Server) retentionInterval() (d time.Duration, enabled bool) {
	switch {
	case s.cfg.RetentionInterval < 0:
		return 0, false
	case s.cfg.RetentionInterval == 0:
		return meta.DefaultRetentionInterval, true
	}
	return s.cfg.RetentionInterval, true
}

// retentionDue starts a round of automatic retention when the retention interval has
// passed in cluster time since the last round (recorded in the FSM, so a new leader
// keeps the schedule). It runs in the background; failures are logged.
func (s *Server) retentionDue() {
	interval, ok := s.retentionInterval()
	if !ok {
		return
	}
	last, err := s.fsm.RetentionLast()
	if err != nil {
		s.log.Warn("read retention state", "err", err)
		return
	}
	if !last.IsZero() && s.fsm.Now().Sub(last) < interval {
		return
	}
	if !s.retMu.TryLock() {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.retMu.Unlock()
		ctx, cancel := s.stopContext()
		defer cancel()
		if _, err := s.retentionRound(ctx); err != nil && !errors.Is(err, meta.ErrUnavailable) {
			var nl *meta.NotLeaderError
			if !errors.As(err, &nl) {
				s.log.Warn("scheduled retention", "err", err)
			}
		}
	}()
}

// stopContext returns a context cancelled when the server closes.
func (s *Server) stopContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// retentionRound applies every live vault's stored policy, and the backup policies' own
// retention to their snapshots (meta.PlanVaultRetention). A vault is touched (one
// ApplyVaultRetention entry, audited) only when the rules remove something now or what a
// lock or hold keeps back changed since its last report, so a quiet vault costs no log
// entry. The FSM decides again at the entry's cluster time. The round ends with a
// RetentionRound entry that dates it.
func (s *Server) retentionRound(ctx context.Context) ([]meta.RetentionReport, error) {
	vaults, err := s.fsm.Vaults()
	if err != nil {
		return nil, fmt.Errorf("server: retention: %w", err)
	}
	policies, err := s.fsm.BackupPolicies()
	if err != nil {
		return nil, fmt.Errorf("server: retention: %w", err)
	}
	var reps []meta.RetentionReport
	var errs []error
	for _, v := range vaults {
		if ctx.Err() != nil {
			return reps, ctx.Err()
		}
		if v.Deleted != nil {
			continue
		}
		var keep *meta.Policy
		if v.Retention != nil && !v.Retention.Keep.Empty() {
			keep = &v.Retention.Keep
		}
		snaps, err := s.fsm.Snapshots(v.ID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		plan, used := meta.PlanVaultRetention(snaps, keep, policies, s.fsm.Now())
		if keep == nil && len(used) == 0 {
			continue
		}
		prev, _, err := s.fsm.RetentionReport(v.ID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if len(plan.Removed) == 0 && meta.SameHeld(plan.Held, prev.Held) {
			continue
		}
		res, err := s.propose(timeoutOf(ctx), command.ApplyVaultRetention{Vault: v.ID})
		if err != nil {
			errs = append(errs, fmt.Errorf("vault %s: %w", v.ID, err))
			continue
		}
		rep := res.(meta.RetentionReport)
		s.log.Info("retention applied", "vault", v.ID, "removed", len(rep.Removed), "kept", rep.Kept, "held", len(rep.Held), "backup_policies", len(rep.BackupPolicies))
		reps = append(reps, rep)
	}
	if err := s.expireRetiredHosts(ctx); err != nil {
		errs = append(errs, err)
	}
	if _, err := s.propose(timeoutOf(ctx), command.RetentionRound{}); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return reps, fmt.Errorf("server: retention: %w", err)
	}
	return reps, nil
}

// RunRetention implements meta.RetentionAdmin: a round now (admin only; audited).
func (s *Server) RunRetention(ctx context.Context) ([]meta.RetentionReport, error) {
	if err := s.leaderWrite(); err != nil {
		return nil, err
	}
	p := meta.PrincipalFrom(ctx)
	if err := p.Authorize(meta.ActDelete, ""); err != nil {
		err = fmt.Errorf("server: retention run: %w", err)
		s.auditRefusal(ctx, p, "retention run", "", "", err)
		return nil, err
	}
	s.retMu.Lock()
	defer s.retMu.Unlock()
	reps, err := s.retentionRound(ctx)
	reason := fmt.Sprintf("%d vaults changed", len(reps))
	if err != nil {
		reason = err.Error()
	}
	s.auditOK(ctx, p, "retention run", "", "", reason)
	if reps == nil {
		reps = []meta.RetentionReport{}
	}
	return reps, err
}

// RetentionStatus implements meta.RetentionAdmin (admins and nodes).
func (s *Server) RetentionStatus(ctx context.Context) (meta.RetentionStatus, error) {
	if err := s.leaderRead(); err != nil {
		return meta.RetentionStatus{}, err
	}
	if p := meta.PrincipalFrom(ctx); !p.SeesTopology() {
		return meta.RetentionStatus{}, fmt.Errorf("%w: server: retention status: %s may not read every vault's retention reports", meta.ErrDenied, p)
	}
	interval, ok := s.retentionInterval()
	last, err := s.fsm.RetentionLast()
	if err != nil {
		return meta.RetentionStatus{}, err
	}
	reps, err := s.fsm.RetentionReports()
	if err != nil {
		return meta.RetentionStatus{}, err
	}
	st := meta.RetentionStatus{Interval: 0, LastRound: last, Now: s.fsm.Now(), Reports: reps}
	if st.Reports == nil {
		st.Reports = []meta.RetentionReport{}
	}
	if ok {
		st.Interval = interval
		st.NextRound = last.Add(st.Interval)
		if last.IsZero() {
			st.NextRound = st.Now
		}
	}
	return st, nil
}
