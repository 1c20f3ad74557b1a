package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/cofferhq/coffer/meta"
)

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
