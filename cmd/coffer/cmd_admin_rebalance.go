package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/placement"
)

// rebalanceSpec builds the specs of `admin rebalance plan|apply|status|cancel`.
func rebalanceSpec(sub, short, long string, examples ...string) *cmdSpec {
	spec := &cmdSpec{name: "admin rebalance " + sub, short: short, long: long, examples: examples}
	spec.new = func() command { return &adminRebalanceCmd{spec: spec, sub: sub} }
	return spec
}

func adminRebalancePlanSpec() *cmdSpec {
	return rebalanceSpec("plan", "show the data movement that bringing in the joining nodes would cause",
		`Computes, from the cluster map and the PG sizes the chunk nodes report, which
PG positions move when every joining node becomes active, and how many shard
bytes each node would receive and send. Nothing changes.

With --json: {"from_epoch", "pgs", "positions", "bytes", "nodes": [{"node",
"pgs_in", "pgs_out", "bytes_in", "bytes_out"}]}.`,
		"coffer admin rebalance plan")
}

func adminRebalanceApplySpec() *cmdSpec {
	return rebalanceSpec("apply", "bring the joining nodes in and move their share of the data",
		`Prints the plan, then activates every joining node in one map change. The PGs'
leaders backfill the new owners (throttled by each node's repair settings)
and drop the old copies once the new owners hold them; reads and backups keep
working throughout. With --wait the command follows the movement with a
progress line until every PG is healthy. Recorded in the audit list.

With --json: the plan, as for "rebalance plan", plus "epoch" (the new map).`,
		"coffer admin rebalance apply --wait")
}

func adminRebalanceStatusSpec() *cmdSpec {
	return rebalanceSpec("status", "show the progress of data movement",
		`Shows how many PGs are still backfilling (copies to move), degraded or not yet
verified at the current map epoch, and the bytes the repair workers have
copied and rebuilt so far.

With --json: {"epoch", "pg_count", "counts": {state: n}, "bytes_copied_or_rebuilt",
"done"}.`,
		"coffer admin rebalance status")
}

func adminRebalanceCancelSpec() *cmdSpec {
	return rebalanceSpec("cancel", "undo the last rebalance apply",
		`Returns the nodes brought in by the last "rebalance apply" to joining, in one
map change: their positions go back to the previous owners, which still hold
or get back every shard. Recorded in the audit list.

With --json: {"epoch"}.`,
		"coffer admin rebalance cancel")
}

type adminRebalanceCmd struct {
	spec *cmdSpec
	sub  string
	wait bool
}

func (c *adminRebalanceCmd) addFlags(fs *flag.FlagSet) {
	if c.sub == "apply" {
		fs.BoolVar(&c.wait, "wait", false, "follow the movement until every PG is healthy")
	}
}

// rebalanceApplyJSON is `coffer admin rebalance apply --json`.
type rebalanceApplyJSON struct {
	placement.Plan
	Epoch uint64 `json:"epoch"`
}

// rebalanceStatusJSON is `coffer admin rebalance status --json`.
type rebalanceStatusJSON struct {
	Epoch   uint64         `json:"epoch"`
	PGCount uint32         `json:"pg_count"`
	Counts  map[string]int `json:"counts"`
	Moved   int64          `json:"bytes_copied_or_rebuilt"`
	Done    bool           `json:"done"`
}

func (c *adminRebalanceCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef(c.spec, "admin rebalance %s takes no arguments, got %q", c.sub, args[0])
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	switch c.sub {
	case "plan", "apply":
		plan, err := rebalancePlan(ctx, s)
		if err != nil {
			return err
		}
		if c.sub == "plan" {
			if a.g.json {
				return writeJSON(a.stdout, plan)
			}
			printPlan(a.stdout, plan)
			return nil
		}
		m, err := s.meta.NodeAction(ctx, meta.NodeActionRequest{Action: meta.RebalanceApply})
		if err != nil {
			return fmt.Errorf("rebalance apply: %w", err)
		}
		if !a.g.json {
			printPlan(a.stdout, plan)
			fmt.Fprintf(a.stdout, "applied: map epoch %d\n", m.Epoch)
		}
		if c.wait {
			if err := c.follow(ctx, a, s, m.Epoch); err != nil {
				return err
			}
		}
		if a.g.json {
			return writeJSON(a.stdout, rebalanceApplyJSON{Plan: plan, Epoch: m.Epoch})
		}
		return nil
	case "cancel":
		m, err := s.meta.NodeAction(ctx, meta.NodeActionRequest{Action: meta.RebalanceCancel})
		if err != nil {
			return fmt.Errorf("rebalance cancel: %w", err)
		}
		if a.g.json {
			return writeJSON(a.stdout, struct {
				Epoch uint64 `json:"epoch"`
			}{m.Epoch})
		}
		fmt.Fprintf(a.stdout, "cancelled: map epoch %d\n", m.Epoch)
		return nil
	default: // status
		st, err := rebalanceStatus(ctx, s, s.clusterMap)
		if err != nil {
			return err
		}
		if a.g.json {
			return writeJSON(a.stdout, st)
		}
		printRebalanceStatus(a.stdout, st)
		return nil
	}
}

// follow polls the movement every second until every PG is healthy at epoch, writing
// a progress line to stderr.
func (c *adminRebalanceCmd) follow(ctx context.Context, a *app, s *session, epoch uint64) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		m, err := s.meta.ClusterMap(ctx)
		if err != nil {
			return fmt.Errorf("cluster map: %w", err)
		}
		st, err := rebalanceStatus(ctx, s, m)
		if err != nil {
			return err
		}
		if !a.g.quiet {
			fmt.Fprintf(a.stderr, "\rmoving: %d of %d PGs healthy, %s copied or rebuilt   ", st.Counts["healthy"], st.PGCount, formatBytes(st.Moved))
		}
		if st.Done && st.Epoch >= epoch {
			if !a.g.quiet {
				fmt.Fprintln(a.stderr)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// rebalancePlan plans the activation of every joining node from the PG sizes the
// chunk nodes report.
func rebalancePlan(ctx context.Context, s *session) (placement.Plan, error) {
	m := s.clusterMap
	to, ids := m.ActivateJoining(0)
	if len(ids) == 0 {
		return placement.Plan{}, fmt.Errorf("nothing to rebalance: no joining node in the cluster map (epoch %d)", m.Epoch)
	}
	reps, err := s.meta.PGHealth(ctx)
	if err != nil {
		return placement.Plan{}, fmt.Errorf("pg health: %w", err)
	}
	bytes := map[uint32]int64{}
	for _, r := range reps {
		bytes[r.PG] = r.Bytes
	}
	plan, err := placement.PlanMove(&m, to, bytes)
	if err != nil {
		return placement.Plan{}, err
	}
	return plan, nil
}

func printPlan(w io.Writer, p placement.Plan) {
	fmt.Fprintf(w, "Plan from map epoch %d: %d PGs, %d shard positions, %s to move\n", p.FromEpoch, p.PGs, p.Positions, formatBytes(p.Bytes))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tPGS IN\tPGS OUT\tBYTES IN\tBYTES OUT")
	for _, n := range p.Nodes {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\n", n.Node, n.PGsIn, n.PGsOut, formatBytes(n.BytesIn), formatBytes(n.BytesOut))
	}
	tw.Flush()
}

// rebalanceStatus counts PG states at the map's epoch and sums the repair workers' bytes.
func rebalanceStatus(ctx context.Context, s *session, m placement.Map) (rebalanceStatusJSON, error) {
	reps, err := s.meta.PGHealth(ctx)
	if err != nil {
		return rebalanceStatusJSON{}, fmt.Errorf("pg health: %w", err)
	}
	st := rebalanceStatusJSON{Epoch: m.Epoch, PGCount: m.PGCount, Counts: map[string]int{}}
	seen := map[uint32]placement.PGHealth{}
	for _, r := range reps {
		seen[r.PG] = r
	}
	for pg := range m.PGCount {
		r, ok := seen[pg]
		state := "unknown"
		if ok && r.Epoch >= m.Epoch {
			state = r.State()
		}
		st.Counts[state]++
	}
	st.Done = st.Counts["healthy"] == int(m.PGCount)
	rows := queryNodes(ctx, s.caller, statusTargets(m, meta.RaftStatus{}))
	for _, r := range rows {
		if r.Repair != nil {
			st.Moved += r.Repair.BytesWritten
		}
	}
	return st, nil
}

func printRebalanceStatus(w io.Writer, st rebalanceStatusJSON) {
	state := "moving"
	if st.Done {
		state = "done"
	}
	fmt.Fprintf(w, "Map epoch %d: %s; %d of %d PGs healthy, %d backfilling, %d degraded, %d not yet verified; %s copied or rebuilt\n",
		st.Epoch, state, st.Counts["healthy"], st.PGCount, st.Counts["backfilling"], st.Counts["degraded"], st.Counts["unknown"], formatBytes(st.Moved))
}
