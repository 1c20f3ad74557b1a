package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/cofferhq/coffer/meta"
)

// Garbage collection: `coffer admin gc run` and `coffer admin gc status`.

func adminGCRunSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin gc run",
		short: "collect garbage: delete chunks no snapshot references",
		long: `Runs one garbage collection on the meta leader and waits for its report. The
leader marks every chunk the snapshots of every vault reference (soft-deleted
vaults included), asks each chunk node for the chunks it holds that were neither
written nor asked about within the grace period before the collection began,
and sends sweep orders for the unreferenced ones. Backups keep running: a chunk
a backup was told exists, or uploaded, within the grace period is kept, and a
commit that refers to a swept chunk is refused (the agent uploads it again).
Admin certificates only; recorded in the audit log. The leader also collects on
its own every gc.interval (default 24h).

--dry-run marks and lists candidates but deletes nothing. --grace overrides the
cluster's grace period (default 1h) for this run.

With --json: the report {"epoch","began","ended","dry_run","snapshots","live",
"nodes","skipped","candidates","candidate_bytes","swept_chunks","swept_shards",
"swept_bytes","spared","error"}.`,
		examples: []string{"coffer admin gc run --dry-run", "coffer admin gc run"},
		new:      func() command { return &adminGCRunCmd{} },
	}
}

type adminGCRunCmd struct {
	dryRun bool
	grace  time.Duration
}

func (c *adminGCRunCmd) addFlags(fs *flag.FlagSet) {
	fs.BoolVar(&c.dryRun, "dry-run", false, "mark and list candidates, delete nothing")
	fs.DurationVar(&c.grace, "grace", 0, "spare chunks written or asked about within this long (default: the cluster's, 1h)")
}

func (c *adminGCRunCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef(adminGCRunSpec(), "admin gc run takes no arguments, got %q", args[0])
	}
	if c.grace < 0 {
		return usagef(adminGCRunSpec(), "--grace %v is negative", c.grace)
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	rep, err := s.meta.RunGC(ctx, meta.GCOptions{DryRun: c.dryRun, Grace: c.grace})
	if err != nil && rep.Epoch == 0 {
		return fmt.Errorf("gc: %w", err)
	}
	if a.g.json {
		if jerr := writeJSON(a.stdout, gcReportJSON(rep)); jerr != nil {
			return jerr
		}
	} else {
		printGCReport(a, rep)
	}
	if err != nil {
		return fmt.Errorf("gc: %w", err)
	}
	return nil
}

// gcReportJSON is the --json shape of a GC report (meta.GCReport's JSON tags).
func gcReportJSON(r meta.GCReport) meta.GCReport {
	if r.Skipped == nil {
		r.Skipped = []string{}
	}
	return r
}

func printGCReport(a *app, r meta.GCReport) {
	verb := "swept"
	if r.DryRun {
		verb = "would sweep (dry run)"
	}
	fmt.Fprintf(a.stdout, "gc epoch %d: marked %d snapshots, %d live chunks, on %d chunk nodes\n", r.Epoch, r.Snapshots, r.Live, r.Nodes)
	fmt.Fprintf(a.stdout, "candidates: %d chunks, %s of shards\n", r.Candidates, formatBytes(r.CandidateBytes))
	if r.DryRun {
		fmt.Fprintf(a.stdout, "%s: %d chunks\n", verb, r.Candidates)
	} else {
		fmt.Fprintf(a.stdout, "%s: %d chunks, %d shards, %s; spared (touched since listing): %d\n", verb, r.SweptChunks, r.SweptShards, formatBytes(r.SweptBytes), r.Spared)
	}
	if len(r.Skipped) > 0 {
		fmt.Fprintf(a.stdout, "nodes left out: %s\n", strings.Join(r.Skipped, "; "))
	}
	if r.Error != "" {
		fmt.Fprintf(a.stdout, "error: %s\n", r.Error)
	}
}

func adminGCStatusSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin gc status",
		short: "show the garbage-collection epoch, phase and last report",
		long: `Shows the current garbage-collection epoch and phase (idle, mark or sweep), the
meta server leading it, and the report of the last collection.

With --json: {"state":{"epoch","phase","leader","began","grace","last":{report}},"leader"}.`,
		examples: []string{"coffer admin gc status"},
		new:      func() command { return &adminGCStatusCmd{} },
	}
}

type adminGCStatusCmd struct{}

func (c *adminGCStatusCmd) addFlags(*flag.FlagSet) {}

func (c *adminGCStatusCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef(adminGCStatusSpec(), "admin gc status takes no arguments, got %q", args[0])
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	st, err := s.meta.GCStatus(ctx)
	if err != nil {
		return fmt.Errorf("gc status: %w", err)
	}
	if a.g.json {
		return writeJSON(a.stdout, st)
	}
	g := st.State
	fmt.Fprintf(a.stdout, "gc epoch %d, phase %s (meta leader %s)\n", g.Epoch, g.Phase, st.Leader)
	if g.Last != nil {
		fmt.Fprintf(a.stdout, "last collection (ended %s):\n", g.Last.Ended.Format(time.RFC3339))
		printGCReport(a, *g.Last)
	} else {
		fmt.Fprintln(a.stdout, "no collection has run yet")
	}
	return nil
}
