package main

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/placement"
	"github.com/cofferhq/coffer/transport/wire"
)

// Growing and shrinking the cluster: chunk nodes in, meta voters in and out.

// mapStatePending is the state shown for a chunk node that runs and gossips but is not
// in the cluster map yet (`coffer admin node add` puts it there).
const mapStatePending = "pending"

func adminNodeAddSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin node add",
		args:  "ID",
		short: "put a running chunk node that is not in the cluster map yet in it, as joining",
		long: `A chunk node started with a node.yaml whose join list reaches the cluster (as
"cofferd join" writes it) gossips with the others but holds nothing: "coffer
admin nodes" lists it as pending. "admin node add" puts it in the cluster map
as joining, with the address and failure domain it advertises and --weight;
it still holds no PG. "coffer admin rebalance plan" then shows the data that
bringing it in moves, and "coffer admin rebalance apply" makes it active and
moves its share of the PGs to it.

Refused for a node that is not alive in gossip with the chunk role (unknown
ID), or that is already in the map (IDs are permanent, decommissioned ones
included). The action is recorded in the cluster's audit list with your
certificate's name and --reason. With --json: {"node", "action", "state",
"epoch"}.`,
		examples: []string{"coffer admin node add chunk-8 --reason \"rack 3\"", "coffer admin rebalance apply --wait"},
		new:      func() command { return &adminNodeAddCmd{} },
	}
}

type adminNodeAddCmd struct {
	reason string
	weight float64
}

func (c *adminNodeAddCmd) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.reason, "reason", "", "why (recorded in the audit list)")
	fs.Float64Var(&c.weight, "weight", 1, "the node's relative capacity (placement weight)")
}

func (c *adminNodeAddCmd) run(ctx context.Context, a *app, args []string) error {
	if len(args) != 1 {
		return usagef(adminNodeAddSpec(), "admin node add takes one node ID, got %d arguments", len(args))
	}
	if c.weight <= 0 {
		return usagef(adminNodeAddSpec(), "--weight must be > 0, got %g", c.weight)
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	m, err := s.meta.NodeAction(ctx, meta.NodeActionRequest{Node: placement.NodeID(args[0]), Action: meta.NodeAdd, Reason: c.reason, Weight: c.weight})
	if err != nil {
		return fmt.Errorf("add %s: %w", args[0], err)
	}
	nd, _ := m.Node(placement.NodeID(args[0]))
	if a.g.json {
		return writeJSON(a.stdout, nodeActionJSON{Node: args[0], Action: meta.NodeAdd, State: string(nd.State), Epoch: m.Epoch})
	}
	fmt.Fprintf(a.stdout, "node %s: %s at %s, domain %s (map epoch %d); bring it in with \"coffer admin rebalance apply\"\n",
		args[0], nd.State, nd.Addr, dash(nd.Domain), m.Epoch)
	return nil
}

// pendingNodes returns the chunk nodes the meta leader's gossip sees alive that are not
// in m: nodes that joined and wait for `admin node add`.
func pendingNodes(ctx context.Context, s *session, m placement.Map) ([]meta.Member, error) {
	rs, err := s.meta.RaftStatus(ctx)
	if err != nil {
		return nil, fmt.Errorf("raft status: %w", err)
	}
	if rs.LeaderAddr == "" {
		return nil, fmt.Errorf("no meta leader known")
	}
	cctx, cancel := context.WithTimeout(ctx, nodeStatusTimeout)
	defer cancel()
	var st meta.NodeStatus
	if err := wire.Call(cctx, s.caller, rs.LeaderAddr, "node.Status", struct{}{}, &st); err != nil {
		return nil, fmt.Errorf("gossip view of the meta leader %s: %w", rs.Leader, err)
	}
	var out []meta.Member
	for _, mb := range st.Members {
		if _, in := m.Node(placement.NodeID(mb.Name)); in || mb.State != "alive" || !slices.Contains(mb.Roles, "chunk") {
			continue
		}
		out = append(out, mb)
	}
	return out, nil
}

// metaListJSON is `coffer admin meta list --json`.
type metaListJSON struct {
	Leader  string        `json:"leader"`
	Servers []meta.Server `json:"servers"`
}

// metaChangeJSON is `coffer admin meta add|remove --json`.
type metaChangeJSON struct {
	Action  string        `json:"action"`
	ID      string        `json:"id"`
	Servers []meta.Server `json:"servers"`
}

func adminMetaListSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin meta list",
		short: "list the meta servers (Raft voters and non-voters)",
		long: `Prints the meta group's Raft configuration as the leader sees it: each server's
ID, address, whether it votes, whether it leads and whether it answers.

With --json: {"leader", "servers": [{"id", "addr", "voter", "leader",
"reachable"}]}.`,
		examples: []string{"coffer admin meta list"},
		new:      func() command { return &adminMetaCmd{action: "list"} },
	}
}

func adminMetaAddSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin meta add",
		args:  "ID ADDR",
		short: "add a meta server to the Raft voters",
		long: `Adds the meta server ID, listening at ADDR (its QUIC host:port), to the meta
group. Start it first with a node.yaml without a bootstrap section (as
"cofferd join" writes it for a meta token): it then waits to be added. It is
added as a non-voter, catches up with the log (the command waits), and is
then promoted to voter. Its certificate (a meta certificate named ID) gains
meta authority (Raft, forwarding) on every server from that moment.

Refused while another membership change is in progress or a server is
still a non-voter, when nothing answers at ADDR, when the server there is not
ID or already belongs to a Raft configuration, and for an ID that is already
a voter. Recorded in the audit list with --reason.

With --json: {"action", "id", "servers"} (servers as "admin meta list").`,
		examples: []string{"coffer admin meta add meta-4 10.0.0.4:7000 --reason \"replace meta-1\""},
		new:      func() command { return &adminMetaCmd{action: meta.MetaAdd} },
	}
}

func adminMetaRemoveSpec() *cmdSpec {
	return &cmdSpec{
		name:  "admin meta remove",
		args:  "ID",
		short: "remove a meta server from the Raft voters",
		long: `Removes the meta server ID from the meta group, one change at a time. Refused
when it would leave no voter, or when the voters that would remain and answer
are not a majority of them (the message names those that do not answer):
bring a voter back, or remove the silent one first. Removing the leader hands
leadership to another voter first. The removed server's certificate loses
meta authority at once; stop the server afterwards. Recorded in the audit
list with --reason.

With --json: {"action", "id", "servers"} (servers as "admin meta list").`,
		examples: []string{"coffer admin meta remove meta-1 --reason \"hardware retired\""},
		new:      func() command { return &adminMetaCmd{action: meta.MetaRemove} },
	}
}

type adminMetaCmd struct {
	action string
	reason string
}

func (c *adminMetaCmd) addFlags(fs *flag.FlagSet) {
	if c.action != "list" {
		fs.StringVar(&c.reason, "reason", "", "why (recorded in the audit list)")
	}
}

func (c *adminMetaCmd) run(ctx context.Context, a *app, args []string) error {
	var req meta.MetaChange
	switch c.action {
	case "list":
		if len(args) > 0 {
			return usagef(adminMetaListSpec(), "admin meta list takes no arguments, got %q", args[0])
		}
	case meta.MetaAdd:
		if len(args) != 2 {
			return usagef(adminMetaAddSpec(), "admin meta add takes a server ID and its address, got %d arguments", len(args))
		}
		req = meta.MetaChange{Action: meta.MetaAdd, ID: args[0], Addr: args[1], Reason: c.reason}
	default:
		if len(args) != 1 {
			return usagef(adminMetaRemoveSpec(), "admin meta remove takes one server ID, got %d arguments", len(args))
		}
		req = meta.MetaChange{Action: meta.MetaRemove, ID: args[0], Reason: c.reason}
	}
	s, err := connect(ctx, a)
	if err != nil {
		return err
	}
	defer s.Close()
	var rs meta.RaftStatus
	if c.action == "list" {
		if rs, err = s.meta.RaftStatus(ctx); err != nil {
			return fmt.Errorf("raft status: %w", err)
		}
		if a.g.json {
			return writeJSON(a.stdout, metaListJSON{Leader: rs.Leader, Servers: rs.Servers})
		}
	} else {
		if rs, err = s.meta.ChangeMeta(ctx, req); err != nil {
			return fmt.Errorf("meta %s %s: %w", req.Action, req.ID, err)
		}
		if a.g.json {
			return writeJSON(a.stdout, metaChangeJSON{Action: req.Action, ID: req.ID, Servers: rs.Servers})
		}
		verb := "added"
		if req.Action == meta.MetaRemove {
			verb = "removed"
		}
		fmt.Fprintf(a.stdout, "meta server %s %s\n", req.ID, verb)
	}
	printMetaServers(a, rs)
	return nil
}

func printMetaServers(a *app, rs meta.RaftStatus) {
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tADDR\tSUFFRAGE\tROLE\tREACHABLE")
	for _, sv := range rs.Servers {
		suf, role, reach := "voter", "follower", "yes"
		if !sv.Voter {
			suf = "non-voter"
		}
		if sv.Leader {
			role = "leader"
		}
		if !sv.Reachable {
			reach = "no"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", sv.ID, sv.Addr, suf, role, reach)
	}
	tw.Flush()
	var voters []string
	for _, sv := range rs.Servers {
		if sv.Voter {
			voters = append(voters, sv.ID)
		}
	}
	fmt.Fprintf(a.stdout, "%d voters (%s), a majority is %d\n", len(voters), strings.Join(voters, ", "), len(voters)/2+1)
}
