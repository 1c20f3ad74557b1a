package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/cofferhq/coffer/meta"
)

func adminHostDecommissionSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin host decommission",
		args:  "HOST",
		short: "retire a protected host: final snapshot, schedules stopped, credentials revoked, backups kept for a window",
		long: `Retires a protected host (an agent's enrolled name). First it lists what depends
on the host: the backup policies that select it and its next scheduled runs,
its running jobs, its snapshots with their locks and holds, and replication
jobs. It refuses while a job of the host runs.

With --final-snapshot it asks the host's agent ("coffer agent run") for one last
run of each of its backup policies and waits (at most --wait, default 30m) until
every job the agent started for it has ended, at least one completed; a failed
run stops the decommission. Then the host is retired: it gets no policies any
more (its schedules stop), every certificate of its principal issued until now
is revoked (its key wraps are removed and a key rotation of its vaults becomes
due), and it is marked retired in the inventory ("coffer admin agents"). Its
snapshots stay, restorable by an admin, under the vault's retention or, with
--keep-for D, for D: after it the meta leader forgets them (a locked or held
one only once its lock has ended or the hold is lifted). Within --rollback
(default 30d) "coffer admin host reinstate" brings the host back.

--dry-run only lists the dependencies. Every step is in the audit log (host
final snapshot request, host decommission, cert revoke, host expire).

With --json: {"dependencies":{"host","agent"?,"policies","next_runs","running",
"snapshots":[{"vault","id","time","protected"?}],"replications"},
"final_jobs"?:[jobs as coffer jobs --json],"host"?:{agent as admin agents
--json, with "retired":{"at","by","reason"?,"keep_until"?,"rollback_until",
"expired"?}}}.`,
		examples: []string{
			"coffer admin host decommission web01 --dry-run",
			"coffer admin host decommission web01 --final-snapshot --keep-for 90d --reason 'replaced by web02'",
		},
		new: func() command { return &hostDecommissionCmd{} },
	}
}

type hostDecommissionCmd struct {
	final            bool
	dryRun           bool
	wait             time.Duration
	keepFor          string
	rollback, reason string
}

func (c *hostDecommissionCmd) addFlags(fs *flag.FlagSet) {
	fs.BoolVar(&c.final, "final-snapshot", false, "ask the host's agent for a last run of each of its policies and wait for it")
	fs.BoolVar(&c.dryRun, "dry-run", false, "only list what depends on the host")
	fs.DurationVar(&c.wait, "wait", 30*time.Minute, "wait at most `D` for the final snapshot")
	fs.StringVar(&c.keepFor, "keep-for", "", "forget the host's snapshots `D` (30d, 12h) from now (default: the vault's retention)")
	fs.StringVar(&c.rollback, "rollback", "30d", "the host can be reinstated for `D`")
	fs.StringVar(&c.reason, "reason", "", "recorded with the decommission in the audit log (`TEXT`)")
}

// hostDecommissionJSON is `admin host decommission --json`.
type hostDecommissionJSON struct {
	Dependencies meta.HostDependencies `json:"dependencies"`
	FinalJobs    []jobJSON             `json:"final_jobs,omitempty"`
	Host         *meta.Agent           `json:"host,omitempty"`
}

func (c *hostDecommissionCmd) run(ctx context.Context, a *app, args []string) error {
	spec := adminHostDecommissionSpec()
	if len(args) != 1 {
		return usagef(spec, "admin host decommission takes one host, got %d arguments", len(args))
	}
	host := args[0]
	if err := meta.ValidateAgentName(host); err != nil {
		return usagef(spec, "%v", err)
	}
	d := meta.HostDecommission{Host: host, Reason: c.reason}
	var err error
	if c.keepFor != "" {
		if d.KeepFor, err = parseLongDuration(c.keepFor); err != nil || d.KeepFor <= 0 {
			return usagef(spec, "--keep-for %q: want a positive duration (90d, 12h)", c.keepFor)
		}
	}
	if d.Rollback, err = parseLongDuration(c.rollback); err != nil || d.Rollback <= 0 {
		return usagef(spec, "--rollback %q: want a positive duration (30d)", c.rollback)
	}
	if c.wait <= 0 {
		return usagef(spec, "--wait must be positive")
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	out := hostDecommissionJSON{}
	if out.Dependencies, err = s.meta.HostDependencies(ctx, host); err != nil {
		return retentionErr(err, "list what depends on host %s", host)
	}
	if !a.g.json {
		printHostDependencies(a, out.Dependencies)
	}
	if c.dryRun {
		if a.g.json {
			return writeJSON(a.stdout, out)
		}
		return nil
	}
	if n := len(out.Dependencies.Running); n > 0 {
		return plainf(nil, "host %s has %d running jobs (%s): decommission once they ended", host, n, strings.Join(out.Dependencies.Running, ", "))
	}
	if c.final {
		jobs, err := finalSnapshot(ctx, a, s, host, c.wait)
		for _, j := range jobs {
			out.FinalJobs = append(out.FinalJobs, jobJSON{Job: j, DurationS: j.Duration().Seconds()})
		}
		if err != nil {
			return err
		}
	}
	ag, err := s.meta.DecommissionHost(ctx, d)
	if err != nil {
		return retentionErr(err, "decommission host %s", host)
	}
	out.Host = &ag
	if a.g.json {
		return writeJSON(a.stdout, out)
	}
	keep := "under the vault's retention"
	if !ag.Retired.KeepUntil.IsZero() {
		keep = "until " + timeOrDash(a, ag.Retired.KeepUntil)
	}
	fmt.Fprintf(a.stdout, "host %s decommissioned: schedules stopped, certificates revoked; snapshots kept %s; reinstate until %s\n",
		host, keep, timeOrDash(a, ag.Retired.RollbackUntil))
	return nil
}

// finalSnapshot asks host's agent for a last run of its policies and waits until every
// job it started for the request has ended, at least one completed.
func finalSnapshot(ctx context.Context, a *app, s *session, host string, wait time.Duration) ([]meta.Job, error) {
	at, err := s.meta.RequestHostRun(ctx, host)
	if err != nil {
		return nil, retentionErr(err, "ask host %s for a final snapshot", host)
	}
	if !a.g.json && !a.g.quiet {
		fmt.Fprintf(a.stderr, "asked %s's agent for a final snapshot; waiting (at most %s)\n", host, wait)
	}
	deadline := time.Now().Add(wait)
	for {
		all, err := s.meta.ListJobs(ctx, meta.JobFilter{Host: host})
		if err != nil {
			return nil, err
		}
		var jobs []meta.Job
		running, completed, failed := 0, 0, 0
		for _, j := range all {
			if j.Kind != meta.JobBackup || j.Start.Before(at) {
				continue
			}
			jobs = append(jobs, j)
			switch {
			case !j.Done():
				running++
			case j.Status == meta.JobCompleted:
				completed++
			default:
				failed++
			}
		}
		switch {
		case running == 0 && failed > 0:
			return jobs, plainf(errors.New("final snapshot failed"), "host %s: %d of its final runs failed (first: %s); nothing was decommissioned", host, failed, firstFailure(jobs))
		case running == 0 && completed > 0:
			return jobs, nil
		case time.Now().After(deadline):
			return jobs, plainf(errors.New("final snapshot timed out"), "host %s: no completed final snapshot within %s (%d runs still running); nothing was decommissioned", host, wait, running)
		}
		select {
		case <-ctx.Done():
			return jobs, ctx.Err()
		case <-time.After(time.Second): // poll interval
		}
	}
}

func firstFailure(jobs []meta.Job) string {
	for _, j := range jobs {
		if j.Done() && j.Status != meta.JobCompleted {
			return fmt.Sprintf("job %s of policy %s: %s", j.ID, j.Policy, j.Error)
		}
	}
	return "-"
}

func printHostDependencies(a *app, d meta.HostDependencies) {
	fmt.Fprintf(a.stdout, "host %s\n", d.Host)
	if d.Agent == nil {
		fmt.Fprintln(a.stdout, "  agent: never sent a heartbeat")
	} else {
		state := "active"
		if d.Agent.Retired != nil {
			state = "retired " + timeOrDash(a, d.Agent.Retired.At)
		}
		fmt.Fprintf(a.stdout, "  agent: %s, last seen %s\n", state, timeOrDash(a, d.Agent.LastSeen))
	}
	fmt.Fprintf(a.stdout, "  policies: %s\n", orDash(strings.Join(d.Policies, ", ")))
	for _, r := range d.NextRuns {
		what := r.Policy
		if r.Kind != "" {
			what += " " + r.Kind
		}
		fmt.Fprintf(a.stdout, "  next run: %s at %s\n", what, timeOrDash(a, r.At))
	}
	fmt.Fprintf(a.stdout, "  running jobs: %s\n", orDash(strings.Join(d.Running, ", ")))
	protected := 0
	for _, sn := range d.Snapshots {
		if sn.Protected != "" {
			protected++
			fmt.Fprintf(a.stdout, "  snapshot %s in %s (%s): %s\n", sn.ID.Str(), sn.Vault, timeOrDash(a, sn.Time), sn.Protected)
		}
	}
	fmt.Fprintf(a.stdout, "  snapshots: %d (%d locked or held)\n", len(d.Snapshots), protected)
	fmt.Fprintf(a.stdout, "  replication jobs: %s\n", orDash(strings.Join(d.Replications, ", ")))
}

func adminHostReinstateSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin host reinstate",
		args:  "HOST",
		short: "bring a decommissioned host back within its rollback window",
		long: `Brings a decommissioned host back while its rollback window lasts (and before
its snapshots expired): the backup policies that select it apply again and its
snapshots follow the vault's retention again. Its old certificates stay
revoked: the command creates a one-time enrollment token for the host's name
(vault --vault, or the vault of its newest job; valid --token-ttl, default 24h;
the host's labels carry over) and prints it, for "coffer agent enroll" on the
host. Audited (host reinstate, enroll-token create).

With --json: {"host": agent as admin agents --json, "token", "token_id", "vault"}.`,
		examples: []string{"coffer admin host reinstate web01", "coffer --vault web admin host reinstate web01 --token-ttl 2h"},
		new:      func() command { return &hostReinstateCmd{} },
	}
}

type hostReinstateCmd struct {
	ttl string
}

func (c *hostReinstateCmd) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.ttl, "token-ttl", "24h", "the new enrollment token is valid for `D`")
}

// hostReinstateJSON is `admin host reinstate --json`.
type hostReinstateJSON struct {
	Host    meta.Agent `json:"host"`
	Token   string     `json:"token"`
	TokenID string     `json:"token_id"`
	Vault   string     `json:"vault"`
}

func (c *hostReinstateCmd) run(ctx context.Context, a *app, args []string) error {
	spec := adminHostReinstateSpec()
	if len(args) != 1 {
		return usagef(spec, "admin host reinstate takes one host, got %d arguments", len(args))
	}
	host := args[0]
	if err := meta.ValidateAgentName(host); err != nil {
		return usagef(spec, "%v", err)
	}
	ttl, err := parseLongDuration(c.ttl)
	if err != nil || ttl <= 0 || ttl > meta.MaxEnrollTTL {
		return usagef(spec, "--token-ttl %q: want a duration in (0, 30d]", c.ttl)
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	vault := meta.VaultID(a.g.vault)
	if vault == "" {
		jobs, err := s.meta.ListJobs(ctx, meta.JobFilter{Host: host})
		if err != nil {
			return err
		}
		for _, j := range jobs {
			if j.Vault != "" {
				vault = j.Vault
			}
		}
		if vault == "" {
			return usagef(spec, "host %s has no job naming its vault: give --vault", host)
		}
	}
	ag, err := s.meta.ReinstateHost(ctx, host)
	if err != nil {
		return retentionErr(err, "reinstate host %s", host)
	}
	tok, rec, err := s.meta.CreateEnrollToken(ctx, vault, host, ttl, ag.Labels)
	if err != nil {
		return retentionErr(err, "host %s reinstated, but no enrollment token was created (coffer admin enroll-token create --name %s)", host, host)
	}
	if a.g.json {
		return writeJSON(a.stdout, hostReinstateJSON{Host: ag, Token: tok, TokenID: rec.ID, Vault: string(vault)})
	}
	fmt.Fprintf(a.stdout, "%s\n", tok)
	fmt.Fprintf(a.stderr, "host %s reinstated; its old certificates stay revoked: enroll it again with this one-time token (%s, vault %s, valid until %s)\n",
		host, rec.ID, vault, timeOrDash(a, rec.Expires))
	return nil
}
