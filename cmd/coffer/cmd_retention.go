package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cofferhq/coffer/meta"
)

func forgetSpec() *cmdSpec {
	return &cmdSpec{
		name:  "forget",
		args:  "[SNAP...]",
		short: "remove snapshots by ID or by a retention policy",
		long: `With SNAP arguments (full IDs or unique prefixes of at least 4 hex digits),
removes those snapshots, all or none. Without, the meta leader applies the
--keep-* rules (or, when none are given, the vault's stored policy: see
"coffer vault policy") to the vault's snapshots, grouped by host and paths (it
needs no vault key), and removes every snapshot no rule keeps; --dry-run only
shows the decision and which rule keeps each snapshot.

A snapshot under legal hold or an unexpired retention lock is never removed:
by a policy it is kept (reason "locked"/"legal hold"); named explicitly, the
whole command is refused. A governance lock gives way only to an admin with
--bypass-governance and a --reason; a compliance lock to nobody. Removing needs
an admin certificate; every removal and every refusal is in the audit log.
Removed snapshots' chunks are reclaimed by garbage collection.

With --json an object is printed: dry_run, removed (full IDs) and, for a
policy, decisions (id, time, host, paths, keep, reasons).`,
		examples: []string{
			"coffer forget --keep-daily 7 --keep-weekly 4 --dry-run",
			"coffer forget --keep-last 10 --keep-within 30d",
			"coffer forget 4f2a9c1e",
			"coffer forget 4f2a9c1e --bypass-governance --reason \"INC-1234 data request\"",
		},
		new: func() command { return &forgetCmd{} },
	}
}

// forgetCmd removes snapshots.
type forgetCmd struct {
	policy meta.Policy
	within string
	dryRun bool
	bypass meta.Bypass
}

func (c *forgetCmd) addFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.policy.Last, "keep-last", 0, "keep the `N` newest snapshots")
	fs.IntVar(&c.policy.Hourly, "keep-hourly", 0, "keep the newest snapshot of each of the last `N` hours")
	fs.IntVar(&c.policy.Daily, "keep-daily", 0, "keep the newest snapshot of each of the last `N` days")
	fs.IntVar(&c.policy.Weekly, "keep-weekly", 0, "keep the newest snapshot of each of the last `N` ISO weeks")
	fs.IntVar(&c.policy.Monthly, "keep-monthly", 0, "keep the newest snapshot of each of the last `N` months")
	fs.IntVar(&c.policy.Yearly, "keep-yearly", 0, "keep the newest snapshot of each of the last `N` years")
	fs.StringVar(&c.within, "keep-within", "", "keep every snapshot within `DURATION` (30d, 12h, 2w, 1y) of the newest")
	fs.BoolVar(&c.dryRun, "dry-run", false, "show what a policy would remove, remove nothing")
	fs.BoolVar(&c.bypass.Governance, "bypass-governance", false, "override governance locks (admin, needs --reason)")
	fs.StringVar(&c.bypass.Reason, "reason", "", "why governance locks are bypassed (`TEXT`, audited)")
}

func (c *forgetCmd) run(ctx context.Context, a *app, args []string) error {
	if c.within != "" {
		d, err := parseLongDuration(c.within)
		if err != nil {
			return usagef(forgetSpec(), "--keep-within: %v", err)
		}
		c.policy.Within = d
	}
	// No snapshot IDs: apply the given rules, or the vault's stored policy when none.
	byPolicy := len(args) == 0
	switch {
	case !c.policy.Empty() && len(args) > 0:
		return usagef(forgetSpec(), "give snapshot IDs or --keep-* rules, not both")
	case !byPolicy && c.dryRun:
		return usagef(forgetSpec(), "--dry-run works with a policy (--keep-* rules or the vault's stored one)")
	case c.bypass.Governance && c.bypass.Reason == "":
		return usagef(forgetSpec(), "--bypass-governance needs a --reason")
	}
	if err := meta.ValidatePolicy(c.policy); !c.policy.Empty() && err != nil {
		return usagef(forgetSpec(), "%v", err)
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	var res meta.ForgetResult
	if byPolicy {
		res, err = s.meta.Forget(ctx, s.vault, c.policy, c.dryRun)
		if err != nil {
			return retentionErr(err, "forget in vault %q", s.vault)
		}
	} else {
		ids, err := resolveSnapshots(ctx, s, args)
		if err != nil {
			return err
		}
		gone, err := s.meta.DeleteSnapshots(ctx, s.vault, ids, c.bypass)
		if err != nil {
			return retentionErr(err, "forget in vault %q", s.vault)
		}
		for _, g := range gone {
			res.Removed = append(res.Removed, g.ID)
		}
	}
	if a.g.json {
		return writeJSON(a.stdout, newForgetJSON(res))
	}
	printForget(a.stdout, res, a.loc)
	return nil
}

// forgetJSON is `coffer forget --json`.
type forgetJSON struct {
	DryRun    bool           `json:"dry_run"`
	Removed   []string       `json:"removed"`             // full IDs, never null
	Decisions []decisionJSON `json:"decisions,omitempty"` // policy only
}

type decisionJSON struct {
	ID      string    `json:"id"`
	Time    time.Time `json:"time"`
	Host    string    `json:"host"`
	Paths   []string  `json:"paths"`
	Keep    bool      `json:"keep"`
	Reasons []string  `json:"reasons"`
}

func newForgetJSON(r meta.ForgetResult) forgetJSON {
	out := forgetJSON{DryRun: r.DryRun, Removed: []string{}}
	for _, id := range r.Removed {
		out.Removed = append(out.Removed, id.String())
	}
	for _, d := range r.Decisions {
		reasons := d.Reasons
		if reasons == nil {
			reasons = []string{}
		}
		out.Decisions = append(out.Decisions, decisionJSON{ID: d.ID.String(), Time: d.Time, Host: d.Host, Paths: d.Paths, Keep: d.Keep, Reasons: reasons})
	}
	return out
}

func printForget(w io.Writer, r meta.ForgetResult, loc *time.Location) {
	if len(r.Decisions) > 0 {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tTIME\tHOST\tPATHS\tACTION\tREASONS")
		kept := 0
		for _, d := range r.Decisions {
			action := "remove"
			if d.Keep {
				action, kept = "keep", kept+1
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", d.ID.Str(), d.Time.In(loc).Format("2006-01-02 15:04:05"),
				d.Host, joinPaths(d.Paths), action, strings.Join(d.Reasons, ", "))
		}
		tw.Flush()
		verb := "removed"
		if r.DryRun {
			verb = "would remove"
		}
		fmt.Fprintf(w, "%d kept, %s %d %s\n", kept, verb, len(r.Decisions)-kept, plural(len(r.Decisions)-kept, "snapshot", "snapshots"))
		return
	}
	for _, id := range r.Removed {
		fmt.Fprintf(w, "removed snapshot %s\n", id.Str())
	}
}

func lockSpec() *cmdSpec {
	return &cmdSpec{
		name:  "lock",
		args:  "SNAP",
		short: "set or extend a snapshot's retention lock",
		long: `Locks the snapshot until --until TIME (RFC 3339 or YYYY-MM-DD, UTC) or for
--for DURATION from now (30d, 12h, 2w, 1y). The cluster, not the agent, keeps
time: a lock runs out by the meta leader's cluster clock, which runs at most
1% faster than real time whatever a node's clock says.

--mode governance: deleting or shortening the lock needs an admin with
--bypass-governance and a --reason (audited). --mode compliance: nobody, admin
included, can delete the snapshot, shorten the lock or move it to governance
before it runs out; extending is always allowed. Backup agents may lock and
extend in their vaults, never shorten, and at most the vault's max agent lock
ahead (default 1y, "coffer vault policy --max-agent-lock"); admins are not
bound by that limit.

With --json the snapshot's id and lock (mode, until) are printed.`,
		examples: []string{
			"coffer lock 4f2a9c1e --mode compliance --for 90d",
			"coffer lock latest --mode governance --until 2027-01-01",
		},
		new: func() command { return &lockCmd{} },
	}
}

// lockCmd sets a retention lock.
type lockCmd struct {
	mode   string
	until  string
	dur    string
	bypass meta.Bypass
}

func (c *lockCmd) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.mode, "mode", "", "lock `MODE`: governance or compliance (required)")
	fs.StringVar(&c.until, "until", "", "lock until `TIME` (RFC 3339 or YYYY-MM-DD)")
	fs.StringVar(&c.dur, "for", "", "lock for `DURATION` from now (30d, 12h, 2w, 1y)")
	fs.BoolVar(&c.bypass.Governance, "bypass-governance", false, "shorten a governance lock (admin, needs --reason)")
	fs.StringVar(&c.bypass.Reason, "reason", "", "why a governance lock is shortened (`TEXT`, audited)")
}

func (c *lockCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) != 1 {
		return usagef(lockSpec(), "lock takes one snapshot, got %d arguments", len(args))
	}
	l := meta.Lock{Mode: meta.LockMode(c.mode)}
	if l.Mode != meta.Governance && l.Mode != meta.Compliance {
		return usagef(lockSpec(), "--mode must be governance or compliance, got %q", c.mode)
	}
	switch {
	case (c.until == "") == (c.dur == ""):
		return usagef(lockSpec(), "give exactly one of --until and --for")
	case c.until != "":
		t, err := parseUntil(c.until)
		if err != nil {
			return usagef(lockSpec(), "--until: %v", err)
		}
		l.Until = t
	default:
		d, err := parseLongDuration(c.dur)
		if err != nil || d <= 0 {
			return usagef(lockSpec(), "--for: want a positive duration such as 30d, got %q", c.dur)
		}
		l.Until = a.now().Add(d).UTC()
	}
	if c.bypass.Governance && c.bypass.Reason == "" {
		return usagef(lockSpec(), "--bypass-governance needs a --reason")
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	ids, err := resolveSnapshots(ctx, s, args)
	if err != nil {
		return err
	}
	snap, err := s.meta.SetLock(ctx, s.vault, ids[0], l, c.bypass)
	if err != nil {
		return retentionErr(err, "lock snapshot %s", ids[0].Str())
	}
	if a.g.json {
		return writeJSON(a.stdout, lockJSON{ID: snap.ID.String(), Lock: snap.Lock, LegalHold: snap.LegalHold})
	}
	fmt.Fprintf(a.stdout, "snapshot %s %s-locked until %s\n", snap.ID.Str(), snap.Lock.Mode, snap.Lock.Until.In(a.loc).Format(time.RFC3339))
	return nil
}

// lockJSON is `coffer lock --json` and `coffer hold --json`.
type lockJSON struct {
	ID        string     `json:"id"`
	Lock      *meta.Lock `json:"lock"`
	LegalHold bool       `json:"legal_hold"`
}

func holdSetSpec() *cmdSpec   { return holdSpec(true) }
func holdClearSpec() *cmdSpec { return holdSpec(false) }

func holdSpec(set bool) *cmdSpec {
	name, short, verb := "hold clear", "clear a snapshot's legal hold", "clear"
	if set {
		name, short, verb = "hold set", "put a snapshot under legal hold", "set"
	}
	return &cmdSpec{
		name:  name,
		args:  "SNAP",
		short: short,
		long: `A legal hold blocks deleting the snapshot, whatever its retention lock, until
it is cleared. Setting and clearing need an admin certificate; both are audited
with the optional --reason. With --json the snapshot's id, lock and legal_hold
are printed.`,
		examples: []string{"coffer hold " + verb + " 4f2a9c1e --reason \"case 2026-17\""},
		new:      func() command { return &holdCmd{set: set} },
	}
}

// holdCmd sets or clears a legal hold.
type holdCmd struct {
	set    bool
	reason string
}

func (c *holdCmd) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.reason, "reason", "", "why (`TEXT`, audited)")
}

func (c *holdCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) != 1 {
		return usagef(holdSpec(c.set), "%s takes one snapshot, got %d arguments", holdSpec(c.set).name, len(args))
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	ids, err := resolveSnapshots(ctx, s, args)
	if err != nil {
		return err
	}
	snap, err := s.meta.SetHold(ctx, s.vault, ids[0], c.set, c.reason)
	if err != nil {
		return retentionErr(err, "legal hold on snapshot %s", ids[0].Str())
	}
	if a.g.json {
		return writeJSON(a.stdout, lockJSON{ID: snap.ID.String(), Lock: snap.Lock, LegalHold: snap.LegalHold})
	}
	state := "cleared"
	if snap.LegalHold {
		state = "set"
	}
	fmt.Fprintf(a.stdout, "legal hold %s on snapshot %s\n", state, snap.ID.Str())
	return nil
}

func adminAuditSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin audit",
		short: "show the audit log",
		long: `Prints the audit log kept in the meta Raft group: every admin action and every
refused destructive attempt, with its sequence number, cluster time, principal
and role, action, vault, target, outcome (ok or refused) and reason. Admin
certificate only. --after N starts after sequence number N, --limit caps the
entries shown (0: all).

With --json an array is printed; each element has seq, time, principal, role,
action, vault, target, outcome and reason.`,
		examples: []string{"coffer admin audit", "coffer admin audit --json --after 1200"},
		new:      func() command { return &adminAuditCmd{} },
	}
}

// adminAuditCmd prints the audit log.
type adminAuditCmd struct {
	after uint64
	limit int
}

func (c *adminAuditCmd) addFlags(fs *flag.FlagSet) {
	fs.Uint64Var(&c.after, "after", 0, "show entries after sequence number `N`")
	fs.IntVar(&c.limit, "limit", 0, "show at most `N` entries (0: all)")
}

func (c *adminAuditCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef(adminAuditSpec(), "admin audit takes no arguments, got %q", args[0])
	}
	if c.limit < 0 {
		return usagef(adminAuditSpec(), "--limit must not be negative")
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	es, err := s.meta.AuditLog(ctx, c.after, c.limit)
	if err != nil {
		return retentionErr(err, "read the audit log")
	}
	if a.g.json {
		if es == nil {
			es = []meta.AuditEntry{}
		}
		return writeJSON(a.stdout, es)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tPRINCIPAL\tROLE\tACTION\tVAULT\tTARGET\tOUTCOME\tREASON")
	for _, e := range es {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Seq, e.Time.In(a.loc).Format("2006-01-02 15:04:05"), e.Principal, e.Role,
			e.Action, e.Vault, shortTargets(e.Target), e.Outcome, e.Reason)
	}
	tw.Flush()
	fmt.Fprintf(a.stdout, "%d %s\n", len(es), plural(len(es), "entry", "entries"))
	return nil
}

// shortTargets shortens a comma-separated list of full snapshot IDs for the table.
func shortTargets(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		if len(p) == 64 {
			parts[i] = shortHex(p)
		}
	}
	return strings.Join(parts, ",")
}

// resolveSnapshots turns refs (full IDs, unique prefixes of at least 4 hex digits, or
// "latest") into snapshot IDs of the session's vault, without the vault key.
func resolveSnapshots(ctx context.Context, s *session, refs []string) ([]meta.SnapshotID, error) {
	snaps, err := s.meta.ListSnapshots(ctx, s.vault)
	if err != nil {
		return nil, retentionErr(err, "list snapshots of vault %q", s.vault)
	}
	var out []meta.SnapshotID
	for _, ref := range refs {
		r := strings.ToLower(strings.TrimSpace(ref))
		if r == "latest" {
			if len(snaps) == 0 {
				return nil, fmt.Errorf("snapshot %q: vault %q has no snapshots", ref, s.vault)
			}
			out = append(out, snaps[len(snaps)-1].ID) // sorted by commit time
			continue
		}
		if len(r) < 4 || len(r) > 64 || strings.Trim(r, "0123456789abcdef") != "" {
			return nil, fmt.Errorf("snapshot %q: give \"latest\", a full ID or at least 4 hex digits of one", ref)
		}
		var found []meta.SnapshotID
		for _, sn := range snaps {
			if strings.HasPrefix(sn.ID.String(), r) {
				found = append(found, sn.ID)
			}
		}
		switch len(found) {
		case 0:
			return nil, fmt.Errorf("snapshot %q not found in vault %q", ref, s.vault)
		case 1:
			out = append(out, found[0])
		default:
			return nil, fmt.Errorf("snapshot %q is ambiguous in vault %q (%d matches): give more digits", ref, s.vault, len(found))
		}
	}
	return out, nil
}

// retentionErr words a refusal for the terminal: permission and lock refusals are
// plain messages (they say what the cluster refused and why).
func retentionErr(err error, format string, args ...any) error {
	what := fmt.Sprintf(format, args...)
	switch {
	case errors.Is(err, meta.ErrDenied):
		return plainf(err, "%s: permission denied: %s", what, errorMessage(err))
	case errors.Is(err, meta.ErrLocked):
		return plainf(err, "%s: refused: %s", what, errorMessage(err))
	}
	return fmt.Errorf("%s: %w", what, err)
}

// parseUntil parses an RFC 3339 time or a YYYY-MM-DD date (midnight UTC).
func parseUntil(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q is neither RFC 3339 (2027-01-01T00:00:00Z) nor YYYY-MM-DD", s)
}

// parseLongDuration parses a Go duration or a count with a d (day), w (week) or y
// (365 days) suffix.
func parseLongDuration(s string) (time.Duration, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return 0, fmt.Errorf("negative duration %q", s)
		}
		return d, nil
	}
	unit := map[byte]time.Duration{'d': 24 * time.Hour, 'w': 7 * 24 * time.Hour, 'y': 365 * 24 * time.Hour}
	if len(s) >= 2 {
		if u, ok := unit[s[len(s)-1]]; ok {
			n, err := strconv.Atoi(s[:len(s)-1])
			if err == nil && n >= 0 && n <= 1000*365 {
				return time.Duration(n) * u, nil
			}
		}
	}
	return 0, fmt.Errorf("%q is not a duration (30d, 12h, 2w, 1y)", s)
}
