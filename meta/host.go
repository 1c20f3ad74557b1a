package meta

import (
	"context"
	"fmt"
	"time"
)

// Host decommission (issue 19, part 3): an admin retires a protected host. The leader
// records the retirement (its schedules stop: the host gets no policies), revokes the
// host's certificates (which removes its key wraps and makes a key rotation due), and
// keeps its snapshots under the vault's retention, or until a keep window ends, after
// which the leader forgets them (locked and held ones only once their lock ends or the
// hold is lifted). Within the rollback window an admin can reinstate the host.

// DefaultHostRollback is how long after its decommission a host can be reinstated when
// the request names no window.
const DefaultHostRollback = 30 * 24 * time.Hour

// HostRetirement is a decommissioned host's record (Agent.Retired).
type HostRetirement struct {
	At     time.Time `cbor:"at" json:"at"` // cluster time of the decommission
	By     string    `cbor:"by" json:"by"`
	Reason string    `cbor:"reason,omitempty" json:"reason,omitempty"`
	// KeepUntil, when set, is when the host's snapshots expire (the --keep-for
	// window); zero: they stay under the vault's retention.
	KeepUntil time.Time `cbor:"keep_until,omitempty" json:"keep_until,omitempty"`
	// RollbackUntil is the end of the window in which the host can be reinstated.
	RollbackUntil time.Time `cbor:"rollback_until" json:"rollback_until"`
	// Expired is when the last of its snapshots was forgotten after KeepUntil.
	Expired *time.Time `cbor:"expired,omitempty" json:"expired,omitempty"`
}

// HostDecommission is an admin's request to retire Host: KeepFor (0: the vault's
// retention) keeps its snapshots that long from now, Rollback (0:
// DefaultHostRollback) is how long it can be reinstated.
type HostDecommission struct {
	Host     string        `cbor:"host"`
	KeepFor  time.Duration `cbor:"keep_for,omitempty"`
	Rollback time.Duration `cbor:"rollback,omitempty"`
	Reason   string        `cbor:"reason,omitempty"`
}

// ValidateHostDecommission checks a request: a valid host name, windows not negative, a
// reason of at most 1024 bytes.
func ValidateHostDecommission(d HostDecommission) error {
	if err := ValidateAgentName(d.Host); err != nil {
		return fmt.Errorf("host decommission: %w", err)
	}
	if d.KeepFor < 0 || d.Rollback < 0 {
		return fmt.Errorf("%w: host decommission of %s: negative window (keep-for %v, rollback %v)", ErrInvalid, d.Host, d.KeepFor, d.Rollback)
	}
	if len(d.Reason) > 1024 {
		return fmt.Errorf("%w: host decommission of %s: reason longer than 1024 bytes", ErrInvalid, d.Host)
	}
	return nil
}

// HostSnapshot is one snapshot of a host, with what protects it (a lock or hold).
type HostSnapshot struct {
	Vault     VaultID    `cbor:"vault" json:"vault"`
	ID        SnapshotID `cbor:"id" json:"id"`
	Time      time.Time  `cbor:"time" json:"time"`
	Protected string     `cbor:"protected,omitempty" json:"protected,omitempty"` // "legal hold", "compliance-locked until ..."
}

// HostDependencies is what depends on a host: the policies that select it and their
// next runs, its running jobs, its snapshots (with their locks and holds), and
// replication jobs (cross-cluster replication is not built: always empty).
type HostDependencies struct {
	Host         string         `cbor:"host" json:"host"`
	Agent        *Agent         `cbor:"agent,omitempty" json:"agent,omitempty"` // nil: never sent a heartbeat
	Policies     []string       `cbor:"policies" json:"policies"`
	NextRuns     []NextRun      `cbor:"next_runs" json:"next_runs"`
	Running      []string       `cbor:"running" json:"running"`
	Snapshots    []HostSnapshot `cbor:"snapshots" json:"snapshots"`
	Replications []string       `cbor:"replications" json:"replications"`
}

// HostExpiry is what the leader's expiry of a retired host's snapshots did: removed, and
// kept by a lock or hold.
type HostExpiry struct {
	Host    string         `cbor:"host" json:"host"`
	Removed []HostSnapshot `cbor:"removed" json:"removed"`
	Kept    []HostSnapshot `cbor:"kept" json:"kept"`
}

// HostSnapshots returns the test of whether a snapshot is host's: its Host is the agent
// name or the OS host name the agent reported (agent may be nil), or a job of the host
// recorded it.
func HostSnapshots(host string, agent *Agent, jobs []Job) func(Snapshot) bool {
	names := map[string]bool{host: true}
	if agent != nil && agent.Hostname != "" {
		names[agent.Hostname] = true
	}
	ids := map[string]bool{}
	for _, j := range jobs {
		if j.Host == host && j.Snapshot != "" {
			ids[j.Snapshot] = true
		}
	}
	return func(s Snapshot) bool { return names[s.Host] || ids[s.ID.String()] }
}

// SnapshotProtection says what keeps s from deletion at now ("" when nothing does).
func SnapshotProtection(s Snapshot, now time.Time) string {
	switch {
	case s.LegalHold:
		return "legal hold"
	case s.Lock != nil && now.Before(s.Lock.Until):
		return fmt.Sprintf("%s-locked until %s", s.Lock.Mode, s.Lock.Until.UTC().Format(time.RFC3339))
	}
	return ""
}

// HostAdmin retires and reinstates hosts (admin only; meta/server implements it,
// metarpc.Client carries it).
type HostAdmin interface {
	// HostDependencies lists what depends on host.
	HostDependencies(ctx context.Context, host string) (HostDependencies, error)
	// RequestHostRun asks the host's agent to run each of its backup policies once now
	// (a final snapshot) and returns the cluster time of the request: the agent's jobs
	// started after it are the answer.
	RequestHostRun(ctx context.Context, host string) (time.Time, error)
	// DecommissionHost retires the host (refused while one of its jobs runs) and revokes
	// its certificates; it returns the host's record.
	DecommissionHost(ctx context.Context, d HostDecommission) (Agent, error)
	// ReinstateHost brings a retired host back within its rollback window (its
	// schedules apply again; it needs a new certificate: enroll it again).
	ReinstateHost(ctx context.Context, host string) (Agent, error)
}
