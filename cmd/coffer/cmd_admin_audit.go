package main

import (
	"context"
	"flag"
	"fmt"
	"text/tabwriter"

	"github.com/cofferhq/coffer/meta"
)

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
