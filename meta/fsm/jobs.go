package fsm

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
)

// Keys of backup policies ("bp/<name>"), jobs ("jb/<job ID>"), agents ("ag/<name>") and
// the policy version (the raft index of the last change of a policy or of a host's
// labels).
const (
	prefixPolicy     = "bp/"
	prefixJob        = "jb/"
	prefixAgent      = "ag/"
	keyPolicyVersion = "meta/policyver"
)

func policyKey(name string) string { return prefixPolicy + name }

func jobKey(id string) string { return prefixJob + id }

func agentKey(host string) string { return prefixAgent + host }

func knownJobKey(k string) bool {
	switch {
	case k == keyPolicyVersion:
		return true
	case strings.HasPrefix(k, prefixPolicy):
		return meta.ValidatePolicyName(k[len(prefixPolicy):]) == nil
	case strings.HasPrefix(k, prefixJob):
		return meta.ValidateJobID(k[len(prefixJob):]) == nil
	case strings.HasPrefix(k, prefixAgent):
		return meta.ValidateAgentName(k[len(prefixAgent):]) == nil
	}
	return false
}

// applyJobs applies the policy, job and heartbeat commands. Policy changes are audited,
// success or refusal; job and heartbeat writes only when refused (the job records are
// their own trace).
func (f *FSM) applyJobs(b *pebble.Batch, index uint64, body command.Body, now time.Time) (any, error) {
	var (
		entry   meta.AuditEntry
		v       any
		err     error
		always  bool
		audited = true
	)
	switch c := body.(type) {
	case command.PutPolicy:
		action := "policy update"
		if c.Create {
			action = "policy create"
		}
		entry = meta.AuditEntry{Principal: c.By.Name, Role: c.By.Role, Action: action, Target: "policy " + c.Policy.Name}
		always = true
		v, err = f.putPolicy(b, index, c, now)
	case command.DeletePolicy:
		entry = meta.AuditEntry{Principal: c.By.Name, Role: c.By.Role, Action: "policy delete", Target: "policy " + c.Name}
		always = true
		err = f.deletePolicy(b, index, c)
	case command.StartJob:
		entry = meta.AuditEntry{Principal: c.By.Name, Role: c.By.Role, Action: "job start", Vault: c.Start.Vault,
			Target: "host " + c.Start.Host + " policy " + c.Start.Policy}
		v, err = f.startJob(b, index, c, now)
	case command.ReportJob:
		entry = meta.AuditEntry{Principal: c.By.Name, Role: c.By.Role, Action: "job report", Target: "job " + c.Report.ID}
		v, err = f.reportJob(b, c, now)
	case command.Heartbeat:
		entry = meta.AuditEntry{Principal: c.By.Name, Role: c.By.Role, Action: "agent heartbeat", Target: "host " + c.Heartbeat.Host}
		err = f.heartbeat(b, c, now)
	case command.ExpireJobs:
		audited = false
		v, err = f.expireJobs(b, c, now)
	case command.CompactJobs:
		audited = false
		v, err = f.compactJobs(b, c, now)
	default:
		return nil, fmt.Errorf("%w: unhandled job command %T", meta.ErrInvalid, body)
	}
	if audited && (always || err != nil) {
		if aerr := f.writeAudit(b, index, now, entry, err, ""); aerr != nil && err == nil {
			return nil, aerr
		}
	}
	if err != nil {
		return nil, err
	}
	return v, nil
}

func (f *FSM) setPolicyVersion(b *pebble.Batch, index uint64) {
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], index)
	must(b.Set([]byte(keyPolicyVersion), buf[:], nil))
}

func (f *FSM) putPolicy(b *pebble.Batch, index uint64, c command.PutPolicy, now time.Time) (meta.BackupPolicy, error) {
	if err := c.By.Authorize(meta.ActBackupPolicy, ""); err != nil {
		return meta.BackupPolicy{}, err
	}
	p := c.Policy
	if err := meta.ValidateBackupPolicy(p); err != nil {
		return meta.BackupPolicy{}, err
	}
	key := policyKey(p.Name)
	var old meta.BackupPolicy
	raw, ok, err := getCopy(b, key)
	if err != nil {
		return meta.BackupPolicy{}, err
	}
	switch {
	case ok && c.Create:
		return meta.BackupPolicy{}, fmt.Errorf("policy %s: %w (change it with coffer admin policy update)", p.Name, meta.ErrExists)
	case !ok && !c.Create:
		return meta.BackupPolicy{}, fmt.Errorf("policy %s: %w (create it with coffer admin policy create)", p.Name, meta.ErrNotFound)
	case ok:
		if err := f.codec.Unmarshal(raw, &old); err != nil {
			return meta.BackupPolicy{}, fmt.Errorf("fsm: decode policy %s: %w", p.Name, err)
		}
		p.Created = old.Created
	default:
		p.Created = now
	}
	p.Updated, p.By, p.Version = now, c.By.Name, index
	f.setPolicyVersion(b, index)
	return p, f.put(b, key, p)
}

func (f *FSM) deletePolicy(b *pebble.Batch, index uint64, c command.DeletePolicy) error {
	if err := c.By.Authorize(meta.ActBackupPolicy, ""); err != nil {
		return err
	}
	if err := meta.ValidatePolicyName(c.Name); err != nil {
		return err
	}
	key := policyKey(c.Name)
	if _, ok, err := getCopy(b, key); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("policy %s: %w", c.Name, meta.ErrNotFound)
	}
	must(b.Delete([]byte(key), nil))
	f.setPolicyVersion(b, index)
	return nil
}

// startJob opens a job for the host the principal may act for. An agent may run only
// the policies that apply to it, in the vaults of its scope.
func (f *FSM) startJob(b *pebble.Batch, index uint64, c command.StartJob, now time.Time) (meta.Job, error) {
	s := c.Start
	if err := meta.ValidateJobStart(s); err != nil {
		return meta.Job{}, err
	}
	host, err := meta.JobHost(c.By, s.Host)
	if err != nil {
		return meta.Job{}, err
	}
	if s.Vault != "" {
		if err := c.By.Authorize(meta.ActCommit, s.Vault); err != nil {
			return meta.Job{}, err
		}
	}
	if s.Policy != "" && c.By.Role == meta.RoleBackupAgent {
		var p meta.BackupPolicy
		raw, ok, err := getCopy(b, policyKey(s.Policy))
		if err != nil {
			return meta.Job{}, err
		}
		if !ok {
			return meta.Job{}, fmt.Errorf("policy %s: %w", s.Policy, meta.ErrNotFound)
		}
		if err := f.codec.Unmarshal(raw, &p); err != nil {
			return meta.Job{}, fmt.Errorf("fsm: decode policy %s: %w", s.Policy, err)
		}
		labels, err := f.hostLabels(b, host)
		if err != nil {
			return meta.Job{}, err
		}
		if !p.AppliesTo(host, labels) {
			return meta.Job{}, fmt.Errorf("%w: policy %s does not apply to host %s", meta.ErrDenied, s.Policy, host)
		}
	}
	kind := s.Kind
	if kind == "" {
		kind = meta.JobBackup
	}
	j := meta.Job{ID: meta.JobID(index), Host: host, Policy: s.Policy, Vault: s.Vault, Kind: kind, Trigger: s.Trigger,
		Status: meta.JobRunning, Start: now, Updated: now, Scheduled: s.Scheduled, AgentVersion: s.Version}
	return j, f.put(b, jobKey(j.ID), j)
}

// ownJob reads job id for an update by principal by: it must exist, and an agent may
// touch only its own.
func (f *FSM) ownJob(b *pebble.Batch, by meta.Principal, id string) (meta.Job, error) {
	var j meta.Job
	if err := meta.ValidateJobID(id); err != nil {
		return j, err
	}
	raw, ok, err := getCopy(b, jobKey(id))
	if err != nil {
		return j, err
	}
	if !ok {
		return j, fmt.Errorf("job %s: %w", id, meta.ErrNotFound)
	}
	if err := f.codec.Unmarshal(raw, &j); err != nil {
		return j, fmt.Errorf("fsm: decode job %s: %w", id, err)
	}
	if _, err := meta.JobHost(by, j.Host); err != nil {
		return meta.Job{}, fmt.Errorf("job %s: %w", id, err)
	}
	return j, nil
}

func (f *FSM) reportJob(b *pebble.Batch, c command.ReportJob, now time.Time) (meta.Job, error) {
	r := c.Report
	if err := meta.ValidateJobReport(r); err != nil {
		return meta.Job{}, err
	}
	j, err := f.ownJob(b, c.By, r.ID)
	if err != nil {
		return meta.Job{}, err
	}
	if j.Done() {
		return meta.Job{}, fmt.Errorf("%w: job %s already ended (%s at %s)", meta.ErrInvalid, j.ID, j.Status, j.End.Format(time.RFC3339))
	}
	j.Stats, j.Updated = r.Stats, now
	if r.Attempts > 0 {
		j.Attempts = r.Attempts
	}
	if r.Final {
		j.Status, j.Error, j.Snapshot, j.End = r.Status, truncateJobError(r.Error), r.Snapshot, now
		if r.Report != nil && j.Kind == meta.JobVerify {
			j.Report = r.Report
		}
	}
	return j, f.put(b, jobKey(j.ID), j)
}

func truncateJobError(s string) string {
	if len(s) <= meta.MaxJobError {
		return s
	}
	return s[:meta.MaxJobError-3] + "..."
}

// heartbeat records the agent and refreshes its running jobs; a heartbeat naming a
// job of another host is refused whole.
func (f *FSM) heartbeat(b *pebble.Batch, c command.Heartbeat, now time.Time) error {
	hb := c.Heartbeat
	host, err := meta.JobHost(c.By, hb.Host)
	if err != nil {
		return err
	}
	if len(hb.Running) > 1024 || len(hb.NextRuns) > 1024 || len(hb.Version) > 64 || len(hb.Hostname) > 255 {
		return fmt.Errorf("%w: heartbeat of %s too large", meta.ErrInvalid, host)
	}
	for _, r := range hb.NextRuns {
		if len(r.Kind) > 16 {
			return fmt.Errorf("%w: heartbeat of %s: next run kind %.20q too long", meta.ErrInvalid, host, r.Kind)
		}
	}
	jobs := make([]meta.Job, 0, len(hb.Running))
	for _, id := range hb.Running {
		j, err := f.ownJob(b, c.By, id)
		if err != nil {
			return err
		}
		if j.Host != host {
			return fmt.Errorf("%w: heartbeat of host %s names job %s of host %s", meta.ErrDenied, host, id, j.Host)
		}
		if !j.Done() {
			j.Updated = now
			jobs = append(jobs, j)
		}
	}
	for _, j := range jobs {
		if err := f.put(b, jobKey(j.ID), j); err != nil {
			return err
		}
	}
	a := meta.Agent{Host: host, FirstSeen: now}
	if raw, ok, err := getCopy(b, agentKey(host)); err != nil {
		return err
	} else if ok {
		if err := f.codec.Unmarshal(raw, &a); err != nil {
			return fmt.Errorf("fsm: decode agent %s: %w", host, err)
		}
	}
	a.Principal, a.Hostname, a.Version, a.LastSeen, a.NextRuns = c.By.Name, hb.Hostname, hb.Version, now, hb.NextRuns
	a.LastJob, a.LastStatus, a.Labels = "", "", nil // filled on read
	return f.put(b, agentKey(host), a)
}

// expireJobs fails each listed job that is still running and was last updated at least
// c.Timeout ago.
func (f *FSM) expireJobs(b *pebble.Batch, c command.ExpireJobs, now time.Time) ([]meta.Job, error) {
	if c.Timeout <= 0 {
		return nil, fmt.Errorf("%w: job timeout %v must be positive", meta.ErrInvalid, time.Duration(c.Timeout))
	}
	timeout := time.Duration(c.Timeout)
	var out []meta.Job
	for _, id := range c.IDs {
		j, err := f.ownJob(b, meta.SystemPrincipal(), id)
		if err != nil {
			continue // compacted or never existed: nothing to expire
		}
		if j.Done() || now.Sub(j.Updated) < timeout {
			continue
		}
		j.Status, j.End = meta.JobFailed, now
		j.Error = fmt.Sprintf("agent %s sent no heartbeat or progress for %v (last at %s): marked failed by the meta leader",
			j.Host, timeout, j.Updated.Format(time.RFC3339))
		if err := f.put(b, jobKey(j.ID), j); err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, nil
}

// compactJobs deletes the records of jobs that ended more than c.Retain ago and
// returns how many.
func (f *FSM) compactJobs(b *pebble.Batch, c command.CompactJobs, now time.Time) (int, error) {
	if c.Retain <= 0 {
		return 0, fmt.Errorf("%w: job retention %v must be positive", meta.ErrInvalid, time.Duration(c.Retain))
	}
	cutoff := now.Add(-time.Duration(c.Retain))
	return deleteWhere(f, b, prefixJob, func(j meta.Job) bool { return j.Done() && j.End.Before(cutoff) },
		func(j meta.Job) error {
			must(b.Delete([]byte(jobKey(j.ID)), nil))
			return nil
		})
}

// hostLabels returns the labels of the host: those of the newest enrollment token it
// used.
func (f *FSM) hostLabels(r iterable, host string) (map[string]string, error) {
	tokens, err := decodeAll[meta.EnrollToken](f, r, prefixEnrollToken)
	if err != nil {
		return nil, err
	}
	var best *meta.EnrollToken
	for i, t := range tokens {
		if t.Used && t.Principal == host && (best == nil || t.UsedAt.After(best.UsedAt)) {
			best = &tokens[i]
		}
	}
	if best == nil {
		return nil, nil
	}
	return best.Labels, nil
}

// HostLabels returns the labels a host's enrollment gave it (nil: none).
func (f *FSM) HostLabels(host string) (map[string]string, error) {
	h, err := f.acquire()
	if err != nil {
		return nil, err
	}
	defer func() { _ = h.unref() }()
	return f.hostLabels(h.db, host)
}

// PolicyVersion returns the raft index of the last change of a policy or of a host's
// labels (0: none yet).
func (f *FSM) PolicyVersion() (uint64, error) {
	h, err := f.acquire()
	if err != nil {
		return 0, err
	}
	defer func() { _ = h.unref() }()
	raw, ok, err := getCopy(h.db, keyPolicyVersion)
	if err != nil || !ok {
		return 0, err
	}
	if len(raw) != 8 {
		return 0, fmt.Errorf("fsm: policy version: %d bytes, want 8", len(raw))
	}
	return binary.BigEndian.Uint64(raw), nil
}

// BackupPolicies returns every backup policy sorted by name.
func (f *FSM) BackupPolicies() ([]meta.BackupPolicy, error) {
	return scanAll[meta.BackupPolicy](f, prefixPolicy)
}

// Jobs returns every job record, oldest first (IDs follow the raft index).
func (f *FSM) Jobs() ([]meta.Job, error) {
	return scanAll[meta.Job](f, prefixJob)
}

// Job returns one job or an error wrapping meta.ErrNotFound.
func (f *FSM) Job(id string) (meta.Job, error) {
	var j meta.Job
	if err := meta.ValidateJobID(id); err != nil {
		return j, err
	}
	ok, err := f.getValue(jobKey(id), &j)
	if err == nil && !ok {
		err = fmt.Errorf("fsm: job %s: %w", id, meta.ErrNotFound)
	}
	return j, err
}

// Agents returns every agent record sorted by host, with its labels and its newest
// job.
func (f *FSM) Agents() ([]meta.Agent, error) {
	agents, err := scanAll[meta.Agent](f, prefixAgent)
	if err != nil {
		return nil, err
	}
	jobs, err := f.Jobs()
	if err != nil {
		return nil, err
	}
	last := map[string]meta.Job{}
	for _, j := range jobs {
		last[j.Host] = j // ascending IDs: the newest wins
	}
	for i := range agents {
		a := &agents[i]
		if j, ok := last[a.Host]; ok {
			a.LastJob, a.LastStatus = j.ID, j.Status
		}
		if a.Labels, err = f.HostLabels(a.Host); err != nil {
			return nil, err
		}
	}
	slices.SortFunc(agents, func(x, y meta.Agent) int { return cmp.Compare(x.Host, y.Host) })
	return agents, nil
}
