package meta

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// Backup policies, agents and jobs (issue 15). A policy says what an agent backs up and
// when; the agent (`coffer agent run`) records each run as a Job; the meta leader marks
// the jobs of agents that went silent failed and drops job records older than the
// retention. All of it lives in Raft.

// Actions for policies and jobs.
const (
	// ActBackupPolicy creates, changes and deletes backup policies (admin only).
	ActBackupPolicy = Action("backup-policy")
	// ActJobsAll reads every host's jobs, policies and agent records (admin only; an
	// agent reads its own).
	ActJobsAll = Action("jobs-all")
)

// Defaults and bounds of policies and jobs.
const (
	// DefaultJobRetention is how long job records are kept after they end.
	DefaultJobRetention = 90 * 24 * time.Hour
	// DefaultJobTimeout is how long a running job may go without a heartbeat or progress
	// report before the leader marks it failed.
	DefaultJobTimeout = 5 * time.Minute
	// MaxJobError bounds a job's error text (longer ones are cut).
	MaxJobError   = 4096
	maxPolicyName = 64
	maxPolicyList = 256 // paths, devices, excludes, hosts, labels, tags each
)

// Job triggers (Job.Trigger).
const (
	TriggerSchedule = "schedule" // started by the agent's schedule
	TriggerManual   = "manual"   // a `coffer backup` typed by someone
)

// Job kinds (Job.Kind).
const (
	JobBackup = "backup"
	JobVerify = "verify"
)

// Job statuses (Job.Status). A job is running until its final report, or until the
// leader expires it (JobFailed, error "agent ... silent ...").
const (
	JobRunning   = "running"
	JobCompleted = "completed"
	JobPartial   = "partially failed"
	JobFailed    = "failed"
)

// PolicyLock is the retention lock a policy puts on each snapshot it makes: Mode for
// For of cluster time from the commit (within the vault's lock limit).
type PolicyLock struct {
	Mode LockMode      `cbor:"mode" json:"mode"`
	For  time.Duration `cbor:"for" json:"for_ns"`
}

// BackupPolicy is what a set of hosts backs up and when. A host runs the policy when
// its name is in Hosts or its labels (given by the enrollment token) include every
// pair of Labels; a policy with neither applies to no host.
type BackupPolicy struct {
	Name string `cbor:"name" json:"name"`
	// Schedule is a cron expression: five fields (minute hour day-of-month month
	// day-of-week), six with a leading seconds field, or a descriptor (@hourly, @daily,
	// @every 90m). Times are UTC.
	Schedule string `cbor:"schedule" json:"schedule"`
	// Paths are backed up into one snapshot; Device (exclusive with Paths) is a block
	// device or image captured with `backup --block`.
	Paths    []string `cbor:"paths,omitempty" json:"paths,omitempty"`
	Device   string   `cbor:"device,omitempty" json:"device,omitempty"`
	Excludes []string `cbor:"excludes,omitempty" json:"excludes,omitempty"`
	Tags     []string `cbor:"tags,omitempty" json:"tags,omitempty"`
	// PreHook and PostHook run around the capture (client/hooks); HookTimeout 0 means
	// hooks.DefaultTimeout.
	PreHook     string        `cbor:"pre_hook,omitempty" json:"pre_hook,omitempty"`
	PostHook    string        `cbor:"post_hook,omitempty" json:"post_hook,omitempty"`
	HookTimeout time.Duration `cbor:"hook_timeout,omitempty" json:"hook_timeout_ns,omitempty"`
	// Retention is the keep policy for this policy's snapshots (nil: the vault's).
	Retention *Policy `cbor:"retention,omitempty" json:"retention,omitempty"`
	// Lock, when set, locks each snapshot the policy makes.
	Lock *PolicyLock `cbor:"lock,omitempty" json:"lock,omitempty"`
	// Hosts and Labels select the hosts (agent names) that run the policy.
	Hosts  []string          `cbor:"hosts,omitempty" json:"hosts,omitempty"`
	Labels map[string]string `cbor:"labels,omitempty" json:"labels,omitempty"`
	// Set by the FSM: creation and last change (cluster time), who made the last change,
	// and the raft index of the last change.
	Created time.Time `cbor:"created" json:"created"`
	Updated time.Time `cbor:"updated" json:"updated"`
	By      string    `cbor:"by" json:"by"`
	Version uint64    `cbor:"version" json:"version"`
	// Verify, when set, schedules verification of the snapshots the policy makes.
	Verify *VerifySchedule `cbor:"verify,omitempty" json:"verify,omitempty"`
	// Compression is the compression policy of the policy's backups, one of
	// PolicyCompressions ("" is auto, the agent's default): `coffer backup
	// --compression`, applied by the agent daemon.
	Compression string `cbor:"compression,omitempty" json:"compression,omitempty"`
}

// PolicyCompressions are the compression policies a backup policy may name, as
// `coffer backup --compression` takes them (client/crypt CompressionNames, which a test
// of the agent keeps in step); immutable.
var PolicyCompressions = []string{"auto", "fast", "max", "off"}

// cronParser accepts an optional seconds field and descriptors.
func cronParser() cron.Parser {
	return cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)
}

// ParseSchedule parses a policy's cron expression (see BackupPolicy.Schedule).
func ParseSchedule(spec string) (cron.Schedule, error) {
	if strings.TrimSpace(spec) == "" {
		return nil, fmt.Errorf("%w: empty schedule (want a cron expression such as \"0 2 * * *\" or \"@hourly\")", ErrInvalid)
	}
	if strings.HasPrefix(strings.TrimSpace(spec), "TZ=") || strings.HasPrefix(strings.TrimSpace(spec), "CRON_TZ=") {
		return nil, fmt.Errorf("%w: schedule %q: time zones are not supported (schedules are UTC)", ErrInvalid, spec)
	}
	s, err := cronParser().Parse(spec)
	if err != nil {
		return nil, fmt.Errorf("%w: schedule %q: %v", ErrInvalid, spec, err)
	}
	return s, nil
}

// ValidatePolicyName checks a policy name: 1 to 64 letters, digits, '.', '-', '_',
// starting with a letter or digit.
func ValidatePolicyName(name string) error {
	if name == "" || len(name) > maxPolicyName {
		return fmt.Errorf("%w: policy name %q must have 1 to %d characters", ErrInvalid, name, maxPolicyName)
	}
	for i, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || (i > 0 && (r == '.' || r == '-' || r == '_'))) {
			return fmt.Errorf("%w: policy name %q: character %q not allowed (letters, digits, '.', '-', '_'; a letter or digit first)", ErrInvalid, name, r)
		}
	}
	return nil
}

// ValidateLabels checks host labels or a label selector: keys 1 to 63 letters, digits,
// '.', '-', '_', '/'; values up to 63 of the same (may be empty).
func ValidateLabels(l map[string]string) error {
	if len(l) > maxPolicyList {
		return fmt.Errorf("%w: %d labels (at most %d)", ErrInvalid, len(l), maxPolicyList)
	}
	ok := func(s string) bool {
		return strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_/") == "" && len(s) <= 63
	}
	for _, k := range slices.Sorted(maps.Keys(l)) {
		if k == "" || !ok(k) {
			return fmt.Errorf("%w: label key %q (1 to 63 letters, digits, '.', '-', '_', '/')", ErrInvalid, k)
		}
		if !ok(l[k]) {
			return fmt.Errorf("%w: label %s=%q: value must be up to 63 letters, digits, '.', '-', '_', '/'", ErrInvalid, k, l[k])
		}
	}
	return nil
}

// ParseLabel parses "key=value" (value may be empty).
func ParseLabel(s string) (string, string, error) {
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return "", "", fmt.Errorf("%w: label %q: want key=value", ErrInvalid, s)
	}
	if err := ValidateLabels(map[string]string{k: v}); err != nil {
		return "", "", err
	}
	return k, v, nil
}

// ValidateBackupPolicy checks a policy as an admin gives it (the FSM's fields are
// ignored): a valid name and schedule, absolute paths or one absolute device (not
// both), valid hosts and labels, at least one of them, a valid retention and lock.
func ValidateBackupPolicy(p BackupPolicy) error {
	if err := ValidatePolicyName(p.Name); err != nil {
		return err
	}
	if _, err := ParseSchedule(p.Schedule); err != nil {
		return fmt.Errorf("policy %s: %w", p.Name, err)
	}
	switch {
	case len(p.Paths) == 0 && p.Device == "":
		return fmt.Errorf("%w: policy %s backs up nothing: give paths (--path) or a block device (--device)", ErrInvalid, p.Name)
	case len(p.Paths) > 0 && p.Device != "":
		return fmt.Errorf("%w: policy %s: paths and a block device are exclusive (a device is captured alone, as backup --block does)", ErrInvalid, p.Name)
	case p.Device != "" && len(p.Excludes) > 0:
		return fmt.Errorf("%w: policy %s: excludes apply to paths, not to a block device", ErrInvalid, p.Name)
	}
	for what, list := range map[string][]string{"paths": p.Paths, "excludes": p.Excludes, "hosts": p.Hosts, "tags": p.Tags} {
		if len(list) > maxPolicyList {
			return fmt.Errorf("%w: policy %s: %d %s (at most %d)", ErrInvalid, p.Name, len(list), what, maxPolicyList)
		}
	}
	for _, path := range append(slices.Clone(p.Paths), p.Device) {
		if path != "" && !strings.HasPrefix(path, "/") {
			return fmt.Errorf("%w: policy %s: path %q is not absolute", ErrInvalid, p.Name, path)
		}
	}
	for _, e := range p.Excludes {
		if e == "" {
			return fmt.Errorf("%w: policy %s: empty exclude pattern", ErrInvalid, p.Name)
		}
		if _, err := filepath.Match(e, ""); err != nil {
			return fmt.Errorf("%w: policy %s: exclude pattern %q: %v", ErrInvalid, p.Name, e, err)
		}
	}
	for _, h := range p.Hosts {
		if err := ValidateAgentName(h); err != nil {
			return fmt.Errorf("policy %s: host: %w", p.Name, err)
		}
	}
	if err := ValidateLabels(p.Labels); err != nil {
		return fmt.Errorf("policy %s: %w", p.Name, err)
	}
	if p.Verify != nil {
		if err := ValidateVerifySchedule(*p.Verify); err != nil {
			return fmt.Errorf("policy %s: %w", p.Name, err)
		}
	}
	if p.Compression != "" && !slices.Contains(PolicyCompressions, p.Compression) {
		return fmt.Errorf("%w: policy %s: compression %q (want %s)", ErrInvalid, p.Name, p.Compression, strings.Join(PolicyCompressions, ", "))
	}
	if len(p.Hosts) == 0 && len(p.Labels) == 0 {
		return fmt.Errorf("%w: policy %s is assigned to no host: give --host NAME or --label key=value", ErrInvalid, p.Name)
	}
	if p.HookTimeout < 0 {
		return fmt.Errorf("%w: policy %s: negative hook timeout", ErrInvalid, p.Name)
	}
	if p.Retention != nil {
		if err := ValidatePolicy(*p.Retention); err != nil {
			return fmt.Errorf("policy %s: %w", p.Name, err)
		}
	}
	if l := p.Lock; l != nil {
		if l.Mode != Governance && l.Mode != Compliance {
			return fmt.Errorf("%w: policy %s: lock mode %q (want governance or compliance)", ErrInvalid, p.Name, l.Mode)
		}
		if l.For <= 0 {
			return fmt.Errorf("%w: policy %s: lock duration %v must be positive", ErrInvalid, p.Name, l.For)
		}
	}
	return nil
}

// AppliesTo reports whether the policy selects the host with the given name and labels.
func (p BackupPolicy) AppliesTo(host string, labels map[string]string) bool {
	if slices.Contains(p.Hosts, host) {
		return true
	}
	if len(p.Labels) == 0 {
		return false
	}
	for k, v := range p.Labels {
		if hv, ok := labels[k]; !ok || hv != v {
			return false
		}
	}
	return true
}

// HostPolicies is what an agent fetches: the policies that apply to it, its labels and
// the version of the policy state (Version changes whenever a policy or a host's labels
// change; the agent re-reads when it does).
type HostPolicies struct {
	Host     string            `cbor:"host" json:"host"`
	Labels   map[string]string `cbor:"labels,omitempty" json:"labels,omitempty"`
	Version  uint64            `cbor:"version" json:"version"`
	Policies []BackupPolicy    `cbor:"policies,omitempty" json:"policies"`
	// Unchanged is set (and Policies empty) when the caller already held Version.
	Unchanged bool      `cbor:"unchanged,omitempty" json:"unchanged,omitempty"`
	Now       time.Time `cbor:"now" json:"now"` // cluster time
	// Retired is set for a decommissioned host (it gets no policies).
	Retired bool `cbor:"retired,omitempty" json:"retired,omitempty"`
	// RunRequested is the cluster time of the newest request for a final run of the
	// host's policies (coffer admin host decommission --final-snapshot); zero: none.
	RunRequested time.Time `cbor:"run_requested,omitempty" json:"run_requested,omitempty"`
}

// JobStats are a job's figures, as its agent reports them.
type JobStats struct {
	FilesNew        int64 `cbor:"files_new,omitempty" json:"files_new"`
	FilesChanged    int64 `cbor:"files_changed,omitempty" json:"files_changed"`
	FilesUnmodified int64 `cbor:"files_unmodified,omitempty" json:"files_unmodified"`
	FilesSkipped    int64 `cbor:"files_skipped,omitempty" json:"files_skipped"`
	Dirs            int64 `cbor:"dirs,omitempty" json:"dirs"`
	BytesProcessed  int64 `cbor:"bytes_processed,omitempty" json:"bytes_processed"`
	BytesRead       int64 `cbor:"bytes_read,omitempty" json:"bytes_read"`
	BytesAdded      int64 `cbor:"bytes_added,omitempty" json:"bytes_added"`
	ChunksAdded     int64 `cbor:"chunks_added,omitempty" json:"chunks_added"`
	// BytesNew is the plaintext size of the chunks the job stored (BytesAdded is their
	// size sealed, after compression): BytesNew/BytesAdded is the compression ratio of
	// the new data that the anomaly check watches (issue 15, step 4).
	BytesNew int64 `cbor:"bytes_new,omitempty" json:"bytes_new"`
	// Snapshots is how many snapshot records a replication run imported (issue 19);
	// its BytesAdded and ChunksAdded are the sealed bytes and chunks it copied.
	Snapshots int64 `cbor:"snapshots,omitempty" json:"snapshots,omitempty"`
}

// Files is the number of files the job saw (new, changed and unmodified).
func (s JobStats) Files() int64 { return s.FilesNew + s.FilesChanged + s.FilesUnmodified }

// Job is one run of a policy (or a manual backup) on one host. Times are cluster time.
type Job struct {
	// ID is "j" and the 16 hex digits of the raft index that started it (so IDs sort
	// in start order).
	ID      string  `cbor:"id" json:"id"`
	Host    string  `cbor:"host" json:"host"` // the agent's name (its certificate's principal)
	Policy  string  `cbor:"policy,omitempty" json:"policy,omitempty"`
	Vault   VaultID `cbor:"vault,omitempty" json:"vault,omitempty"`
	Kind    string  `cbor:"kind" json:"kind"`       // JobBackup or JobVerify
	Trigger string  `cbor:"trigger" json:"trigger"` // TriggerSchedule or TriggerManual
	Status  string  `cbor:"status" json:"status"`
	Error   string  `cbor:"error,omitempty" json:"error,omitempty"`
	// Attempts is how many times the agent tried (retries of transient failures).
	Attempts int       `cbor:"attempts,omitempty" json:"attempts"`
	Start    time.Time `cbor:"start" json:"start"`
	End      time.Time `cbor:"end,omitempty" json:"end,omitzero"`
	// Updated is the last start, progress report or heartbeat naming the job.
	Updated  time.Time `cbor:"updated" json:"updated"`
	Stats    JobStats  `cbor:"stats" json:"stats"`
	Snapshot string    `cbor:"snapshot,omitempty" json:"snapshot_id,omitempty"` // hex ID
	// Scheduled is when the schedule wanted the run (TriggerSchedule only).
	Scheduled time.Time `cbor:"scheduled,omitempty" json:"scheduled,omitzero"`
	// AgentVersion is the version of the agent that ran it.
	AgentVersion string `cbor:"agent_version,omitempty" json:"agent_version,omitempty"`
	// Anomaly, set by the meta leader after the job ended, says how the job's figures
	// fall outside its host and policy's history ("bytes added 41x the mean;
	// compression ratio 1.01 vs 2.6"); empty when they do not (meta/anomaly).
	Anomaly string `cbor:"anomaly,omitempty" json:"anomaly,omitempty"`
	// Report is a verify job's report (Kind JobVerify), set by its final report and never
	// changed by another job.
	Report *VerifyReport `cbor:"report,omitempty" json:"report,omitempty"`
}

// Done reports whether the job has ended.
func (j Job) Done() bool { return j.Status != JobRunning }

// Failed reports whether the job failed or partially failed.
func (j Job) Failed() bool { return j.Status == JobFailed || j.Status == JobPartial }

// Duration is End - Start for an ended job, 0 for a running one.
func (j Job) Duration() time.Duration {
	if j.End.IsZero() {
		return 0
	}
	return j.End.Sub(j.Start)
}

// JobStart is what an agent sends to open a job.
type JobStart struct {
	Host      string    `cbor:"host,omitempty"` // empty: the caller's principal
	Policy    string    `cbor:"policy,omitempty"`
	Vault     VaultID   `cbor:"vault,omitempty"`
	Kind      string    `cbor:"kind,omitempty"` // empty: JobBackup
	Trigger   string    `cbor:"trigger"`
	Scheduled time.Time `cbor:"scheduled,omitempty"`
	Version   string    `cbor:"version,omitempty"` // the agent's version
}

// JobReport is a job's progress (Final false: stats only) or end (Final true: status,
// error, stats, snapshot).
type JobReport struct {
	ID       string   `cbor:"id"`
	Final    bool     `cbor:"final,omitempty"`
	Status   string   `cbor:"status,omitempty"`
	Error    string   `cbor:"error,omitempty"`
	Attempts int      `cbor:"attempts,omitempty"`
	Stats    JobStats `cbor:"stats"`
	Snapshot string   `cbor:"snapshot,omitempty"`
	// Report is a verify job's report (final reports only).
	Report *VerifyReport `cbor:"report,omitempty"`
}

// ValidateJobStart checks a job start: a known kind and trigger, a valid host (when
// given), policy name (when given) and vault (when given).
func ValidateJobStart(s JobStart) error {
	if s.Trigger != TriggerSchedule && s.Trigger != TriggerManual {
		return fmt.Errorf("%w: job trigger %q (want %s or %s)", ErrInvalid, s.Trigger, TriggerSchedule, TriggerManual)
	}
	if s.Kind != "" && s.Kind != JobBackup && s.Kind != JobVerify && s.Kind != JobReplication {
		return fmt.Errorf("%w: job kind %q (want %s or %s)", ErrInvalid, s.Kind, JobBackup, JobVerify)
	}
	if s.Trigger == TriggerSchedule && s.Policy == "" {
		return fmt.Errorf("%w: a scheduled job names its policy", ErrInvalid)
	}
	if s.Host != "" {
		if err := ValidateAgentName(s.Host); err != nil {
			return err
		}
	}
	if s.Policy != "" {
		if err := ValidatePolicyName(s.Policy); err != nil {
			return err
		}
	}
	if s.Vault != "" {
		if err := ValidateVaultID(s.Vault); err != nil {
			return err
		}
	}
	if len(s.Version) > 64 {
		return fmt.Errorf("%w: agent version longer than 64 bytes", ErrInvalid)
	}
	return nil
}

// ValidateJobReport checks a report: a final one has an end status, a progress report
// none; counts are not negative; a snapshot ID is 64 hex digits.
func ValidateJobReport(r JobReport) error {
	if r.ID == "" {
		return fmt.Errorf("%w: job report without a job ID", ErrInvalid)
	}
	if r.Final {
		switch r.Status {
		case JobCompleted, JobPartial, JobFailed:
		default:
			return fmt.Errorf("%w: job %s: final status %q (want %q, %q or %q)", ErrInvalid, r.ID, r.Status, JobCompleted, JobPartial, JobFailed)
		}
	} else if r.Status != "" || r.Error != "" || r.Snapshot != "" {
		return fmt.Errorf("%w: job %s: a progress report carries stats only", ErrInvalid, r.ID)
	}
	s := r.Stats
	if min(s.FilesNew, s.FilesChanged, s.FilesUnmodified, s.FilesSkipped, s.Dirs, s.BytesProcessed, s.BytesRead, s.BytesAdded, s.ChunksAdded) < 0 || r.Attempts < 0 {
		return fmt.Errorf("%w: job %s: negative count in report", ErrInvalid, r.ID)
	}
	if r.Report != nil {
		if !r.Final {
			return fmt.Errorf("%w: job %s: a progress report carries stats only", ErrInvalid, r.ID)
		}
		if err := ValidateVerifyReport(*r.Report); err != nil {
			return fmt.Errorf("job %s: %w", r.ID, err)
		}
	}
	if r.Snapshot != "" && (len(r.Snapshot) != 64 || strings.Trim(r.Snapshot, "0123456789abcdef") != "") {
		return fmt.Errorf("%w: job %s: snapshot ID %q is not 64 lower-case hex digits", ErrInvalid, r.ID, r.Snapshot)
	}
	return nil
}

// NextRun is when an agent's schedule will next run a policy.
type NextRun struct {
	Policy string    `cbor:"policy" json:"policy"`
	At     time.Time `cbor:"at" json:"at"` // the agent's clock
	// Kind is "" for the policy's backup, "verify" or "verify-full" for its verify
	// schedules.
	Kind string `cbor:"kind,omitempty" json:"kind,omitempty"`
}

// Heartbeat is what an agent sends periodically: who and what it is, the jobs it is
// running (their Updated is refreshed) and its next scheduled runs.
type Heartbeat struct {
	Host     string    `cbor:"host,omitempty"` // empty: the caller's principal
	Hostname string    `cbor:"hostname,omitempty"`
	Version  string    `cbor:"version,omitempty"`
	Running  []string  `cbor:"running,omitempty"`
	NextRuns []NextRun `cbor:"next_runs,omitempty"`
}

// Agent is the cluster's record of one agent: its heartbeat and its last job.
type Agent struct {
	Host      string            `cbor:"host" json:"host"`           // agent name
	Principal string            `cbor:"principal" json:"principal"` // who sent the last heartbeat
	Hostname  string            `cbor:"hostname,omitempty" json:"hostname,omitempty"`
	Version   string            `cbor:"version,omitempty" json:"version,omitempty"`
	Labels    map[string]string `cbor:"labels,omitempty" json:"labels,omitempty"`
	FirstSeen time.Time         `cbor:"first_seen" json:"first_seen"`
	LastSeen  time.Time         `cbor:"last_seen" json:"last_seen"`
	NextRuns  []NextRun         `cbor:"next_runs,omitempty" json:"next_runs,omitempty"`
	// LastJob and LastStatus name the host's newest job (filled on read).
	LastJob    string `cbor:"last_job,omitempty" json:"last_job,omitempty"`
	LastStatus string `cbor:"last_status,omitempty" json:"last_status,omitempty"`
	// Retired is set while the host is decommissioned (coffer admin host decommission).
	Retired *HostRetirement `cbor:"retired,omitempty" json:"retired,omitempty"`
	// RunRequested is the cluster time of an admin's request for a final run of each of
	// the host's policies (its agent runs them once when it sees a newer request).
	RunRequested time.Time `cbor:"run_requested,omitempty" json:"run_requested,omitempty"`
}

// JobFilter selects jobs: by host and policy (empty: any), only failed or partially
// failed ones, and at most Limit of the newest (0: all).
type JobFilter struct {
	Host   string `cbor:"host,omitempty"`
	Policy string `cbor:"policy,omitempty"`
	Failed bool   `cbor:"failed,omitempty"`
	Limit  int    `cbor:"limit,omitempty"`
}

// Match reports whether j passes the filter (Limit aside).
func (f JobFilter) Match(j Job) bool {
	return (f.Host == "" || j.Host == f.Host) && (f.Policy == "" || j.Policy == f.Policy) && (!f.Failed || j.Failed())
}

// JobService manages backup policies, agents and jobs. meta/server implements it,
// metarpc carries it. Writes are proposed to Raft and audited (policy changes), and
// authorized in the FSM: an agent acts only for itself (its principal's name).
type JobService interface {
	// PutPolicy creates (create true; ErrExists when the name is taken) or replaces
	// (ErrNotFound when it does not exist) a policy. Admin only; audited.
	PutPolicy(ctx context.Context, p BackupPolicy, create bool) (BackupPolicy, error)
	// DeletePolicy removes a policy (ErrNotFound when unknown). Admin only; audited.
	DeletePolicy(ctx context.Context, name string) error
	// ListPolicies returns every policy sorted by name. Admin only.
	ListPolicies(ctx context.Context) ([]BackupPolicy, error)
	// HostPolicies returns the policies that apply to host ("": the caller) unless
	// known is the current version (Unchanged). An agent may ask only for itself.
	HostPolicies(ctx context.Context, host string, known uint64) (HostPolicies, error)
	// StartJob opens a running job and returns it (ID, Start set). An agent may start
	// jobs only for itself.
	StartJob(ctx context.Context, s JobStart) (Job, error)
	// ReportJob records progress or the end of a running job and returns the job. Only
	// the job's own agent (or an admin) may; an ended job is refused (ErrInvalid).
	ReportJob(ctx context.Context, r JobReport) (Job, error)
	// Heartbeat records that an agent is alive. An agent beats only for itself.
	Heartbeat(ctx context.Context, hb Heartbeat) error
	// ListJobs returns the jobs passing f, oldest first. An agent sees only its own.
	ListJobs(ctx context.Context, f JobFilter) ([]Job, error)
	// ListAgents returns every agent record sorted by host. Admin only.
	ListAgents(ctx context.Context) ([]Agent, error)
}

// JobHost decides for whom a principal may write jobs and heartbeats or read a host's
// policies and jobs: an agent only for itself (host "" or its own name), an admin or
// the meta server for any host it names. It returns the host, or an error wrapping
// ErrDenied (ErrInvalid when an admin names no host).
func JobHost(by Principal, host string) (string, error) {
	switch by.Role {
	case RoleAdmin, RoleSystem:
		if host == "" {
			return "", fmt.Errorf("%w: %s acts for no particular host: name the host", ErrInvalid, by)
		}
		return host, nil
	case RoleBackupAgent:
		if host != "" && host != by.Name {
			return "", fmt.Errorf("%w: %s may act only for itself, not for host %q", ErrDenied, by, host)
		}
		return by.Name, nil
	}
	return "", fmt.Errorf("%w: %s may not run or report backup jobs", ErrDenied, by)
}

// JobID returns the ID of the job started by the raft entry at index.
func JobID(index uint64) string { return fmt.Sprintf("j%016x", index) }

// ValidateJobID checks a job ID: "j" and 16 lower-case hex digits.
func ValidateJobID(id string) error {
	if len(id) != 17 || id[0] != 'j' || strings.Trim(id[1:], "0123456789abcdef") != "" {
		return fmt.Errorf("%w: job ID %q (want j and 16 hex digits, as coffer jobs shows)", ErrInvalid, id)
	}
	return nil
}
