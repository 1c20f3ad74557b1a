package meta

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Policy is a GFS retention policy, restic's keep-* rules. Counts of zero are unused.
// Buckets are cluster-time calendar periods in UTC (ISO weeks); each rule keeps the
// newest snapshot of each of its last N periods that hold one. Within keeps every
// snapshot no older than Within before the newest one of its group.
type Policy struct {
	Last    int           `cbor:"last,omitempty" json:"keep_last,omitempty"`
	Hourly  int           `cbor:"hourly,omitempty" json:"keep_hourly,omitempty"`
	Daily   int           `cbor:"daily,omitempty" json:"keep_daily,omitempty"`
	Weekly  int           `cbor:"weekly,omitempty" json:"keep_weekly,omitempty"`
	Monthly int           `cbor:"monthly,omitempty" json:"keep_monthly,omitempty"`
	Yearly  int           `cbor:"yearly,omitempty" json:"keep_yearly,omitempty"`
	Within  time.Duration `cbor:"within,omitempty" json:"keep_within_ns,omitempty"`
}

// Empty reports whether the policy has no rule (it would keep nothing).
func (p Policy) Empty() bool { return p == Policy{} }

// ValidatePolicy refuses negative counts and an empty policy.
func ValidatePolicy(p Policy) error {
	if p.Last < 0 || p.Hourly < 0 || p.Daily < 0 || p.Weekly < 0 || p.Monthly < 0 || p.Yearly < 0 || p.Within < 0 {
		return fmt.Errorf("%w: retention policy with a negative rule: %+v", ErrInvalid, p)
	}
	if p.Empty() {
		return fmt.Errorf("%w: empty retention policy (it would remove every snapshot); give at least one keep rule", ErrInvalid)
	}
	return nil
}

// Decision is what a policy does with one snapshot: Keep with the rules that keep it
// ("last", "daily", "locked", ...), or not (it would be removed).
type Decision struct {
	ID      SnapshotID `cbor:"id" json:"id"`
	Time    time.Time  `cbor:"time" json:"time"`
	Host    string     `cbor:"host" json:"host"`
	Paths   []string   `cbor:"paths" json:"paths"`
	Keep    bool       `cbor:"keep" json:"keep"`
	Reasons []string   `cbor:"reasons" json:"reasons"`
}

type bucketRule struct {
	name string
	n    int
	key  func(time.Time) string
}

// ApplyPolicy decides, for snaps of one vault, which the policy keeps at cluster time
// now. Snapshots are grouped by host and paths; a snapshot under legal hold or an active
// lock is always kept (reason "legal hold" or "locked until ..."). The result is sorted
// by group, then newest first. It needs no vault key: only times, hosts and paths.
func ApplyPolicy(snaps []Snapshot, p Policy, now time.Time) []Decision {
	groups := map[string][]Snapshot{}
	var order []string
	for _, s := range snaps {
		k := s.Host + "\x00" + strings.Join(s.Paths, "\x00")
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], s)
	}
	slices.Sort(order)
	var out []Decision
	for _, k := range order {
		g := groups[k]
		slices.SortStableFunc(g, func(a, b Snapshot) int {
			if c := b.Time.Compare(a.Time); c != 0 {
				return c
			}
			return cmp.Compare(string(b.ID[:]), string(a.ID[:]))
		})
		rules := []bucketRule{
			{"hourly", p.Hourly, func(t time.Time) string { return t.UTC().Format("2006-01-02T15") }},
			{"daily", p.Daily, func(t time.Time) string { return t.UTC().Format("2006-01-02") }},
			{"weekly", p.Weekly, func(t time.Time) string { y, w := t.UTC().ISOWeek(); return fmt.Sprintf("%d-W%02d", y, w) }},
			{"monthly", p.Monthly, func(t time.Time) string { return t.UTC().Format("2006-01") }},
			{"yearly", p.Yearly, func(t time.Time) string { return t.UTC().Format("2006") }},
		}
		last := make([]string, len(rules))
		left := p.Last
		for _, s := range g {
			d := Decision{ID: s.ID, Time: s.Time, Host: s.Host, Paths: s.Paths, Reasons: []string{}}
			if left > 0 {
				left--
				d.Reasons = append(d.Reasons, "last")
			}
			for i, r := range rules {
				if r.n <= 0 {
					continue
				}
				if key := r.key(s.Time); key != last[i] {
					last[i] = key
					rules[i].n--
					d.Reasons = append(d.Reasons, r.name)
				}
			}
			if p.Within > 0 && !s.Time.Before(g[0].Time.Add(-p.Within)) {
				d.Reasons = append(d.Reasons, "within "+p.Within.String())
			}
			if s.LegalHold {
				d.Reasons = append(d.Reasons, "legal hold")
			}
			if s.Lock.Active(now) {
				d.Reasons = append(d.Reasons, fmt.Sprintf("%s-locked until %s", s.Lock.Mode, s.Lock.Until.UTC().Format(time.RFC3339)))
			}
			d.Keep = len(d.Reasons) > 0
			out = append(out, d)
		}
	}
	return out
}
