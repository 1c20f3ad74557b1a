package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/node"
	"github.com/cofferhq/coffer/node/nodetest"
)

// TestAdminGrowCLI drives node add and meta list|add|remove through the CLI: a joined
// chunk node shows pending, is refused under a wrong ID and added as joining; a joined
// meta server is added as a voter and removed again; the last voter is never removed;
// bad arguments are usage errors.
func TestAdminGrowCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster scenario")
	}
	c := nodetest.New(t, nodetest.Opts{Meta: 1, Chunk: 6, PGCount: 8})
	cli := func(args ...string) (int, string, string) {
		return runCLI(t, map[string]string{}, append([]string{"--config", node.DevClientConfig(c.Dir)}, args...)...)
	}
	c.AddNode(t, "chunk-7", []node.Role{node.RoleChunk}, "rack-7")
	poll(t, time.Minute, "chunk-7 pending", func() (bool, string) {
		code, out, errOut := cli("admin", "nodes", "--json")
		if code != 0 {
			return false, errOut
		}
		var n nodesJSON
		if err := json.Unmarshal([]byte(out), &n); err != nil {
			t.Fatalf("admin nodes --json: %v: %s", err, out)
		}
		for _, p := range n.Pending {
			if p.Name == "chunk-7" && p.Domain == "rack-7" && p.RPCAddr == c.Node("chunk-7").Addr() {
				return true, ""
			}
		}
		return false, out
	})
	if code, out, _ := cli("admin", "nodes"); code != 0 || !strings.Contains(out, "pending") {
		t.Fatalf("admin nodes: %d %s", code, out)
	}
	if code, out, _ := cli("admin", "status", "--json"); code != 0 || !strings.Contains(out, `"map_state":"pending"`) {
		t.Fatalf("admin status does not show chunk-7 pending: %d %s", code, out)
	}
	if code, _, errOut := cli("admin", "node", "add", "chunk-99"); code != 1 || !strings.Contains(errOut, "no running chunk node of that name") {
		t.Fatalf("node add of an unknown ID: %d %s", code, errOut)
	}
	if code, _, _ := cli("admin", "node", "add"); code != 2 {
		t.Fatalf("node add without an ID: exit %d, want 2", code)
	}
	code, out, errOut := cli("admin", "node", "add", "chunk-7", "--weight", "2", "--json")
	var na nodeActionJSON
	if code != 0 || json.Unmarshal([]byte(out), &na) != nil || na.State != "joining" || na.Action != "add" {
		t.Fatalf("node add: %d %s %s", code, out, errOut)
	}
	if code, _, errOut := cli("admin", "node", "add", "chunk-7"); code != 1 || !strings.Contains(errOut, "already in the cluster map") {
		t.Fatalf("second node add: %d %s", code, errOut)
	}
	if code, out, errOut := cli("admin", "rebalance", "plan", "--json"); code != 0 || !strings.Contains(out, "chunk-7") {
		t.Fatalf("rebalance plan: %d %s %s", code, out, errOut)
	}

	m2 := c.AddNode(t, "meta-2", []node.Role{node.RoleMeta}, "")
	code, out, errOut = cli("admin", "meta", "add", "meta-2", m2.Addr(), "--reason", "grow", "--json")
	var mc metaChangeJSON
	if code != 0 || json.Unmarshal([]byte(out), &mc) != nil || len(mc.Servers) != 2 {
		t.Fatalf("meta add: %d %s %s", code, out, errOut)
	}
	code, out, _ = cli("admin", "meta", "list", "--json")
	var ml metaListJSON
	if code != 0 || json.Unmarshal([]byte(out), &ml) != nil || len(ml.Servers) != 2 || ml.Leader == "" {
		t.Fatalf("meta list: %d %s", code, out)
	}
	if code, out, _ := cli("admin", "meta", "list"); code != 0 || !strings.Contains(out, "2 voters (meta-1, meta-2), a majority is 2") {
		t.Fatalf("meta list: %d %s", code, out)
	}
	if code, _, _ := cli("admin", "meta", "add", "meta-3"); code != 2 {
		t.Fatalf("meta add without an address: exit %d, want 2", code)
	}
	if code, _, errOut := cli("admin", "meta", "remove", "meta-9"); code != 1 || !strings.Contains(errOut, `"meta-9" is not a meta server`) {
		t.Fatalf("meta remove of an unknown ID: %d %s", code, errOut)
	}
	code, out, errOut = cli("admin", "meta", "remove", "meta-2", "--json")
	if code != 0 || json.Unmarshal([]byte(out), &mc) != nil || len(mc.Servers) != 1 {
		t.Fatalf("meta remove: %d %s %s", code, out, errOut)
	}
	if code, _, errOut := cli("admin", "meta", "remove", "meta-1"); code != 1 || !strings.Contains(errOut, "last voter") {
		t.Fatalf("remove the last voter: %d %s", code, errOut)
	}
	code, out, _ = cli("admin", "audit", "--json")
	for _, want := range []string{`"node.add"`, `"meta.add"`, `"meta.remove"`} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("audit list lacks %s", want)
		}
	}
}
