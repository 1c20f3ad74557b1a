package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/cofferhq/coffer/chunkstore/nodestat"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/placement"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/wire"
)

// nodeStatusTimeout bounds each node's "node.Status" call.
const nodeStatusTimeout = 2 * time.Second

// nodeStatusParallel bounds concurrent "node.Status" calls.
const nodeStatusParallel = 16

func adminStatusSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin status",
		short: "show the cluster: Raft leader, meta servers and every node",
		long: `Asks the meta group for its Raft state and the cluster map, then asks every node
(the map's chunk nodes and the meta servers) for its own status, each with a
2 s timeout. A node that does not answer is shown as "down".

The node table shows ID, address, roles, failure domain, state (up/down), the
node's state in the cluster map ("pending" for a chunk node that joined but
is not in the map yet: see "coffer admin node add"), shards and bytes
stored, and capacity.

With --json one object is printed: raft (leader, leader_addr, term,
commit_index, applied_index, servers), map_epoch, pg_count, profile ("k+m")
and nodes (id, addr, roles, domain, state, map_state, shards, bytes, capacity,
error, repair). A chunk node's repair is its repair worker's progress (see
"coffer admin scrub status"); the human output shows it in a Repair table.`,
		examples: []string{
			"coffer admin status",
			"coffer admin status --json | jq '.nodes[] | select(.state == \"down\")'",
		},
		new: func() command { return &adminStatusCmd{} },
	}
}

// adminStatusCmd prints the cluster overview.
type adminStatusCmd struct{}

func (c *adminStatusCmd) addFlags(*flag.FlagSet) {}

func (c *adminStatusCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef(adminStatusSpec(), "admin status takes no arguments, got %q", args[0])
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	rs, err := s.meta.RaftStatus(ctx)
	if err != nil {
		return fmt.Errorf("raft status: %w", err)
	}
	st := clusterStatus{
		Raft:     rs,
		MapEpoch: s.clusterMap.Epoch,
		PGCount:  s.clusterMap.PGCount,
		Profile:  fmt.Sprintf("%d+%d", s.clusterMap.Profile.K, s.clusterMap.Profile.M),
	}
	rows := statusTargets(s.clusterMap, rs)
	// Chunk nodes that joined but are not in the map yet show with map state "pending".
	if pending, err := pendingNodes(ctx, s, s.clusterMap); err == nil {
		for _, p := range pending {
			rows = append(rows, nodeRow{ID: p.Name, Addr: p.RPCAddr, Roles: p.Roles, Domain: p.Domain, State: nodeDown, MapState: mapStatePending})
		}
		sort.SliceStable(rows, func(i, j int) bool { return rows[i].ID < rows[j].ID })
	}
	st.Nodes = queryNodes(ctx, s.caller, rows)
	if reps, err := s.meta.PGHealth(ctx); err != nil {
		st.PGs = &pgStatus{Error: err.Error()}
	} else {
		st.PGs = summarisePGs(s.clusterMap, reps)
	}
	st.Warnings = certWarnings(ctx, s, st.Nodes, a.now())
	if a.g.json {
		return writeJSON(a.stdout, st)
	}
	printClusterStatus(a.stdout, st)
	return nil
}

// clusterStatus is `coffer admin status --json`.
type clusterStatus struct {
	Raft     meta.RaftStatus `json:"raft"`
	MapEpoch uint64          `json:"map_epoch"`
	PGCount  uint32          `json:"pg_count"`
	Profile  string          `json:"profile"`
	Nodes    []nodeRow       `json:"nodes"`
	// Warnings name certificates (of nodes, and issued ones) that expire within 30 days.
	Warnings []string `json:"warnings,omitempty"`
	// PGs counts the placement groups by state (as admin pgs does).
	PGs *pgStatus `json:"pgs,omitempty"`
}

// pgStatus is the PG part of `coffer admin status`.
type pgStatus struct {
	Counts map[string]int `json:"counts,omitempty"`
	// Warning says how many PGs are not healthy, and why, most common reason first:
	// "6 of 256 PGs degraded: 6 cannot place: 6 shards need 6 domains, 5 eligible".
	Warning string `json:"warning,omitempty"`
	Error   string `json:"error,omitempty"` // the PG reports could not be gathered
}

// summarisePGs counts the map's PGs by state, "unknown" only for a PG of which no report
// has arrived, and words the warning for the PGs that are not healthy.
func summarisePGs(m placement.Map, reps []placement.PGHealth) *pgStatus {
	byPG := map[uint32]placement.PGHealth{}
	for _, r := range reps {
		byPG[r.PG] = r
	}
	out := &pgStatus{Counts: map[string]int{}}
	reasons := map[string]int{}
	bad := 0
	for pg := range m.PGCount {
		r, ok := byPG[pg]
		state := "unknown"
		if ok {
			state = r.StateAt(m.Epoch)
		}
		out.Counts[state]++
		if state == "healthy" || state == "backfilling" || state == "unverified" {
			continue
		}
		bad++
		why := state
		if r.Reason != "" {
			why = r.Reason
		}
		reasons[why]++
	}
	if bad == 0 {
		return out
	}
	var states []string
	for _, st := range []string{"degraded", "inconsistent", "unreadable", "unknown"} {
		if out.Counts[st] > 0 {
			states = append(states, fmt.Sprintf("%d %s", out.Counts[st], st))
		}
	}
	whys := make([]string, 0, len(reasons))
	for w := range reasons {
		whys = append(whys, w)
	}
	sort.Slice(whys, func(i, j int) bool {
		if reasons[whys[i]] != reasons[whys[j]] {
			return reasons[whys[i]] > reasons[whys[j]]
		}
		return whys[i] < whys[j]
	})
	var parts []string
	for i, w := range whys {
		if i == 3 {
			parts = append(parts, fmt.Sprintf("%d more reasons", len(whys)-3))
			break
		}
		parts = append(parts, fmt.Sprintf("%d %s", reasons[w], w))
	}
	out.Warning = fmt.Sprintf("%d of %d PGs not healthy (%s): %s; see coffer admin pgs", bad, m.PGCount,
		strings.Join(states, ", "), strings.Join(parts, "; "))
	return out
}

// nodeRow is one node of the status table.
type nodeRow struct {
	ID       string   `json:"id"`
	Addr     string   `json:"addr"`
	Roles    []string `json:"roles"`
	Domain   string   `json:"domain"`
	State    string   `json:"state"`               // "up" or "down"
	MapState string   `json:"map_state,omitempty"` // the node's state in the cluster map
	Shards   int64    `json:"shards"`
	Bytes    int64    `json:"bytes"`
	Capacity int64    `json:"capacity"`
	// Full is set for a node whose store is on a file system with less than
	// diskFullBelow bytes left: its shards go to substitutes until space is freed.
	Full bool `json:"disk_full,omitempty"`
	// Damaged counts the segment records the node's store found damaged since it opened
	// (reported as corruption and left to repair, never guessed past).
	Damaged int64  `json:"damaged_records"`
	Error   string `json:"error,omitempty"` // why the node is down
	// Repair is the chunk node's repair worker progress.
	Repair *nodestat.Repair `json:"repair,omitempty"`
	// CertNotAfter is when the node's certificate expires.
	CertNotAfter time.Time `json:"cert_not_after,omitzero"`
}

// diskFullBelow is the free space under which admin status calls a chunk node's disk
// full: one segment's worth, less than a single Put batch's shards need.
const diskFullBelow = 64 << 20

// Node liveness as shown by admin status.
const (
	nodeUp   = "up"
	nodeDown = "down"
)

// statusTargets lists the nodes to ask: every node of the map, then every meta server not
// already listed (matched by ID or address). Rows start "down" with what the map and Raft
// know; queryNodes fills in the rest. The result is sorted by ID.
func statusTargets(m placement.Map, rs meta.RaftStatus) []nodeRow {
	var rows []nodeRow
	byID := map[string]int{}
	byAddr := map[string]int{}
	for _, n := range m.Nodes {
		byID[string(n.ID)] = len(rows)
		byAddr[n.Addr] = len(rows)
		rows = append(rows, nodeRow{ID: string(n.ID), Addr: n.Addr, Roles: []string{"chunk"},
			Domain: n.Domain, State: nodeDown, MapState: string(n.State)})
	}
	for _, srv := range rs.Servers {
		i, ok := byID[srv.ID]
		if !ok && srv.Addr != "" {
			i, ok = byAddr[srv.Addr]
		}
		if ok {
			rows[i].Roles = append(rows[i].Roles, "meta")
			continue
		}
		byID[srv.ID] = len(rows)
		rows = append(rows, nodeRow{ID: srv.ID, Addr: srv.Addr, Roles: []string{"meta"}, State: nodeDown})
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].ID < rows[j].ID })
	return rows
}

// queryNodes asks each row's node for "node.Status" (at most nodeStatusParallel at once,
// each bounded by nodeStatusTimeout) and returns the rows updated with the answers.
func queryNodes(ctx context.Context, c transport.Caller, rows []nodeRow) []nodeRow {
	out := append([]nodeRow(nil), rows...)
	sem := make(chan struct{}, nodeStatusParallel)
	var wg sync.WaitGroup
	for i := range out {
		if out[i].Addr == "" {
			out[i].Error = "no address"
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func(r *nodeRow) {
			defer wg.Done()
			defer func() { <-sem }()
			cctx, cancel := context.WithTimeout(ctx, nodeStatusTimeout)
			defer cancel()
			var st meta.NodeStatus
			if err := wire.Call(cctx, c, r.Addr, "node.Status", struct{}{}, &st); err != nil {
				r.State, r.Error = nodeDown, err.Error()
				return
			}
			applyNodeStatus(r, st)
		}(&out[i])
	}
	wg.Wait()
	return out
}

// applyNodeStatus fills r from a node's own report, which is authoritative for its ID,
// roles, domain and storage figures.
func applyNodeStatus(r *nodeRow, st meta.NodeStatus) {
	r.State, r.Error = nodeUp, ""
	if st.ID != "" {
		r.ID = st.ID
	}
	if len(st.Roles) > 0 {
		r.Roles = append([]string(nil), st.Roles...)
	}
	if st.Domain != "" {
		r.Domain = st.Domain
	}
	r.Shards, r.Bytes, r.Capacity, r.Damaged = st.Shards.Shards, st.Shards.Bytes, st.Shards.Capacity, st.Shards.Corrupt
	// A store on disk (segment files) reports the bytes left; a memory store reports 0
	// and no segments, which is "unknown", not "full".
	r.Full = st.Shards.Segments > 0 && st.Shards.Capacity < diskFullBelow
	r.Repair = st.Repair
	r.CertNotAfter = st.CertNotAfter
}

// printClusterStatus writes the human overview.
func printClusterStatus(w io.Writer, st clusterStatus) {
	rs := st.Raft
	leader := rs.Leader
	if leader == "" {
		leader = "(none)"
	} else if rs.LeaderAddr != "" {
		leader += " (" + rs.LeaderAddr + ")"
	}
	fmt.Fprintf(w, "Raft:     leader %s, term %d, commit index %d, applied %d\n", leader, rs.Term, rs.CommitIndex, rs.AppliedIndex)
	fmt.Fprintf(w, "Map:      epoch %d, %d PGs, erasure coding %s\n", st.MapEpoch, st.PGCount, st.Profile)
	up := 0
	for _, n := range st.Nodes {
		if n.State == nodeUp {
			up++
		}
	}
	fmt.Fprintf(w, "Nodes:    %d up, %d down\n", up, len(st.Nodes)-up)
	if p := st.PGs; p != nil {
		switch {
		case p.Error != "":
			fmt.Fprintf(w, "PGs:      unknown (%s)\n", p.Error)
		default:
			var parts []string
			for _, state := range []string{"healthy", "backfilling", "unverified", "degraded", "inconsistent", "unreadable", "unknown"} {
				if p.Counts[state] > 0 {
					parts = append(parts, fmt.Sprintf("%d %s", p.Counts[state], state))
				}
			}
			fmt.Fprintf(w, "PGs:      %s\n", strings.Join(parts, ", "))
		}
		if p.Warning != "" {
			fmt.Fprintf(w, "WARNING:  %s\n", p.Warning)
		}
	}

	// Only the leader probes every server; a follower's view (given when the leader did
	// not answer it) knows nothing of the others.
	partial := rs.Self != "" && rs.Self != rs.Leader
	if partial {
		fmt.Fprintf(w, "\nMeta servers (as seen by %s, a follower the leader did not answer: ? = unknown):\n", rs.Self)
	} else {
		fmt.Fprintln(w, "\nMeta servers:")
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  ID\tADDR\tVOTER\tLEADER\tREACHABLE")
	for _, s := range rs.Servers {
		reach := yesNo(s.Reachable)
		if partial && s.ID != rs.Self {
			reach = "?"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", s.ID, s.Addr, yesNo(s.Voter), yesNo(s.Leader), reach)
	}
	tw.Flush()

	fmt.Fprintln(w, "\nNodes:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  ID\tADDR\tROLES\tDOMAIN\tSTATE\tMAP\tSHARDS\tBYTES\tCAPACITY")
	for _, n := range st.Nodes {
		capacity := "-"
		if n.Capacity > 0 || n.Full {
			capacity = formatBytes(n.Capacity)
		}
		if n.Full {
			capacity += " (FULL)"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", n.ID, n.Addr, strings.Join(n.Roles, ","),
			dash(n.Domain), n.State, dash(n.MapState), n.Shards, formatBytes(n.Bytes), capacity)
	}
	tw.Flush()
	for _, n := range st.Nodes {
		if n.Error != "" {
			fmt.Fprintf(w, "  %s: %s\n", n.ID, n.Error)
		}
		if n.Damaged > 0 {
			fmt.Fprintf(w, "  %s: %d damaged segment records since it started (left to repair; the node's log names segment and offset)\n", n.ID, n.Damaged)
		}
		if n.Full && n.State == nodeUp {
			fmt.Fprintf(w, "WARNING:  %s: disk full (%s left): its PGs' new shards go to other nodes and repair cannot place shards on it; free space or add capacity\n",
				n.ID, formatBytes(n.Capacity))
		}
	}
	var reps []nodestat.Repair
	for _, n := range st.Nodes {
		if n.Repair != nil {
			reps = append(reps, *n.Repair)
		}
	}
	if len(reps) > 0 {
		fmt.Fprintln(w, "\nRepair:")
		printRepairStatus(w, reps)
	}
	printCertWarnings(w, st.Warnings)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
