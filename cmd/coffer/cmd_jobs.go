package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/cofferhq/coffer/meta"
)

func jobsSpec() *cmdSpec {
	return &cmdSpec{
		name:  "jobs",
		short: "list backup jobs: scheduled and manual runs with their outcome",
		long: `Lists the job records of the cluster, oldest first: every run of a policy by
"coffer agent run" (trigger schedule) and every "coffer backup" (trigger
manual), with its host, policy, status (running, completed, partially failed,
failed), error, start, duration, files, bytes read and added and snapshot. A
run that failed before committing anything is there too; so is a job whose
agent died, marked failed by the meta leader once it sent no heartbeat for
the jobs timeout (node config jobs.timeout, default 5m). Records are kept for
jobs.retention (default 90 days) after they end.

--host and --policy filter, --failed keeps failed and partially failed jobs,
--last N the newest N. An admin sees every host's jobs; an agent its own.

With --json an array of jobs is printed: id, host, policy, vault, kind,
trigger, status, error, attempts, start, end, updated, stats (files_new,
files_changed, files_unmodified, files_skipped, dirs, bytes_processed,
bytes_read, bytes_added, chunks_added), snapshot_id, scheduled,
agent_version, anomaly, report (verify jobs), duration_s. A verify job's
policy shows as "NAME (verify)" in the table.`,
		examples: []string{"coffer jobs", "coffer jobs --failed --host web01", "coffer jobs --policy nightly --last 10 --json"},
		new:      func() command { return &jobsCmd{} },
	}
}

type jobsCmd struct {
	f meta.JobFilter
}

func (c *jobsCmd) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.f.Host, "host", "", "only the jobs of host `NAME`")
	fs.StringVar(&c.f.Policy, "policy", "", "only the jobs of policy `NAME`")
	fs.BoolVar(&c.f.Failed, "failed", false, "only failed and partially failed jobs")
	fs.IntVar(&c.f.Limit, "last", 0, "only the newest `N` jobs")
}

// jobJSON is one job of `coffer jobs --json`.
type jobJSON struct {
	meta.Job
	DurationS float64 `json:"duration_s"`
}

func (c *jobsCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef(jobsSpec(), "jobs takes no arguments, got %q", args[0])
	}
	if c.f.Limit < 0 {
		return usagef(jobsSpec(), "--last must not be negative")
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	jobs, err := s.meta.ListJobs(ctx, c.f)
	if err != nil {
		return err
	}
	if a.g.json {
		out := make([]jobJSON, 0, len(jobs))
		for _, j := range jobs {
			out = append(out, jobJSON{Job: j, DurationS: j.Duration().Seconds()})
		}
		return writeJSON(a.stdout, out)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tHOST\tPOLICY\tTRIGGER\tSTATUS\tSTART\tDURATION\tFILES\tREAD\tADDED\tSNAPSHOT\tERROR")
	for _, j := range jobs {
		pol, dur, snap := j.Policy, "-", "-"
		if pol == "" {
			pol = "-"
		}
		if j.Kind == meta.JobVerify {
			pol += " (verify)"
		}
		if j.Done() {
			dur = formatDuration(j.Duration())
		}
		if j.Snapshot != "" {
			snap = shortHex(j.Snapshot)
		}
		errText := strings.ReplaceAll(j.Error, "\n", " ")
		if len(errText) > 120 {
			errText = errText[:117] + "..."
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", j.ID, j.Host, pol, j.Trigger, j.Status,
			timeOrDash(a, j.Start), dur, j.Stats.Files(), formatBytes(j.Stats.BytesRead), formatBytes(j.Stats.BytesAdded), snap, errText)
	}
	return tw.Flush()
}

func adminAgentsSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin agents",
		short: "the agent inventory: last seen, last job, next scheduled run",
		long: `Lists every agent that has sent a heartbeat ("coffer agent run"): its name
(host), the principal that sent the heartbeat, the OS host name and agent
version it reported, when it was last seen (cluster time), its newest job and
that job's status, and its next scheduled run. Admin certificate only.

With --json an array is printed: host, principal, hostname, version, labels,
first_seen, last_seen, next_runs [{policy, at, kind}], last_job, last_status.`,
		examples: []string{"coffer admin agents", "coffer admin agents --json"},
		new:      func() command { return &agentsCmd{} },
	}
}

type agentsCmd struct{}

func (c *agentsCmd) addFlags(*flag.FlagSet) {}

func (c *agentsCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef(adminAgentsSpec(), "admin agents takes no arguments")
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	agents, err := s.meta.ListAgents(ctx)
	if err != nil {
		return err
	}
	if a.g.json {
		if agents == nil {
			agents = []meta.Agent{}
		}
		return writeJSON(a.stdout, agents)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tPRINCIPAL\tHOSTNAME\tVERSION\tLAST SEEN\tLAST JOB\tSTATUS\tNEXT RUN")
	for _, ag := range agents {
		next := "-"
		if len(ag.NextRuns) > 0 {
			n := ag.NextRuns[0]
			for _, r := range ag.NextRuns[1:] {
				if r.At.Before(n.At) {
					n = r
				}
			}
			what := n.Policy
			if n.Kind != "" {
				what += " " + n.Kind
			}
			next = timeOrDash(a, n.At) + " (" + what + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ag.Host, ag.Principal, orDash(ag.Hostname), orDash(ag.Version),
			timeOrDash(a, ag.LastSeen), orDash(ag.LastJob), orDash(ag.LastStatus), next)
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
