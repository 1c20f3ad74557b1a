package server

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
)

var _ meta.HostAdmin = (*Server)(nil)

// HostDependencies implements meta.HostAdmin (a current read on the leader; admin only).
func (s *Server) HostDependencies(ctx context.Context, host string) (meta.HostDependencies, error) {
	if err := s.leaderRead(); err != nil {
		return meta.HostDependencies{}, err
	}
	if err := meta.PrincipalFrom(ctx).Authorize(meta.ActRevoke, ""); err != nil {
		return meta.HostDependencies{}, fmt.Errorf("server: host dependencies: %w", err)
	}
	if err := meta.ValidateAgentName(host); err != nil {
		return meta.HostDependencies{}, err
	}
	d := meta.HostDependencies{Host: host, Policies: []string{}, NextRuns: []meta.NextRun{}, Running: []string{},
		Snapshots: []meta.HostSnapshot{}, Replications: []string{}}
	agents, err := s.fsm.Agents()
	if err != nil {
		return d, err
	}
	for i := range agents {
		if agents[i].Host == host {
			a := agents[i]
			d.Agent = &a
			d.NextRuns = append(d.NextRuns, a.NextRuns...)
		}
	}
	labels, err := s.fsm.HostLabels(host)
	if err != nil {
		return d, err
	}
	pols, err := s.fsm.BackupPolicies()
	if err != nil {
		return d, err
	}
	for _, p := range pols {
		if p.AppliesTo(host, labels) {
			d.Policies = append(d.Policies, p.Name)
		}
	}
	jobs, err := s.fsm.Jobs()
	if err != nil {
		return d, err
	}
	for _, j := range jobs {
		if j.Host == host && !j.Done() {
			d.Running = append(d.Running, j.ID)
		}
	}
	vaults, err := s.fsm.Vaults()
	if err != nil {
		return d, err
	}
	owns := meta.HostSnapshots(host, d.Agent, jobs)
	now := s.fsm.Now()
	for _, v := range vaults {
		if v.Deleted != nil {
			continue
		}
		snaps, err := s.fsm.Snapshots(v.ID)
		if err != nil {
			return d, err
		}
		for _, sn := range snaps {
			if owns(sn) {
				d.Snapshots = append(d.Snapshots, meta.HostSnapshot{Vault: v.ID, ID: sn.ID, Time: sn.Time, Protected: meta.SnapshotProtection(sn, now)})
			}
		}
	}
	// Replication (issue 19, part 2) of a vault holding the host's snapshots: the jobs
	// of this cluster whose replica vault it is ("job NAME"), and the valid replication
	// certificates of other clusters' jobs that read it ("certificate PRINCIPAL"). Their
	// copies outlive the host's expiry here.
	inVault := func(v meta.VaultID) bool {
		return slices.ContainsFunc(d.Snapshots, func(hs meta.HostSnapshot) bool { return hs.Vault == v })
	}
	reps, err := s.fsm.Replications()
	if err != nil {
		return d, err
	}
	for _, r := range reps {
		if inVault(r.Vault) {
			d.Replications = append(d.Replications, "job "+r.Name)
		}
	}
	certs, err := s.fsm.IssuedCerts()
	if err != nil {
		return d, err
	}
	revs, _, err := s.fsm.Revocations()
	if err != nil {
		return d, err
	}
	for _, c := range certs {
		if c.Role != meta.CertRoleReplication || c.State(now, revs) == meta.CertRevoked || c.State(now, revs) == meta.CertExpired {
			continue
		}
		if slices.ContainsFunc(c.Vaults, func(v string) bool { return inVault(meta.VaultID(v)) }) {
			d.Replications = append(d.Replications, "certificate "+c.Principal)
		}
	}
	return d, nil
}

// RequestHostRun implements meta.HostAdmin.
func (s *Server) RequestHostRun(ctx context.Context, host string) (time.Time, error) {
	if err := s.leaderWrite(); err != nil {
		return time.Time{}, err
	}
	res, err := s.propose(timeoutOf(ctx), command.RequestHostRun{Host: host, By: meta.PrincipalFrom(ctx)})
	if err != nil {
		return time.Time{}, fmt.Errorf("server: final snapshot of %s: %w", host, err)
	}
	return res.(time.Time), nil
}

// DecommissionHost implements meta.HostAdmin: the retirement (one entry, refused while a
// job of the host runs), then the revocation of every certificate of the host's
// principal issued until now (a RevokeCert entry: its key wraps go and a key rotation
// becomes due). Both are audited.
func (s *Server) DecommissionHost(ctx context.Context, d meta.HostDecommission) (meta.Agent, error) {
	if err := s.leaderWrite(); err != nil {
		return meta.Agent{}, err
	}
	if err := meta.ValidateHostDecommission(d); err != nil {
		return meta.Agent{}, err
	}
	// The two-person rule: a decommission (meta.OpDecommission), or, since it revokes
	// the principal's certificates, the revocation of an admin's when the host's name may
	// be one (meta.OpRevokeAdmin). The whole request is stored and executed on approval.
	if err := s.gateDecommissionHost(ctx, d); err != nil {
		return meta.Agent{}, err
	}
	res, err := s.propose(timeoutOf(ctx), command.RetireHost{Decommission: d, By: meta.PrincipalFrom(ctx)})
	if err != nil {
		return meta.Agent{}, fmt.Errorf("server: decommission %s: %w", d.Host, err)
	}
	a := res.(meta.Agent)
	reason := "host decommissioned"
	if d.Reason != "" {
		reason += ": " + d.Reason
	}
	if _, err := s.propose(timeoutOf(ctx), command.RevokeCert{Revocation: meta.Revocation{Principal: d.Host, Reason: reason}, By: meta.PrincipalFrom(ctx)}); err != nil {
		return a, fmt.Errorf("server: decommission %s: retired, but its certificates are not revoked (revoke them: coffer admin cert revoke --principal %s): %w", d.Host, d.Host, err)
	}
	return a, nil
}

// ReinstateHost implements meta.HostAdmin.
func (s *Server) ReinstateHost(ctx context.Context, host string) (meta.Agent, error) {
	if err := s.leaderWrite(); err != nil {
		return meta.Agent{}, err
	}
	res, err := s.propose(timeoutOf(ctx), command.ReinstateHost{Host: host, By: meta.PrincipalFrom(ctx)})
	if err != nil {
		return meta.Agent{}, fmt.Errorf("server: reinstate %s: %w", host, err)
	}
	return res.(meta.Agent), nil
}

// expireRetiredHosts, in the retention round, forgets the snapshots of each retired
// host whose keep window ended (one audited entry per host; locked and held snapshots
// stay until a later round finds them free).
func (s *Server) expireRetiredHosts(ctx context.Context) error {
	agents, err := s.fsm.Agents()
	if err != nil {
		return err
	}
	now := s.fsm.Now()
	var errs []error
	for _, a := range agents {
		r := a.Retired
		if r == nil || r.Expired != nil || r.KeepUntil.IsZero() || now.Before(r.KeepUntil) {
			continue
		}
		if free, err := s.hostHasFreeSnapshots(a, now); err != nil || !free {
			if err != nil {
				errs = append(errs, err)
			}
			continue
		}
		res, err := s.propose(timeoutOf(ctx), command.ExpireRetiredHost{Host: a.Host})
		if err != nil {
			errs = append(errs, fmt.Errorf("host %s: %w", a.Host, err))
			continue
		}
		x := res.(meta.HostExpiry)
		s.log.Info("retired host's snapshots expired", "host", a.Host, "removed", len(x.Removed), "kept", len(x.Kept))
	}
	if len(errs) > 0 {
		return fmt.Errorf("server: expire retired hosts: %v", errs)
	}
	return nil
}

// hostHasFreeSnapshots reports whether the expiry of host has something to do: a
// snapshot no lock or hold protects, or none left at all (the retirement is then marked
// expired).
func (s *Server) hostHasFreeSnapshots(a meta.Agent, now time.Time) (bool, error) {
	vaults, err := s.fsm.Vaults()
	if err != nil {
		return false, err
	}
	jobs, err := s.fsm.Jobs()
	if err != nil {
		return false, err
	}
	owns := meta.HostSnapshots(a.Host, &a, jobs)
	any := false
	for _, v := range vaults {
		if v.Deleted != nil {
			continue
		}
		snaps, err := s.fsm.Snapshots(v.ID)
		if err != nil {
			return false, err
		}
		if slices.ContainsFunc(snaps, func(sn meta.Snapshot) bool { return owns(sn) && meta.SnapshotProtection(sn, now) == "" }) {
			return true, nil
		}
		any = any || slices.ContainsFunc(snaps, owns)
	}
	return !any, nil
}
