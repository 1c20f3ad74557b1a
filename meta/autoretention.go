package meta

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// DefaultRetentionInterval is how often (cluster time) the meta leader applies every
// vault's stored retention policy when the node configuration names no interval.
const DefaultRetentionInterval = time.Hour

// HeldSnapshot is a snapshot that a vault's retention policy would remove but a retention
// lock or a legal hold keeps: automatic retention never touches it and reports it.
type HeldSnapshot struct {
	ID     SnapshotID `cbor:"id" json:"id"`
	Time   time.Time  `cbor:"time" json:"time"`
	Host   string     `cbor:"host" json:"host"`
	Reason string     `cbor:"reason" json:"reason"` // "legal hold", "compliance-locked until ..."
}

// RetentionReport is the outcome of one automatic retention run in one vault: what the
// stored policy removed and what a lock or hold kept. Seq is the Raft log index of the
// run, Time its cluster time.
type RetentionReport struct {
	Vault   VaultID        `cbor:"vault" json:"vault"`
	Seq     uint64         `cbor:"seq" json:"seq"`
	Time    time.Time      `cbor:"time" json:"time"`
	Policy  Policy         `cbor:"policy" json:"policy"`
	Kept    int            `cbor:"kept" json:"kept"`
	Removed []SnapshotID   `cbor:"removed" json:"removed"`
	Held    []HeldSnapshot `cbor:"held" json:"held"`
	// BackupPolicies are the backup policies whose own retention governed their
	// snapshots in this run (see PlanVaultRetention), by name.
	BackupPolicies []PolicyRetention `cbor:"backup_policies,omitempty" json:"backup_policies,omitempty"`
}

// PolicyRetention is a backup policy's own retention as one run applied it: the rules
// and how many of the policy's snapshots they kept and removed.
type PolicyRetention struct {
	Name    string `cbor:"name" json:"name"`
	Keep    Policy `cbor:"keep" json:"keep"`
	Kept    int    `cbor:"kept" json:"kept"`
	Removed int    `cbor:"removed" json:"removed"`
}

// PolicyTag is the tag a backup policy's snapshots carry ("policy-NAME").
func PolicyTag(name string) string { return "policy-" + name }

// PlanVaultRetention is what automatic retention decides for one vault at now: each
// snapshot tagged "policy-NAME" for a backup policy NAME with its own retention
// (BackupPolicy.Retention, not empty) is governed by that policy's rules (the first such
// policy by name when it carries several tags), every other snapshot by the vault's
// stored rules (vault nil or empty: kept). Each set is decided with PlanRetention, the
// rules of `coffer forget`, so locked and held snapshots are kept and reported. The
// result is merged, Removed and Held in snapshot-ID order; used lists the backup
// policies that governed at least one snapshot, by name.
func PlanVaultRetention(snaps []Snapshot, vault *Policy, policies []BackupPolicy, now time.Time) (plan RetentionPlan, used []PolicyRetention) {
	own := map[string]Policy{}
	for _, p := range policies {
		if p.Retention != nil && !p.Retention.Empty() {
			own[PolicyTag(p.Name)] = *p.Retention
		}
	}
	byTag := map[string][]Snapshot{}
	var rest []Snapshot
	for _, s := range snaps {
		tag := ""
		for _, t := range s.Tags {
			if _, ok := own[t]; ok && (tag == "" || t < tag) {
				tag = t
			}
		}
		if tag == "" {
			rest = append(rest, s)
			continue
		}
		byTag[tag] = append(byTag[tag], s)
	}
	merge := func(p RetentionPlan) {
		plan.Kept += p.Kept
		plan.Removed = append(plan.Removed, p.Removed...)
		plan.Held = append(plan.Held, p.Held...)
	}
	if vault != nil && !vault.Empty() {
		merge(PlanRetention(rest, *vault, now))
	} else {
		plan.Kept += len(rest)
	}
	tags := make([]string, 0, len(byTag))
	for t := range byTag {
		tags = append(tags, t)
	}
	slices.Sort(tags)
	for _, t := range tags {
		p := PlanRetention(byTag[t], own[t], now)
		merge(p)
		used = append(used, PolicyRetention{Name: strings.TrimPrefix(t, "policy-"), Keep: own[t], Kept: p.Kept, Removed: len(p.Removed)})
	}
	slices.SortFunc(plan.Removed, func(a, b SnapshotID) int { return strings.Compare(a.String(), b.String()) })
	slices.SortFunc(plan.Held, func(a, b HeldSnapshot) int { return strings.Compare(a.ID.String(), b.ID.String()) })
	return plan, used
}

// RetentionPlan is what a vault's stored policy decides at cluster time now: the
// snapshots to remove and those it would remove but a lock or hold keeps.
type RetentionPlan struct {
	Kept    int
	Removed []SnapshotID
	Held    []HeldSnapshot
}

// PlanRetention applies policy p to snaps at now with ApplyPolicy, the rules of
// `coffer forget`, and sorts the outcome: a snapshot is held when only its lock or hold
// keeps it. Removed and Held are in snapshot-ID order.
func PlanRetention(snaps []Snapshot, p Policy, now time.Time) RetentionPlan {
	var plan RetentionPlan
	for _, d := range ApplyPolicy(snaps, p, now) {
		if !d.Keep {
			plan.Removed = append(plan.Removed, d.ID)
			continue
		}
		plan.Kept++
		if byRule := slices.IndexFunc(d.Reasons, func(r string) bool { return !isLockReason(r) }); byRule >= 0 {
			continue
		}
		plan.Held = append(plan.Held, HeldSnapshot{ID: d.ID, Time: d.Time, Host: d.Host, Reason: strings.Join(d.Reasons, ", ")})
	}
	slices.SortFunc(plan.Removed, func(a, b SnapshotID) int { return strings.Compare(a.String(), b.String()) })
	slices.SortFunc(plan.Held, func(a, b HeldSnapshot) int { return strings.Compare(a.ID.String(), b.ID.String()) })
	return plan
}

// isLockReason reports whether r is one of ApplyPolicy's lock or hold reasons.
func isLockReason(r string) bool {
	return r == "legal hold" || strings.Contains(r, "-locked until ")
}

// SameHeld reports whether a and b name the same held snapshots for the same reasons.
func SameHeld(a, b []HeldSnapshot) bool {
	return slices.EqualFunc(a, b, func(x, y HeldSnapshot) bool { return x.ID == y.ID && x.Reason == y.Reason })
}

// Summary is a one-line account of the report for the audit log and logs.
func (r RetentionReport) Summary() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "policy %s: removed %d, kept %d", r.Policy.Describe(), len(r.Removed), r.Kept)
	for _, p := range r.BackupPolicies {
		fmt.Fprintf(&sb, "; backup policy %s's own (%s): removed %d, kept %d", p.Name, p.Keep.Describe(), p.Removed, p.Kept)
	}
	if len(r.Held) > 0 {
		fmt.Fprintf(&sb, "; kept by lock or hold although the policy would remove them:")
		for _, h := range r.Held {
			fmt.Fprintf(&sb, " %s (%s)", h.ID.Str(), h.Reason)
		}
	}
	return sb.String()
}

// Describe formats a policy as forget's flags do ("keep-last 3, keep-daily 7").
func (p Policy) Describe() string {
	var parts []string
	for _, r := range []struct {
		name string
		n    int
	}{{"last", p.Last}, {"hourly", p.Hourly}, {"daily", p.Daily}, {"weekly", p.Weekly}, {"monthly", p.Monthly}, {"yearly", p.Yearly}} {
		if r.n > 0 {
			parts = append(parts, fmt.Sprintf("keep-%s %d", r.name, r.n))
		}
	}
	if p.Within > 0 {
		parts = append(parts, "keep-within "+p.Within.String())
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// RetentionStatus is the automatic retention's state: the interval, the cluster time of
// the last round (zero before the first), when the next is due, and each vault's latest
// report.
type RetentionStatus struct {
	Interval  time.Duration     `cbor:"interval" json:"interval_ns"`
	LastRound time.Time         `cbor:"last_round" json:"last_round"`
	NextRound time.Time         `cbor:"next_round" json:"next_round"`
	Now       time.Time         `cbor:"now" json:"now"`
	Reports   []RetentionReport `cbor:"reports" json:"reports"`
}

// RetentionAdmin runs and reports the automatic retention (meta/server implements it,
// metarpc.Client carries it).
type RetentionAdmin interface {
	// RetentionStatus returns the state and every vault's latest report (admin only).
	RetentionStatus(ctx context.Context) (RetentionStatus, error)
	// RunRetention applies every vault's stored policy now, as a scheduled round does,
	// and returns the reports of the vaults where it changed something or held
	// something back (admin only; audited per vault).
	RunRetention(ctx context.Context) ([]RetentionReport, error)
}
