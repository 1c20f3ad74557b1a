package main

import (
	"context"
	"flag"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/cofferhq/coffer/meta"
)

// Automatic retention: `coffer admin retention status` and `coffer admin retention run`.

func adminRetentionStatusSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin retention status",
		short: "show automatic retention: interval, last round, each vault's latest report",
		long: `The meta leader applies every vault's stored retention policy (coffer vault
policy --keep-*) on its own every retention.interval of cluster time (default
1h), with the rules of coffer forget. Locked and held snapshots are never
removed: a snapshot the policy would remove but a lock or legal hold keeps is
reported as held. Each round that removes something, or whose held snapshots
changed, is recorded in the audit log (action "retention", principal system).
A backup policy's own retention (coffer admin policy create --keep-*) governs
that policy's snapshots (tagged policy-NAME) in the same round, instead of the
vault's rules.

This shows the interval, the last and next round, and for each vault its latest
report: when, the policy, how many snapshots were kept and removed, and the held
ones with their lock. Admin certificates only.

With --json: {"interval_ns","last_round","next_round","now","reports":[{"vault",
"seq","time","policy","kept","removed","held":[{"id","time","host","reason"}],
"backup_policies":[{"name","keep","kept","removed"}]}]}.`,
		examples: []string{"coffer admin retention status"},
		new:      func() command { return &adminRetentionStatusCmd{} },
	}
}

type adminRetentionStatusCmd struct{}

func (c *adminRetentionStatusCmd) addFlags(*flag.FlagSet) {}

func (c *adminRetentionStatusCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef(adminRetentionStatusSpec(), "admin retention status takes no arguments, got %q", args[0])
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	st, err := s.meta.RetentionStatus(ctx)
	if err != nil {
		return fmt.Errorf("retention status: %w", err)
	}
	if a.g.json {
		return writeJSON(a.stdout, st)
	}
	if st.Interval == 0 {
		fmt.Fprintln(a.stdout, "automatic retention: disabled (retention.interval < 0)")
	} else {
		last := "never"
		if !st.LastRound.IsZero() {
			last = st.LastRound.Format(time.RFC3339)
		}
		fmt.Fprintf(a.stdout, "automatic retention every %s (cluster time); last round %s, next %s\n", st.Interval, last, st.NextRound.Format(time.RFC3339))
	}
	printRetentionReports(a, st.Reports)
	return nil
}

func printRetentionReports(a *app, reps []meta.RetentionReport) {
	if len(reps) == 0 {
		fmt.Fprintln(a.stdout, "no vault has been changed by automatic retention")
		return
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VAULT\tTIME\tPOLICY\tKEPT\tREMOVED\tHELD")
	for _, r := range reps {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\n", r.Vault, r.Time.Format(time.RFC3339), r.Policy.Describe(), r.Kept, len(r.Removed), len(r.Held))
	}
	_ = tw.Flush()
	for _, r := range reps {
		for _, p := range r.BackupPolicies {
			fmt.Fprintf(a.stdout, "in %s, backup policy %s's own rules (%s): kept %d, removed %d\n", r.Vault, p.Name, p.Keep.Describe(), p.Kept, p.Removed)
		}
		for _, h := range r.Held {
			fmt.Fprintf(a.stdout, "held in %s: %s (%s, %s): %s\n", r.Vault, h.ID.Str(), h.Host, h.Time.Format(time.RFC3339), h.Reason)
		}
	}
}

func adminRetentionRunSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin retention run",
		short: "apply every vault's stored retention policy now",
		long: `Runs a round of automatic retention now instead of waiting for the next one
(see coffer admin retention status): every vault's stored policy, and each
backup policy's own retention to that policy's snapshots, is applied with the
rules of coffer forget; locked and held snapshots are kept and reported.
Admin certificates only; recorded in the audit log.

Prints the vaults the round changed (or whose held snapshots changed). With
--json: {"reports":[...]} with the report fields of admin retention status.`,
		examples: []string{"coffer admin retention run"},
		new:      func() command { return &adminRetentionRunCmd{} },
	}
}

type adminRetentionRunCmd struct{}

func (c *adminRetentionRunCmd) addFlags(*flag.FlagSet) {}

func (c *adminRetentionRunCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef(adminRetentionRunSpec(), "admin retention run takes no arguments, got %q", args[0])
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	reps, err := s.meta.RunRetention(ctx)
	if err != nil {
		return fmt.Errorf("retention run: %w", err)
	}
	if reps == nil {
		reps = []meta.RetentionReport{}
	}
	if a.g.json {
		return writeJSON(a.stdout, struct {
			Reports []meta.RetentionReport `json:"reports"`
		}{reps})
	}
	printRetentionReports(a, reps)
	return nil
}
