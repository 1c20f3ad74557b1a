package main

import (
	"context"
	"flag"
	"fmt"
)

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
