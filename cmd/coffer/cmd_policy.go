package main

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cofferhq/coffer/meta"
)

const policyLong = `A backup policy says what a set of hosts backs up and when; "coffer agent run"
on each host fetches the policies that apply to it and runs them.

--schedule is a cron expression in UTC: five fields (minute hour
day-of-month month day-of-week), six with a leading seconds field, or a
descriptor (@hourly, @daily, @every 6h). --path (repeatable) names what to
back up, into one snapshot per run; or --device names one block device or
image (captured as "backup --block" does). --exclude (repeatable) leaves out
entries: a pattern with a '/' matches the absolute path, one without the base
name at any depth ("*.tmp", "/var/cache/*"). --pre-hook and --post-hook run
around the capture as with "coffer backup" (a failing pre-hook fails the job,
with the hook's output in its error). --keep-* store a retention policy with
the policy. --lock-mode and --lock-for lock each new snapshot (within the
vault's lock limit). --compression (auto, fast, max or off) is the codec of
the policy's backups, as for "coffer backup --compression": auto (zstd's
fastest level, the default) stores about 5% more than zstd's default level,
fast (S2) about 31% more for half auto's CPU, max about 2% less for 2.8x
auto's CPU, off stores chunks as they are. Snapshots are tagged "policy-NAME"
and with each --tag.

The policy applies to each --host NAME (an agent's enrolled name) and to each
host whose labels (given by its enrollment token: "coffer admin enroll-token
create --label KEY=VALUE") include every --label KEY=VALUE. Admin
certificate only; every change is in the audit log.`

// policyFlags are the flags of policy create and update.
type policyFlags struct {
	fs       *flag.FlagSet
	p        meta.BackupPolicy
	paths    stringList
	excludes stringList
	tags     stringList
	hosts    stringList
	labels   labelFlag
	keep     meta.Policy
	within   string
	lockMode string
	lockFor  string
	verify   meta.VerifySchedule
}

func (f *policyFlags) add(fs *flag.FlagSet) {
	f.fs = fs
	fs.StringVar(&f.p.Schedule, "schedule", "", "cron `EXPR` (UTC): \"0 2 * * *\", \"*/30 * * * * *\" (with seconds), \"@hourly\"")
	fs.Var(&f.paths, "path", "back up `PATH` (absolute; repeatable)")
	fs.StringVar(&f.p.Device, "device", "", "back up block device or image `FILE` instead of paths")
	fs.Var(&f.excludes, "exclude", "leave out entries matching `PATTERN` (repeatable)")
	fs.Var(&f.tags, "tag", "tag each snapshot with `T` (repeatable)")
	fs.StringVar(&f.p.PreHook, "pre-hook", "", "run shell command `CMD` before each backup; if it fails the job fails")
	fs.StringVar(&f.p.PostHook, "post-hook", "", "run shell command `CMD` after each backup, also when it failed")
	fs.DurationVar(&f.p.HookTimeout, "hook-timeout", 0, "kill a hook still running after `D` (default 10m)")
	fs.IntVar(&f.keep.Last, "keep-last", 0, "retention: keep the `N` newest snapshots")
	fs.IntVar(&f.keep.Hourly, "keep-hourly", 0, "retention: keep one snapshot of each of the last `N` hours")
	fs.IntVar(&f.keep.Daily, "keep-daily", 0, "retention: keep one snapshot of each of the last `N` days")
	fs.IntVar(&f.keep.Weekly, "keep-weekly", 0, "retention: keep one snapshot of each of the last `N` ISO weeks")
	fs.IntVar(&f.keep.Monthly, "keep-monthly", 0, "retention: keep one snapshot of each of the last `N` months")
	fs.IntVar(&f.keep.Yearly, "keep-yearly", 0, "retention: keep one snapshot of each of the last `N` years")
	fs.StringVar(&f.within, "keep-within", "", "retention: keep every snapshot within `DURATION` of the newest")
	fs.StringVar(&f.lockMode, "lock-mode", "", "lock each new snapshot in `MODE` governance or compliance (with --lock-for)")
	fs.StringVar(&f.lockFor, "lock-for", "", "lock each new snapshot for `DURATION` (30d, 1y)")
	fs.StringVar(&f.verify.Schedule, "verify-schedule", "", "cron `EXPR` (UTC) of a sampled verify of the snapshots made since the last one")
	fs.IntVar(&f.verify.Sample, "verify-sample", 0, "a sampled verify reads `N` data chunks of each new snapshot (default 16)")
	fs.StringVar(&f.verify.Full, "verify-full", "", "cron `EXPR` (UTC) of a full verify (every chunk of every snapshot)")
	fs.StringVar(&f.p.Compression, "compression", "", "compress the policy's backups with `POLICY` auto, fast, max or off, as \"coffer backup --compression\" (default auto; stored-bytes cost in docs/benchmarks.md)")
	fs.Var(&f.hosts, "host", "apply to the agent named `NAME` (repeatable)")
	fs.Var(&f.labels, "label", "apply to hosts labelled `KEY=VALUE` (repeatable; all must match)")
}

// apply sets on p the fields whose flags were given (all of them for a new policy).
func (f *policyFlags) apply(spec *cmdSpec, p *meta.BackupPolicy) error {
	set := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	if set["schedule"] {
		p.Schedule = f.p.Schedule
	}
	if set["path"] {
		p.Paths, p.Device = f.paths, ""
	}
	if set["device"] {
		p.Device, p.Paths = f.p.Device, nil
	}
	if set["exclude"] {
		p.Excludes = f.excludes
	}
	if set["tag"] {
		p.Tags = f.tags
	}
	if set["pre-hook"] {
		p.PreHook = f.p.PreHook
	}
	if set["post-hook"] {
		p.PostHook = f.p.PostHook
	}
	if set["hook-timeout"] {
		p.HookTimeout = f.p.HookTimeout
	}
	if set["host"] {
		p.Hosts = f.hosts
	}
	if set["compression"] {
		p.Compression = f.p.Compression
		if p.Compression == "auto" {
			p.Compression = "" // the default, stored as such
		}
	}
	if set["label"] {
		p.Labels = f.labels.m
	}
	keepSet := false
	for _, n := range []string{"keep-last", "keep-hourly", "keep-daily", "keep-weekly", "keep-monthly", "keep-yearly", "keep-within"} {
		keepSet = keepSet || set[n]
	}
	if keepSet {
		k := f.keep
		if f.within != "" {
			d, err := parseLongDuration(f.within)
			if err != nil {
				return usagef(spec, "--keep-within: %v", err)
			}
			k.Within = d
		}
		p.Retention = &k
		if k.Empty() {
			p.Retention = nil // all zero: no retention with the policy
		}
	}
	switch {
	case set["lock-mode"] != set["lock-for"]:
		return usagef(spec, "--lock-mode and --lock-for go together")
	case set["lock-mode"] && f.lockMode == "" && f.lockFor == "":
		p.Lock = nil
	case set["lock-mode"]:
		d, err := parseLongDuration(f.lockFor)
		if err != nil {
			return usagef(spec, "--lock-for: %v", err)
		}
		p.Lock = &meta.PolicyLock{Mode: meta.LockMode(f.lockMode), For: d}
	}
	if set["verify-schedule"] || set["verify-sample"] || set["verify-full"] {
		v := meta.VerifySchedule{}
		if p.Verify != nil {
			v = *p.Verify
		}
		if set["verify-schedule"] {
			v.Schedule = f.verify.Schedule
		}
		if set["verify-sample"] {
			v.Sample = f.verify.Sample
		}
		if set["verify-full"] {
			v.Full = f.verify.Full
		}
		p.Verify = &v
		if v == (meta.VerifySchedule{}) {
			p.Verify = nil // all cleared: no verification
		}
	}
	if err := meta.ValidateBackupPolicy(*p); err != nil {
		return usagef(spec, "%v", err)
	}
	return nil
}

func adminPolicyCreateSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin policy create",
		args:  "NAME",
		short: "create a backup policy",
		long: policyLong + `

With --json the created policy is printed (fields as in "admin policy list").`,
		examples: []string{
			`coffer admin policy create web --schedule "0 2 * * *" --path /srv --path /etc --exclude "*.tmp" --host web01`,
			`coffer admin policy create db --schedule @hourly --path /var/backups/db --pre-hook "pg_dumpall > /var/backups/db/all.sql" --label role=db --keep-daily 7`,
			`coffer admin policy create media --schedule @daily --path /srv/media --compression off --label role=media`,
		},
		new: func() command { return &policyPutCmd{create: true} },
	}
}

func adminPolicyUpdateSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin policy update",
		args:  "NAME",
		short: "change a backup policy",
		long: `Changes the flags given and keeps the rest of the policy (flags as in
"admin policy create"; --path replaces the paths, --host the hosts, --label
the labels; "--lock-mode '' --lock-for ''" removes the lock, all --keep-* 0
the retention). Agents pick the change up at their next poll.

` + policyLong,
		examples: []string{
			`coffer admin policy update web --schedule "30 3 * * *"`,
			`coffer admin policy update db --label role=db --label env=prod`,
		},
		new: func() command { return &policyPutCmd{} },
	}
}

// policyPutCmd creates or updates a policy.
type policyPutCmd struct {
	create bool
	f      policyFlags
}

func (c *policyPutCmd) addFlags(fs *flag.FlagSet) { c.f.add(fs) }

func (c *policyPutCmd) run(ctx context.Context, a *app, args []string) error {
	spec := adminPolicyUpdateSpec()
	if c.create {
		spec = adminPolicyCreateSpec()
	}
	if len(args) != 1 {
		return usagef(spec, "%s takes one NAME, got %d arguments", spec.name, len(args))
	}
	if err := meta.ValidatePolicyName(args[0]); err != nil {
		return usagef(spec, "%v", err)
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	p := meta.BackupPolicy{Name: args[0]}
	if !c.create {
		all, err := s.meta.ListPolicies(ctx)
		if err != nil {
			return fmt.Errorf("policy update: %w", err)
		}
		i := slices.IndexFunc(all, func(x meta.BackupPolicy) bool { return x.Name == args[0] })
		if i < 0 {
			return fmt.Errorf("policy %s: %w (create it with coffer admin policy create)", args[0], meta.ErrNotFound)
		}
		p = all[i]
	}
	if err := c.f.apply(spec, &p); err != nil {
		return err
	}
	got, err := s.meta.PutPolicy(ctx, p, c.create)
	if err != nil {
		return err
	}
	if a.g.json {
		return writeJSON(a.stdout, got)
	}
	if !a.g.quiet {
		verb := "updated"
		if c.create {
			verb = "created"
		}
		fmt.Fprintf(a.stdout, "policy %s %s (version %d)\n", got.Name, verb, got.Version)
	}
	return nil
}

func adminPolicyDeleteSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin policy delete",
		args:  "NAME",
		short: "delete a backup policy",
		long: `Deletes the policy; agents stop scheduling it at their next poll (a job that
runs finishes). Its jobs stay in "coffer jobs". Admin certificate only;
audited.`,
		examples: []string{"coffer admin policy delete web"},
		new:      func() command { return &policyDeleteCmd{} },
	}
}

type policyDeleteCmd struct{}

func (c *policyDeleteCmd) addFlags(*flag.FlagSet) {}

func (c *policyDeleteCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) != 1 {
		return usagef(adminPolicyDeleteSpec(), "admin policy delete takes one NAME, got %d arguments", len(args))
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.meta.DeletePolicy(ctx, args[0]); err != nil {
		return err
	}
	if !a.g.quiet && !a.g.json {
		fmt.Fprintf(a.stdout, "policy %s deleted\n", args[0])
	}
	if a.g.json {
		return writeJSON(a.stdout, map[string]string{"deleted": args[0]})
	}
	return nil
}

func adminPolicyListSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin policy list",
		short: "list the backup policies",
		long: `Lists every backup policy: name, schedule, what it backs up, the hosts and
labels it applies to, hooks, retention and lock. Admin certificate only.

With --json an array of policies is printed: name, schedule, paths, device,
excludes, tags, pre_hook, post_hook, hook_timeout_ns, retention (keep_*),
lock (mode, for_ns), compression (absent: auto), hosts, labels, created,
updated, by, version.`,
		examples: []string{"coffer admin policy list", "coffer admin policy list --json"},
		new:      func() command { return &policyListCmd{} },
	}
}

type policyListCmd struct{}

func (c *policyListCmd) addFlags(*flag.FlagSet) {}

func (c *policyListCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef(adminPolicyListSpec(), "admin policy list takes no arguments")
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	ps, err := s.meta.ListPolicies(ctx)
	if err != nil {
		return err
	}
	if a.g.json {
		if ps == nil {
			ps = []meta.BackupPolicy{}
		}
		return writeJSON(a.stdout, ps)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSCHEDULE\tBACKS UP\tAPPLIES TO\tHOOKS\tRETENTION\tLOCK")
	for _, p := range ps {
		what := strings.Join(p.Paths, ",")
		if p.Device != "" {
			what = "device " + p.Device
		}
		if len(p.Excludes) > 0 {
			what += " (excl. " + strings.Join(p.Excludes, ",") + ")"
		}
		if p.Compression != "" {
			what += " (compression " + p.Compression + ")"
		}
		var to []string
		to = append(to, p.Hosts...)
		for _, k := range slices.Sorted(maps.Keys(p.Labels)) {
			to = append(to, k+"="+p.Labels[k])
		}
		hooks := "-"
		if p.PreHook != "" || p.PostHook != "" {
			hooks = fmt.Sprintf("pre %q post %q", p.PreHook, p.PostHook)
		}
		ret, lock := "-", "-"
		if p.Retention != nil {
			ret = keepString(*p.Retention)
		}
		if p.Lock != nil {
			lock = fmt.Sprintf("%s %s", p.Lock.Mode, formatDuration(p.Lock.For))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, p.Schedule, what, strings.Join(to, ","), hooks, ret, lock)
	}
	return tw.Flush()
}

// keepString renders a retention policy as its --keep-* flags.
func keepString(k meta.Policy) string {
	var parts []string
	for _, r := range []struct {
		n    string
		v    int
		unit string
	}{{"last", k.Last, ""}, {"hourly", k.Hourly, ""}, {"daily", k.Daily, ""}, {"weekly", k.Weekly, ""}, {"monthly", k.Monthly, ""}, {"yearly", k.Yearly, ""}} {
		if r.v > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", r.n, r.v))
		}
	}
	if k.Within > 0 {
		parts = append(parts, "within "+formatDuration(k.Within))
	}
	return strings.Join(parts, ", ")
}

// labelFlag is a repeatable KEY=VALUE flag.
type labelFlag struct{ m map[string]string }

func (l *labelFlag) String() string {
	if l == nil || len(l.m) == 0 {
		return ""
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(l.m)) {
		parts = append(parts, k+"="+l.m[k])
	}
	return strings.Join(parts, ",")
}

// Set adds one KEY=VALUE.
func (l *labelFlag) Set(v string) error {
	k, val, err := meta.ParseLabel(v)
	if err != nil {
		return err
	}
	if l.m == nil {
		l.m = map[string]string{}
	}
	l.m[k] = val
	return nil
}

// timeOrDash renders t in the app's zone, or "-" for the zero time.
func timeOrDash(a *app, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.In(a.loc).Format("2006-01-02 15:04:05")
}
