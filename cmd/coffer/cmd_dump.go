package main

import (
	"context"
	"flag"
	"fmt"
)

func dumpSpec() *cmdSpec {
	return &cmdSpec{
		name:  "dump",
		args:  "SNAP FILE",
		short: "write one file of a snapshot to stdout",
		long: `Streams the content of FILE (a path inside the snapshot, as shown by ls) to
stdout, checking every chunk. Nothing else is written to stdout.

` + keyCacheHelp + `

SNAP is a full snapshot ID, a unique prefix of it
(at least 4 hex digits), or "latest".`,
		examples: []string{
			"coffer dump latest /etc/hosts",
			"coffer dump 1a2b3c4d /var/backups/db.sql.gz > db.sql.gz",
		},
		new: func() command { return &dumpCmd{} },
	}
}

// dumpCmd streams one file.
type dumpCmd struct {
	cache cacheFlags
}

func (c *dumpCmd) addFlags(fs *flag.FlagSet) {
	c.cache.add(fs, keyCacheOffUsage)
}

func (c *dumpCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) != 2 {
		return usagef(dumpSpec(), "dump needs SNAP and FILE, got %d arguments", len(args))
	}
	ag, snap, done, err := openSnapshot(ctx, a, args[0], c.cache.session(a))
	if err != nil {
		return err
	}
	defer done()
	if err := ag.Dump(ctx, snap, args[1], a.stdout); err != nil {
		return fmt.Errorf("dump %s %s: %w", snap.ID.Str(), args[1], err)
	}
	return nil
}
