package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/cofferhq/coffer/chunkstore/nodestat"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/placement"
	"github.com/cofferhq/coffer/transport/wire"
)

// Cluster administration: node lifecycle, PG health and scrub.

func adminNodesSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin nodes",
		short: "list the cluster map's nodes and their lifecycle states",
		long: `Prints the cluster map's chunk nodes: ID, address, failure domain, weight and
state (joining, active, draining, decommissioned, down, out), with the time
of the last state change, then the pending nodes: chunk nodes that run and
gossip with the cluster but are not in the map yet ("coffer admin node add"
puts them there).

With --json: {"epoch", "pg_count", "profile", "nodes": [{"id", "addr",
"domain", "weight", "state", "since"}], "pending": [{"name", "addr",
"rpc_addr", "roles", "domain", "state"}]}.`,
		examples: []string{"coffer admin nodes", "coffer admin nodes --json | jq -r '.nodes[] | select(.state != \"active\") | .id'"},
		new:      func() command { return &adminNodesCmd{} },
	}
}

type adminNodesCmd struct{}

func (c *adminNodesCmd) addFlags(*flag.FlagSet) {}

// nodesJSON is `coffer admin nodes --json`.
type nodesJSON struct {
	Epoch   uint64           `json:"epoch"`
	PGCount uint32           `json:"pg_count"`
	Profile string           `json:"profile"`
	Nodes   []placement.Node `json:"nodes"`
	// Pending are the chunk nodes alive in gossip that are not in the map.
	Pending []meta.Member `json:"pending"`
}

func (c *adminNodesCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef(adminNodesSpec(), "admin nodes takes no arguments, got %q", args[0])
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	m := s.clusterMap
	pending, perr := pendingNodes(ctx, s, m)
	if perr != nil {
		fmt.Fprintf(a.stderr, "warning: pending nodes not known: %v\n", perr)
	}
	if a.g.json {
		return writeJSON(a.stdout, nodesJSON{Epoch: m.Epoch, PGCount: m.PGCount, Profile: m.Profile.String(), Nodes: m.Nodes, Pending: pending})
	}
	fmt.Fprintf(a.stdout, "Map epoch %d, %d PGs, erasure coding %s\n", m.Epoch, m.PGCount, m.Profile)
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tADDR\tDOMAIN\tWEIGHT\tSTATE\tSINCE")
	for _, n := range m.Nodes {
		since := "-"
		if n.Since != 0 {
			since = time.Unix(0, n.Since).UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%g\t%s\t%s\n", n.ID, n.Addr, dash(n.Domain), n.EffectiveWeight(), n.State, since)
	}
	for _, p := range pending {
		fmt.Fprintf(tw, "%s\t%s\t%s\t-\t%s\t-\n", p.Name, p.RPCAddr, dash(p.Domain), mapStatePending)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(pending) > 0 {
		fmt.Fprintf(a.stdout, "%d pending: add with \"coffer admin node add ID\", then \"coffer admin rebalance apply\"\n", len(pending))
	}
	return nil
}

// adminNodeSpec builds the spec of `admin node drain|undrain|decommission|activate`.
func adminNodeSpec(action, short, long string) *cmdSpec {
	spec := &cmdSpec{
		name:  "admin node " + action,
		args:  "ID",
		short: short,
		long: long + `

The action is recorded in the cluster's audit list with your certificate's
name and --reason. With --json: {"node", "action", "state", "epoch"}.`,
		examples: []string{fmt.Sprintf("coffer admin node %s chunk-3 --reason \"disk replacement\"", action)},
	}
	spec.new = func() command { return &adminNodeCmd{spec: spec, action: action} }
	return spec
}

func adminNodeDrainSpec() *cmdSpec {
	return adminNodeSpec(meta.NodeDrain, "move every shard off a node before retiring it",
		`Marks the node draining: it loses its PG positions, the PGs' new owners copy
or rebuild its shards, and the copies on the node are dropped once the new
owners hold them. Watch progress with "coffer admin pgs".`)
}

func adminNodeUndrainSpec() *cmdSpec {
	return adminNodeSpec(meta.NodeUndrain, "return a draining node to service",
		`Marks a draining node active again; its PG positions come back to it.`)
}

func adminNodeDecommissionSpec() *cmdSpec {
	return adminNodeSpec(meta.NodeDecommission, "retire a drained node for good",
		`Marks a draining (or out) node decommissioned. Refused while any PG would be
left with fewer than k+m healthy shards without the node: the refusal names
those PGs and the shards missing. Drain first and wait until "coffer admin
pgs" shows every PG healthy.`)
}

func adminNodeActivateSpec() *cmdSpec {
	return adminNodeSpec(meta.NodeActivate, "bring a joining node into service",
		`Marks a joining node active: it takes its share of PG positions and the
PGs' leaders backfill its shards.`)
}

type adminNodeCmd struct {
	spec   *cmdSpec
	action string
	reason string
}

func (c *adminNodeCmd) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.reason, "reason", "", "why (recorded in the audit list)")
}

// nodeActionJSON is `coffer admin node ... --json`.
type nodeActionJSON struct {
	Node   string `json:"node"`
	Action string `json:"action"`
	State  string `json:"state"`
	Epoch  uint64 `json:"epoch"`
}

func (c *adminNodeCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) != 1 {
		return usagef(c.spec, "admin node %s takes one node ID, got %d arguments", c.action, len(args))
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	m, err := s.meta.NodeAction(ctx, meta.NodeActionRequest{Node: placement.NodeID(args[0]), Action: c.action, Reason: c.reason})
	if err != nil {
		return fmt.Errorf("%s %s: %w", c.action, args[0], err)
	}
	nd, _ := m.Node(placement.NodeID(args[0]))
	if a.g.json {
		return writeJSON(a.stdout, nodeActionJSON{Node: args[0], Action: c.action, State: string(nd.State), Epoch: m.Epoch})
	}
	fmt.Fprintf(a.stdout, "node %s: %s (map epoch %d)\n", args[0], nd.State, m.Epoch)
	return nil
}

func adminPGsSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin pgs",
		short: "show placement-group health: healthy, degraded, backfilling, inconsistent",
		long: `Asks the chunk nodes (through the meta leader) for their latest account of the
PGs they lead and prints the count in each state, then every PG that is not
healthy (all of them with --all). States: healthy (k+m shards on their
owners), backfilling (healthy, copies still to move), degraded (fewer than
k+m healthy shards), inconsistent (a damaged shard found), unreadable (fewer
than k good shards), unverified (healthy at an older map epoch, not yet
checked under the current one: the new reporter has not finished a pass),
unknown (no report of the PG has arrived yet). A PG
that cannot be whole says why: "degraded (cannot place: 6 shards need 6
domains, 5 eligible)" when the map has too few nodes, "degraded (owner down:
…)" while an owner is down. A report placed by an older map epoch than the
current one (its new reporter has not finished a pass yet) shows with its
epoch.

With --json: {"epoch", "pg_count", "counts": {state: n}, "pgs": [{"pg",
"epoch", "reporter", "stripes", "min_healthy", "n", "degraded",
"inconsistent", "unreadable", "misplaced", "bytes", "reason"}]} ("reason"
only when there is one).`,
		examples: []string{"coffer admin pgs", "coffer admin pgs --all --json"},
		new:      func() command { return &adminPGsCmd{} },
	}
}

type adminPGsCmd struct{ all bool }

func (c *adminPGsCmd) addFlags(fs *flag.FlagSet) {
	fs.BoolVar(&c.all, "all", false, "list every PG, healthy ones included")
}

// pgsJSON is `coffer admin pgs --json`.
type pgsJSON struct {
	Epoch   uint64               `json:"epoch"`
	PGCount uint32               `json:"pg_count"`
	Counts  map[string]int       `json:"counts"`
	PGs     []placement.PGHealth `json:"pgs"`
}

func (c *adminPGsCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef(adminPGsSpec(), "admin pgs takes no arguments, got %q", args[0])
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	reps, err := s.meta.PGHealth(ctx)
	if err != nil {
		return fmt.Errorf("pg health: %w", err)
	}
	m := s.clusterMap
	out := pgsJSON{Epoch: m.Epoch, PGCount: m.PGCount, Counts: map[string]int{}}
	seen := map[uint32]placement.PGHealth{}
	for _, r := range reps {
		seen[r.PG] = r
	}
	for pg := range m.PGCount {
		r, ok := seen[pg]
		state := "unknown"
		if ok {
			state = r.StateAt(m.Epoch)
		}
		out.Counts[state]++
		if c.all || state != "healthy" {
			if !ok {
				r = placement.PGHealth{PG: pg}
			}
			out.PGs = append(out.PGs, r)
		}
	}
	if a.g.json {
		return writeJSON(a.stdout, out)
	}
	var states []string
	for st := range out.Counts {
		states = append(states, st)
	}
	sort.Strings(states)
	var parts []string
	for _, st := range states {
		parts = append(parts, fmt.Sprintf("%d %s", out.Counts[st], st))
	}
	fmt.Fprintf(a.stdout, "Map epoch %d, %d PGs: %s\n", m.Epoch, m.PGCount, strings.Join(parts, ", "))
	if len(out.PGs) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PG\tSTATE\tSTRIPES\tMIN HEALTHY\tDEGRADED\tMISPLACED\tINCONSISTENT\tUNREADABLE\tREPORTER\tEPOCH")
	for _, r := range out.PGs {
		state := r.DescribeAt(m.Epoch)
		fmt.Fprintf(tw, "%d\t%s\t%d\t%d/%d\t%d\t%d\t%d\t%d\t%s\t%d\n", r.PG, state, r.Stripes, r.MinHealthy, r.N,
			r.Degraded, r.Misplaced, r.Inconsistent, r.Unreadable, dash(string(r.Reporter)), r.Epoch)
	}
	return tw.Flush()
}

func adminScrubStartSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin scrub start",
		short: "start a deep scrub on every chunk node",
		long: `Asks every chunk node of the map to run a deep scrub pass over the PGs it
leads: every shard is read and checked (CRC32C), each stripe is rebuilt and
checked against the chunk's checksum, and missing or damaged shards are
rewritten. A stripe with more than m bad shards is reported by name (see
"coffer admin scrub status"). Each node writes the request to the audit
log, started or refused.

With --json: {"started": [node IDs], "errors": {node: message}}.`,
		examples: []string{"coffer admin scrub start"},
		new:      func() command { return &adminScrubStartCmd{} },
	}
}

type adminScrubStartCmd struct{}

func (c *adminScrubStartCmd) addFlags(*flag.FlagSet) {}

// scrubStartJSON is `coffer admin scrub start --json`.
type scrubStartJSON struct {
	Started []string          `json:"started"`
	Errors  map[string]string `json:"errors,omitempty"`
}

// scrubStartTimeout bounds one node's answer to a scrub start: a one-off admin command
// that dials every chunk node afresh, so it allows more than a status poll does.
const scrubStartTimeout = 15 * time.Second

func (c *adminScrubStartCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef(adminScrubStartSpec(), "admin scrub start takes no arguments, got %q", args[0])
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	out := scrubStartJSON{Errors: map[string]string{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range s.clusterMap.Nodes {
		if n.State != placement.StateActive && n.State != placement.StateDraining {
			continue
		}
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, scrubStartTimeout)
			defer cancel()
			var resp struct {
				PGs []placement.PGHealth `cbor:"pgs"`
			}
			err := wire.Call(cctx, s.caller, n.Addr, "node.Scrub", struct{}{}, &resp)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				out.Errors[string(n.ID)] = err.Error()
				return
			}
			out.Started = append(out.Started, string(n.ID))
		})
	}
	wg.Wait()
	sort.Strings(out.Started)
	if a.g.json {
		if err := writeJSON(a.stdout, out); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(a.stdout, "deep scrub started on %d nodes: %s\n", len(out.Started), strings.Join(out.Started, ", "))
		for id, e := range out.Errors {
			fmt.Fprintf(a.stdout, "  %s: %s\n", id, e)
		}
	}
	if len(out.Errors) > 0 {
		ids := slices.Sorted(maps.Keys(out.Errors))
		return fmt.Errorf("deep scrub not started on %d of %d nodes (%s: %s)", len(out.Errors), len(out.Errors)+len(out.Started), ids[0], out.Errors[ids[0]])
	}
	return nil
}

func adminScrubStatusSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin scrub status",
		short: "show repair and scrub progress and findings per chunk node",
		long: `Asks every chunk node for its repair worker's status: whether a pass is
running (and whether it is a deep scrub), PGs led and done, passes and deep
passes so far, shards rebuilt, copied and dropped, bytes written, shards
found missing or corrupt, and the stripes found unreadable (more than m bad
shards), by name.

With --json: {"nodes": [{"node", "running", "deep", "epoch", "passes",
"deep_passes", "pgs_led", "pgs_done", "shards_rebuilt", "shards_copied",
"shards_dropped", "bytes_written", "found_missing", "found_corrupt",
"unreadable", "last_pass", "last_error", "last" and "last_deep" (the last pass
and the last deep scrub: {"deep", "epoch", "stripes", "rebuilt", "copied",
"dropped", "missing", "corrupt", "unreadable"})}],
"errors": {node: message}}.`,
		examples: []string{"coffer admin scrub status"},
		new:      func() command { return &adminScrubStatusCmd{} },
	}
}

type adminScrubStatusCmd struct{}

func (c *adminScrubStatusCmd) addFlags(*flag.FlagSet) {}

// scrubStatusJSON is `coffer admin scrub status --json`.
type scrubStatusJSON struct {
	Nodes  []nodestat.Repair `json:"nodes"`
	Errors map[string]string `json:"errors,omitempty"`
}

func (c *adminScrubStatusCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef(adminScrubStatusSpec(), "admin scrub status takes no arguments, got %q", args[0])
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	out := scrubStatusJSON{Errors: map[string]string{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range s.clusterMap.Nodes {
		if n.State == placement.StateDecommissioned {
			continue
		}
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, nodeStatusTimeout)
			defer cancel()
			var st meta.NodeStatus
			err := wire.Call(cctx, s.caller, n.Addr, "node.Status", struct{}{}, &st)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				out.Errors[string(n.ID)] = err.Error()
			case st.Repair != nil:
				out.Nodes = append(out.Nodes, *st.Repair)
			}
		})
	}
	wg.Wait()
	sort.Slice(out.Nodes, func(i, j int) bool { return out.Nodes[i].Node < out.Nodes[j].Node })
	if a.g.json {
		return writeJSON(a.stdout, out)
	}
	printRepairStatus(a.stdout, out.Nodes)
	for id, e := range out.Errors {
		fmt.Fprintf(a.stdout, "  %s: %s\n", id, e)
	}
	return nil
}

// printRepairStatus writes one line per chunk node's repair worker and lists the
// unreadable stripes.
func printRepairStatus(w io.Writer, sts []nodestat.Repair) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tPASS\tPGS\tPASSES\tDEEP\tREBUILT\tCOPIED\tDROPPED\tWRITTEN\tMISSING\tCORRUPT\tUNREADABLE\tLAST")
	for _, st := range sts {
		pass := "idle"
		if st.Running {
			pass = "repair"
			if st.Deep {
				pass = "deep scrub"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%d\t%d\t%d\t%d\t%d\t%s\t%d\t%d\t%d\t%s\n", st.Node, pass, st.PGsDone, st.PGsLed,
			st.Passes, st.DeepPasses, st.ShardsRebuilt, st.ShardsCopied, st.ShardsDropped, formatBytes(st.BytesWritten),
			st.FoundMissing, st.FoundCorrupt, len(st.Unreadable), dash(st.LastPass))
	}
	tw.Flush()
	for _, st := range sts {
		for _, u := range st.Unreadable {
			fmt.Fprintf(w, "UNREADABLE %s (led by %s)\n", u, st.Node)
		}
	}
}
