package fsm

import (
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
)

// applyHost executes the host decommission commands (issue 19, part 3).
func (f *FSM) applyHost(b *pebble.Batch, index uint64, body command.Body, now time.Time) (any, error) {
	var entry meta.AuditEntry
	var v any
	var err error
	switch c := body.(type) {
	case command.RetireHost:
		d := c.Decommission
		entry = meta.AuditEntry{Principal: c.By.Name, Role: c.By.Role, Action: "host decommission", Target: d.Host, Reason: d.Reason}
		v, err = f.retireHost(b, index, c, now)
	case command.ReinstateHost:
		entry = meta.AuditEntry{Principal: c.By.Name, Role: c.By.Role, Action: "host reinstate", Target: c.Host}
		v, err = f.reinstateHost(b, index, c, now)
	case command.RequestHostRun:
		entry = meta.AuditEntry{Principal: c.By.Name, Role: c.By.Role, Action: "host final snapshot request", Target: c.Host}
		v, err = f.requestHostRun(b, index, c, now)
	case command.ExpireRetiredHost:
		sys := meta.SystemPrincipal()
		entry = meta.AuditEntry{Principal: sys.Name, Role: sys.Role, Action: "host expire", Target: c.Host}
		var x meta.HostExpiry
		x, err = f.expireRetiredHost(b, c.Host, now)
		if err == nil {
			entry.Reason = fmt.Sprintf("removed %d snapshots after the keep window; %d kept by a lock or hold", len(x.Removed), len(x.Kept))
			for _, s := range x.Removed {
				entry.Reason += " " + s.ID.Str()
			}
		}
		v = x
	default:
		return nil, fmt.Errorf("%w: unhandled host command %T", meta.ErrInvalid, body)
	}
	if aerr := f.writeAudit(b, index, now, entry, err, ""); aerr != nil && err == nil {
		return nil, aerr
	}
	return v, err
}

// hostRecord reads a host's agent record through the batch (ok false: none).
func (f *FSM) hostRecord(b *pebble.Batch, host string) (meta.Agent, bool, error) {
	var a meta.Agent
	raw, ok, err := getCopy(b, agentKey(host))
	if err != nil || !ok {
		return a, ok, err
	}
	if err := f.codec.Unmarshal(raw, &a); err != nil {
		return a, false, fmt.Errorf("fsm: decode agent %s: %w", host, err)
	}
	return a, true, nil
}

func (f *FSM) retireHost(b *pebble.Batch, index uint64, c command.RetireHost, now time.Time) (meta.Agent, error) {
	d := c.Decommission
	if err := c.By.Authorize(meta.ActRevoke, ""); err != nil {
		return meta.Agent{}, err
	}
	if err := meta.ValidateHostDecommission(d); err != nil {
		return meta.Agent{}, err
	}
	jobs, err := decodeAll[meta.Job](f, b, prefixJob)
	if err != nil {
		return meta.Agent{}, err
	}
	for _, j := range jobs {
		if j.Host == d.Host && !j.Done() {
			return meta.Agent{}, fmt.Errorf("%w: host %s: job %s (%s of policy %q) is running: decommission once it ended", meta.ErrInvalid, d.Host, j.ID, j.Kind, j.Policy)
		}
	}
	a, ok, err := f.hostRecord(b, d.Host)
	if err != nil {
		return meta.Agent{}, err
	}
	if !ok {
		a = meta.Agent{Host: d.Host, Principal: d.Host, FirstSeen: now, LastSeen: now}
	}
	if a.Retired != nil {
		return meta.Agent{}, fmt.Errorf("%w: host %s was decommissioned at %s", meta.ErrExists, d.Host, a.Retired.At.Format(time.RFC3339))
	}
	rb := d.Rollback
	if rb == 0 {
		rb = meta.DefaultHostRollback
	}
	r := &meta.HostRetirement{At: now, By: c.By.Name, Reason: d.Reason, RollbackUntil: now.Add(rb)}
	if d.KeepFor > 0 {
		r.KeepUntil = now.Add(d.KeepFor)
	}
	a.Retired, a.NextRuns = r, nil
	f.setPolicyVersion(b, index)
	return a, f.put(b, agentKey(a.Host), a)
}

func (f *FSM) reinstateHost(b *pebble.Batch, index uint64, c command.ReinstateHost, now time.Time) (meta.Agent, error) {
	if err := c.By.Authorize(meta.ActRevoke, ""); err != nil {
		return meta.Agent{}, err
	}
	a, ok, err := f.hostRecord(b, c.Host)
	if err != nil {
		return meta.Agent{}, err
	}
	switch {
	case !ok || a.Retired == nil:
		return meta.Agent{}, fmt.Errorf("%w: host %s is not decommissioned", meta.ErrInvalid, c.Host)
	case !now.Before(a.Retired.RollbackUntil):
		return meta.Agent{}, fmt.Errorf("%w: host %s: its rollback window ended at %s", meta.ErrInvalid, c.Host, a.Retired.RollbackUntil.Format(time.RFC3339))
	case a.Retired.Expired != nil:
		return meta.Agent{}, fmt.Errorf("%w: host %s: its snapshots expired at %s", meta.ErrInvalid, c.Host, a.Retired.Expired.Format(time.RFC3339))
	}
	a.Retired = nil
	f.setPolicyVersion(b, index)
	return a, f.put(b, agentKey(a.Host), a)
}

func (f *FSM) requestHostRun(b *pebble.Batch, index uint64, c command.RequestHostRun, now time.Time) (time.Time, error) {
	if err := c.By.Authorize(meta.ActRevoke, ""); err != nil {
		return time.Time{}, err
	}
	a, ok, err := f.hostRecord(b, c.Host)
	switch {
	case err != nil:
		return time.Time{}, err
	case !ok:
		return time.Time{}, fmt.Errorf("host %s has never sent a heartbeat (no agent runs there to ask): %w", c.Host, meta.ErrNotFound)
	case a.Retired != nil:
		return time.Time{}, fmt.Errorf("%w: host %s is decommissioned", meta.ErrInvalid, c.Host)
	}
	a.RunRequested = now
	f.setPolicyVersion(b, index)
	return now, f.put(b, agentKey(a.Host), a)
}

// expireRetiredHost forgets the snapshots of a retired host whose keep window ended,
// in every vault that is not deleted, except those a lock or hold protects; when none
// is left the retirement is marked expired.
func (f *FSM) expireRetiredHost(b *pebble.Batch, host string, now time.Time) (meta.HostExpiry, error) {
	x := meta.HostExpiry{Host: host, Removed: []meta.HostSnapshot{}, Kept: []meta.HostSnapshot{}}
	a, ok, err := f.hostRecord(b, host)
	switch {
	case err != nil:
		return x, err
	case !ok || a.Retired == nil:
		return x, fmt.Errorf("%w: host %s is not decommissioned", meta.ErrInvalid, host)
	case a.Retired.KeepUntil.IsZero() || now.Before(a.Retired.KeepUntil):
		return x, fmt.Errorf("%w: host %s: its snapshots are kept (until %s)", meta.ErrInvalid, host, a.Retired.KeepUntil.Format(time.RFC3339))
	case a.Retired.Expired != nil:
		return x, fmt.Errorf("%w: host %s: its snapshots already expired", meta.ErrExists, host)
	}
	vaults, err := decodeAll[meta.Vault](f, b, prefixVault)
	if err != nil {
		return x, err
	}
	jobs, err := decodeAll[meta.Job](f, b, prefixJob)
	if err != nil {
		return x, err
	}
	owns := meta.HostSnapshots(host, &a, jobs)
	sys := meta.SystemPrincipal()
	for _, v := range vaults {
		if v.Deleted != nil {
			continue
		}
		_, snaps, err := f.vaultAndSnapshots(b, v.ID)
		if err != nil {
			return x, err
		}
		for _, s := range snaps {
			if !owns(s) {
				continue
			}
			hs := meta.HostSnapshot{Vault: v.ID, ID: s.ID, Time: s.Time, Protected: meta.SnapshotProtection(s, now)}
			if hs.Protected != "" || meta.CheckDelete(sys, s, now, meta.Bypass{}) != nil {
				x.Kept = append(x.Kept, hs)
				continue
			}
			must(b.Delete([]byte(snapshotKey(v.ID, s.ID)), nil))
			x.Removed = append(x.Removed, hs)
		}
	}
	if len(x.Kept) == 0 {
		t := now
		a.Retired.Expired = &t
		if err := f.put(b, agentKey(a.Host), a); err != nil {
			return x, err
		}
	}
	return x, nil
}
