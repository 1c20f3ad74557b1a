package main

import (
	"context"
	"flag"
	"fmt"
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
}

func (c *vaultDeleteCmd) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.window, "recovery-window", "14d", "how long the vault stays recoverable (`DURATION`: 14d, 36h, 2w)")
	fs.StringVar(&c.reason, "reason", "", "why (`TEXT`, audited)")
}

func (c *vaultDeleteCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef(vaultDeleteSpec(), "vault delete takes no arguments (name the vault with --vault), got %q", args[0])
	}
	w, err := parseLongDuration(c.window)
	if err != nil || w <= 0 {
		return usagef(vaultDeleteSpec(), "--recovery-window: want a positive duration such as 14d, got %q", c.window)
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
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
