package main

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cofferhq/coffer/meta"
)

func vaultDeleteSpec() *cmdSpec {
	return &cmdSpec{
		name:  "vault delete",
		short: "soft-delete the vault (recoverable during a window)",
		long: `Soft-deletes the vault named by --vault: it takes no new snapshots, and once the
recovery window (default 14d) ends by the cluster clock, the meta leader
purges it: its key wrappings are destroyed (without them nobody can decrypt
its data) and its snapshots removed; garbage collection reclaims the chunks.
"coffer vault undelete" recovers it during the window.

Refused while any snapshot of the vault is locked (governance included) or
under legal hold; a hold or lock set during the window postpones the purge.
Admin certificate only; audited with the --reason.

With --final-snapshot, first every host whose jobs back up to the vault (and
that is not decommissioned) is asked for a last run of each of its backup
policies, as "coffer admin host decommission --final-snapshot" does, one host
after the other, waiting at most --wait (default 30m) each; a failed or
missing final run stops before anything is deleted.

With --json the vault's id and deleted (at, recover_until, by, reason) are
printed.`,
		examples: []string{
			"coffer --vault web01 vault delete --reason \"host retired\"",
			"coffer --vault web01 vault delete --recovery-window 30d",
		},
		new: func() command { return &vaultDeleteCmd{} },
	}
}

// vaultDeleteCmd soft-deletes a vault.
type vaultDeleteCmd struct {
	window string
	reason string
	final  bool
	wait   time.Duration
}

func (c *vaultDeleteCmd) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.window, "recovery-window", "14d", "how long the vault stays recoverable (`DURATION`: 14d, 36h, 2w)")
	fs.StringVar(&c.reason, "reason", "", "why (`TEXT`, audited)")
	fs.BoolVar(&c.final, "final-snapshot", false, "first ask the agent of every host backing up to the vault for a last run and wait for it")
	fs.DurationVar(&c.wait, "wait", 30*time.Minute, "wait at most `D` for each host's final snapshot")
}

func (c *vaultDeleteCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef(vaultDeleteSpec(), "vault delete takes no arguments (name the vault with --vault), got %q", args[0])
	}
	w, err := parseLongDuration(c.window)
	if err != nil || w <= 0 {
		return usagef(vaultDeleteSpec(), "--recovery-window: want a positive duration such as 14d, got %q", c.window)
	}
	if c.wait <= 0 {
		return usagef(vaultDeleteSpec(), "--wait must be positive")
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	if c.final {
		if err := vaultFinalSnapshots(ctx, a, s, c.wait); err != nil {
			return err
		}
	}
	v, err := s.meta.DeleteVault(ctx, s.vault, w, c.reason)
	if err != nil {
		return retentionErr(err, "delete vault %q", s.vault)
	}
	if a.g.json {
		return writeJSON(a.stdout, vaultStateJSON{ID: string(v.ID), Deleted: v.Deleted})
	}
	fmt.Fprintf(a.stdout, "vault %s deleted; recoverable with \"coffer vault undelete\" until %s\n", v.ID, v.Deleted.RecoverUntil.In(a.loc).Format(time.RFC3339))
	return nil
}

// vaultStateJSON is `coffer vault delete|undelete --json`.
type vaultStateJSON struct {
	ID      string              `json:"id"`
	Deleted *meta.VaultDeletion `json:"deleted"` // null once undeleted
}

func vaultUndeleteSpec() *cmdSpec {
	return &cmdSpec{
		name:  "vault undelete",
		short: "recover a soft-deleted vault within its window",
		long: `Recovers the vault named by --vault if its recovery window has not ended: it
takes snapshots again and is no longer due for purge. Admin certificate only;
audited. With --json the vault's id and deleted (null) are printed.`,
		examples: []string{"coffer --vault web01 vault undelete"},
		new:      func() command { return &vaultUndeleteCmd{} },
	}
}

// vaultUndeleteCmd recovers a soft-deleted vault.
type vaultUndeleteCmd struct{}

func (c *vaultUndeleteCmd) addFlags(*flag.FlagSet) {}

func (c *vaultUndeleteCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef(vaultUndeleteSpec(), "vault undelete takes no arguments (name the vault with --vault), got %q", args[0])
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	v, err := s.meta.UndeleteVault(ctx, s.vault)
	if err != nil {
		return retentionErr(err, "undelete vault %q", s.vault)
	}
	if a.g.json {
		return writeJSON(a.stdout, vaultStateJSON{ID: string(v.ID)})
	}
	fmt.Fprintf(a.stdout, "vault %s recovered\n", v.ID)
	return nil
}

func vaultPolicySpec() *cmdSpec {
	return &cmdSpec{
		name:  "vault policy",
		short: "show or set the vault's retention policy",
		long: `Without flags, shows the retention policy stored for the vault named by
--vault. With --keep-* rules, stores them: "coffer forget" with neither
snapshot IDs nor rules applies them. With --lock-mode and --lock-for, every new
snapshot of the vault is locked at commit for that long (by the cluster clock),
whatever the agent asks. --max-agent-lock is the longest lock a backup agent
may set on a snapshot of the vault, by "coffer lock" or at commit (default 1y);
a longer one is refused with the limit named. Admins are not bound by it (an
admin's lock and the --lock-for default lock may be longer). Each call stores
the whole policy: flags left out take their defaults. --clear removes the
stored policy. Setting needs an admin certificate (backup agents never change
policy); audited, with the limit. With --approve-locked-restore, a restore
grant on a compliance-locked or held snapshot needs a second admin's approval
(two-person rule: the restore is queued, exit code 4, and runs when its
requester asks again after "coffer admin approvals approve"). A policy that
keeps less or locks shorter, or drops --approve-locked-restore, is itself
queued for approval once two admins have enrolled MFA.

With --json the vault's id and retention (keep, lock, max_agent_lock_ns,
approve_locked_restore) are printed.`,
		examples: []string{
			"coffer --vault web01 vault policy --keep-daily 14 --keep-monthly 12 --lock-mode compliance --lock-for 30d",
			"coffer --vault web01 vault policy --keep-daily 14 --max-agent-lock 2y",
			"coffer --vault web01 vault policy",
		},
		new: func() command { return &vaultPolicyCmd{} },
	}
}

// vaultPolicyCmd shows or sets a vault's retention policy.
type vaultPolicyCmd struct {
	forget   forgetCmd // reuses the --keep-* flags
	lockMode string
	lockFor  string
	maxLock  string
	approve  bool
	clear    bool
}

func (c *vaultPolicyCmd) addFlags(fs *flag.FlagSet) {
	p := &c.forget.policy
	fs.IntVar(&p.Last, "keep-last", 0, "keep the `N` newest snapshots")
	fs.IntVar(&p.Hourly, "keep-hourly", 0, "keep the newest snapshot of each of the last `N` hours")
	fs.IntVar(&p.Daily, "keep-daily", 0, "keep the newest snapshot of each of the last `N` days")
	fs.IntVar(&p.Weekly, "keep-weekly", 0, "keep the newest snapshot of each of the last `N` ISO weeks")
	fs.IntVar(&p.Monthly, "keep-monthly", 0, "keep the newest snapshot of each of the last `N` months")
	fs.IntVar(&p.Yearly, "keep-yearly", 0, "keep the newest snapshot of each of the last `N` years")
	fs.StringVar(&c.forget.within, "keep-within", "", "keep every snapshot within `DURATION` of the newest")
	fs.StringVar(&c.lockMode, "lock-mode", "", "lock every new snapshot in `MODE` (governance or compliance)")
	fs.StringVar(&c.lockFor, "lock-for", "", "for `DURATION` from its commit (30d, 12h, 2w, 1y)")
	fs.StringVar(&c.maxLock, "max-agent-lock", "", "the longest lock a backup agent may set, `DURATION` ahead (default 1y)")
	fs.BoolVar(&c.approve, "approve-locked-restore", false, "restore grants on compliance-locked or held snapshots need a second admin's approval")
	fs.BoolVar(&c.clear, "clear", false, "remove the stored policy")
}

func (c *vaultPolicyCmd) run(ctx context.Context, a *app, args []string) error {
	spec := vaultPolicySpec()
	if len(args) > 0 {
		return usagef(spec, "vault policy takes no arguments (name the vault with --vault), got %q", args[0])
	}
	var p meta.VaultPolicy
	p.Keep = c.forget.policy
	if c.forget.within != "" {
		d, err := parseLongDuration(c.forget.within)
		if err != nil {
			return usagef(spec, "--keep-within: %v", err)
		}
		p.Keep.Within = d
	}
	if (c.lockMode == "") != (c.lockFor == "") {
		return usagef(spec, "--lock-mode and --lock-for go together")
	}
	if c.lockMode != "" {
		d, err := parseLongDuration(c.lockFor)
		if err != nil {
			return usagef(spec, "--lock-for: %v", err)
		}
		p.Lock = &meta.DefaultLock{Mode: meta.LockMode(c.lockMode), For: d}
	}
	if c.maxLock != "" {
		d, err := parseLongDuration(c.maxLock)
		if err != nil || d <= 0 {
			return usagef(spec, "--max-agent-lock %q: want a positive duration (30d, 1y)", c.maxLock)
		}
		p.MaxAgentLock = d
	}
	p.ApproveLockedRestore = c.approve
	set := c.clear || !p.Empty()
	if c.clear && !p.Empty() {
		return usagef(spec, "--clear takes no other policy flags")
	}
	if err := meta.ValidateVaultPolicy(p); err != nil {
		return usagef(spec, "%v", err)
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	var v meta.Vault
	if set {
		v, err = s.meta.SetVaultPolicy(ctx, s.vault, p)
	} else {
		v, err = s.meta.GetVault(ctx, s.vault)
	}
	if err != nil {
		return retentionErr(err, "vault policy of %q", s.vault)
	}
	if a.g.json {
		return writeJSON(a.stdout, vaultPolicyJSON{ID: string(v.ID), Retention: v.Retention})
	}
	printVaultPolicy(a, v)
	return nil
}

// vaultPolicyJSON is `coffer vault policy --json`.
type vaultPolicyJSON struct {
	ID        string            `json:"id"`
	Retention *meta.VaultPolicy `json:"retention"` // null when none is stored
}

func printVaultPolicy(a *app, v meta.Vault) {
	r := v.Retention
	if r == nil {
		fmt.Fprintf(a.stdout, "vault %s: no retention policy stored (agents may lock at most %s ahead)\n", v.ID, meta.FormatSpan(meta.DefaultMaxAgentLock))
		return
	}
	k := r.Keep
	var rules []string
	for _, x := range []struct {
		name string
		n    int
	}{{"last", k.Last}, {"hourly", k.Hourly}, {"daily", k.Daily}, {"weekly", k.Weekly}, {"monthly", k.Monthly}, {"yearly", k.Yearly}} {
		if x.n > 0 {
			rules = append(rules, fmt.Sprintf("%s %d", x.name, x.n))
		}
	}
	if k.Within > 0 {
		rules = append(rules, "within "+k.Within.String())
	}
	keep := "none"
	if len(rules) > 0 {
		keep = strings.Join(rules, ", ")
	}
	fmt.Fprintf(a.stdout, "vault %s\n  keep: %s\n", v.ID, keep)
	if r.Lock != nil {
		fmt.Fprintf(a.stdout, "  lock new snapshots: %s for %s\n", r.Lock.Mode, r.Lock.For)
	}
	fmt.Fprintf(a.stdout, "  longest lock an agent may set: %s\n", meta.FormatSpan(r.AgentLockLimit()))
	if r.ApproveLockedRestore {
		fmt.Fprintf(a.stdout, "  restores of compliance-locked or held snapshots: need a second admin's approval\n")
	}
}

// vaultFinalSnapshots takes the final snapshot of every active host with jobs in the
// session's vault, one after the other.
func vaultFinalSnapshots(ctx context.Context, a *app, s *session, wait time.Duration) error {
	jobs, err := s.meta.ListJobs(ctx, meta.JobFilter{})
	if err != nil {
		return retentionErr(err, "list the jobs of vault %q", s.vault)
	}
	agents, err := s.meta.ListAgents(ctx)
	if err != nil {
		return retentionErr(err, "list the agents")
	}
	retired := map[string]bool{}
	for _, ag := range agents {
		retired[ag.Host] = ag.Retired != nil
	}
	var hosts []string
	for _, j := range jobs {
		if j.Vault == s.vault && !retired[j.Host] && !slices.Contains(hosts, j.Host) {
			hosts = append(hosts, j.Host)
		}
	}
	slices.Sort(hosts)
	for _, h := range hosts {
		if _, err := finalSnapshot(ctx, a, s, h, wait); err != nil {
			return err
		}
	}
	return nil
}
