package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cofferhq/coffer/meta"
)

func snapshotsSpec() *cmdSpec {
	return &cmdSpec{
		name:  "snapshots",
		short: "list the vault's snapshots",
		long: `Lists the vault's snapshots, oldest first: short ID, commit time (local zone),
host, tags, bytes added and paths.

With --json an array is printed; each element has id (full hex), short_id,
vault, time and start (RFC 3339), host, paths, tags, parent (when set) and
stats (files_new, files_changed, files_unmodified, dirs, bytes_processed,
bytes_added, chunks_added, duration_s, status, skipped).

` + keyCacheHelp,
		examples: []string{
			"coffer snapshots",
			"coffer --vault web01 snapshots --json",
		},
		new: func() command { return &snapshotsCmd{} },
	}
}

// snapshotsCmd lists snapshots.
type snapshotsCmd struct {
	cache cacheFlags
}

func (c *snapshotsCmd) addFlags(fs *flag.FlagSet) {
	c.cache.add(fs, keyCacheOffUsage)
}

func (c *snapshotsCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef(snapshotsSpec(), "snapshots takes no arguments, got %q", args[0])
	}
	s, ag, err := openAgent(ctx, a, c.cache.session(a))
	if err != nil {
		return err
	}
	defer s.Close()
	defer ag.Close()
	snaps, err := ag.Snapshots(ctx)
	if err != nil {
		return fmt.Errorf("list snapshots: %w", err)
	}
	if a.g.json {
		return writeSnapshotsJSON(a.stdout, snaps)
	}
	printSnapshots(a.stdout, snaps, a.loc)
	return nil
}

// writeSnapshotsJSON writes snaps as one JSON array ("[]" when empty).
func writeSnapshotsJSON(w io.Writer, snaps []meta.Snapshot) error {
	out := make([]snapshotJSON, 0, len(snaps))
	for _, s := range snaps {
		out = append(out, newSnapshotJSON(s))
	}
	return writeJSON(w, out)
}

// printSnapshots writes the snapshot table, times in loc.
func printSnapshots(w io.Writer, snaps []meta.Snapshot, loc *time.Location) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTIME\tHOST\tTAGS\tADDED\tPATHS")
	for _, s := range snaps {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.ID.Str(), s.Time.In(loc).Format("2006-01-02 15:04:05"),
			s.Host, strings.Join(s.Tags, ","), formatBytes(s.Stats.BytesAdded), joinPaths(s.Paths))
	}
	tw.Flush()
	fmt.Fprintf(w, "%d %s\n", len(snaps), plural(len(snaps), "snapshot", "snapshots"))
}
