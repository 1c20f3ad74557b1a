package main

import (
	"context"
	"flag"
	"fmt"
	"io"
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
