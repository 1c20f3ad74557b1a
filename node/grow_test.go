package node_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/metarpc"
	"github.com/cofferhq/coffer/node"
	"github.com/cofferhq/coffer/node/nodetest"
	"github.com/cofferhq/coffer/placement"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
)

// backupLoop backs up a fresh small tree again and again until stop is closed, each
// time on a client that first learns the current meta servers (as a CLI run does), and
// records every snapshot with its source, or the first error.
type backupLoop struct {
	mu    sync.Mutex
	snaps []meta.Snapshot
	srcs  []string
	errs  []error
}

func (l *backupLoop) run(t *testing.T, a *client.Agent, mc *metarpc.Client, dir string, stop <-chan struct{}) {
	// One backup starts at most every 500 ms (pacing, so that the cluster's own work
	// keeps some CPU on a loaded machine).
	pace := time.NewTicker(500 * time.Millisecond)
	defer pace.Stop()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-pace.C:
		}
		src := filepath.Join(dir, fmt.Sprintf("src-%d", i))
		nodetest.MakeTree(t, src, nodetest.TreeOpts{Seed: uint64(100 + i)})
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		_, _ = mc.RefreshServers(ctx)
		res, err := a.Backup(ctx, client.BackupOptions{Paths: []string{src}})
		cancel()
		l.mu.Lock()
		if err != nil {
			l.errs = append(l.errs, fmt.Errorf("backup %d: %w", i, err))
		} else {
			l.snaps, l.srcs = append(l.snaps, res.Snapshot), append(l.srcs, src)
		}
		l.mu.Unlock()
	}
}

func (l *backupLoop) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.snaps) + len(l.errs)
}

// waitBackups waits until the loop has finished n more backups than before.
func (l *backupLoop) waitBackups(t *testing.T, n int) {
	t.Helper()
	target := l.count() + n
	waitFor(t, 3*time.Minute, fmt.Sprintf("%d more backups", n), func() (bool, string) {
		c := l.count()
		return c >= target, fmt.Sprintf("%d of %d", c, target)
	})
}

// TestGrowAndShrink is the issue 13 acceptance scenario for a running cluster with data:
// a chunk node that joined the way `cofferd join` makes one is added to the map and
// rebalanced (it holds its share of the PGs; the data restores), a meta voter is added
// and another (a seed) removed, while backups run all along and every one succeeds and
// restores. It also checks the refusals: unknown IDs, a quorum-losing removal,
// non-admin callers.
func TestGrowAndShrink(t *testing.T) {
	if testing.Short() || os.Getenv("COFFER_FAULTS") == "" {
		t.Skip("cluster scenario: make test-faults (COFFER_FAULTS=1)")
	}
	c := nodetest.New(t, nodetest.Opts{Meta: 3, Chunk: 6, PGCount: 32, RepairInterval: time.Second})
	cfg := c.Connect(t)
	if _, err := client.InitVault(ctxT(t, 3*time.Minute), cfg, "default", passphrase); err != nil && !errors.Is(err, meta.ErrExists) {
		t.Fatal(err)
	}
	a, err := client.Open(ctxT(t, 3*time.Minute), cfg, "default", passphrase)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	src0 := filepath.Join(t.TempDir(), "src")
	nodetest.MakeTree(t, src0, nodetest.TreeOpts{Seed: 1, BigFile: 4 << 20})
	snap0 := backup(t, a, src0)
	admin := cfg.Meta.(*metarpc.Client)
	agentID := identityFor(t, c, pki.IssueRequest{CommonName: "laptop", Role: transport.RoleAgent, Vaults: []string{"default"}})
	agent := nodetest.ConnectWith(t, agentID, cfg.Meta.(*metarpc.Client).Addrs(), c.ChunkAddrs()).Meta.(*metarpc.Client)

	// Backups run throughout, on their own client.
	lcfg := c.Connect(t)
	la, err := client.Open(ctxT(t, 3*time.Minute), lcfg, "default", passphrase)
	if err != nil {
		t.Fatal(err)
	}
	defer la.Close()
	loop := &backupLoop{}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		loop.run(t, la, lcfg.Meta.(*metarpc.Client), t.TempDir(), stop)
	}()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-done
	}()
	loop.waitBackups(t, 1)

	// A chunk node joins: it gossips but is not in the map (pending) until node add.
	c.AddNode(t, "chunk-7", []node.Role{node.RoleChunk}, "chunk-7")
	waitFor(t, 3*time.Minute, "chunk-7 pending in the leader's gossip view", func() (bool, string) {
		l := c.Leader()
		if l == nil {
			return false, "no leader"
		}
		st, err := l.Status(ctxT(t, 10*time.Second))
		if err != nil {
			return false, err.Error()
		}
		for _, m := range st.Members {
			if m.Name == "chunk-7" && m.State == "alive" && slices.Contains(m.Roles, "chunk") && m.RPCAddr != "" {
				return true, ""
			}
		}
		return false, fmt.Sprintf("members %+v", st.Members)
	})
	// NB: under load (-race on a busy machine) leadership may be moving: poll for a map.
	var before *placement.Map
	waitFor(t, 3*time.Minute, "the cluster map", func() (bool, string) { before = leaderMap(t, c); return before != nil, "no leader" })
	if _, in := before.Node("chunk-7"); in {
		t.Fatal("chunk-7 is in the map before node add")
	}
	// Refusals first: unknown ID, non-admin caller.
	if _, err := admin.NodeAction(ctxT(t, 3*time.Minute), meta.NodeActionRequest{Node: "chunk-99", Action: meta.NodeAdd}); !errors.Is(err, meta.ErrNotFound) {
		t.Fatalf("node add of an unknown ID: %v, want ErrNotFound", err)
	}
	if _, err := agent.NodeAction(ctxT(t, 3*time.Minute), meta.NodeActionRequest{Node: "chunk-7", Action: meta.NodeAdd}); !errors.Is(err, meta.ErrDenied) {
		t.Fatalf("node add by an agent: %v, want ErrDenied", err)
	}
	m, err := admin.NodeAction(ctxT(t, 3*time.Minute), meta.NodeActionRequest{Node: "chunk-7", Action: meta.NodeAdd, Reason: "grow"})
	if err != nil {
		t.Fatalf("node add: %v", err)
	}
	if n, _ := m.Node("chunk-7"); n.State != placement.StateJoining || n.Addr != c.Node("chunk-7").Addr() {
		t.Fatalf("chunk-7 after node add: %+v", n)
	}
	loop.waitBackups(t, 1)
	m, err = admin.NodeAction(ctxT(t, 3*time.Minute), meta.NodeActionRequest{Action: meta.RebalanceApply})
	if err != nil {
		t.Fatalf("rebalance apply: %v", err)
	}
	if n, _ := m.Node("chunk-7"); n.State != placement.StateActive {
		t.Fatalf("chunk-7 after rebalance apply: %+v", n)
	}

	// A meta server joins the group: started without bootstrap, then meta add.
	m4 := c.AddNode(t, "meta-4", []node.Role{node.RoleMeta}, "")
	if _, err := agent.ChangeMeta(ctxT(t, 3*time.Minute), meta.MetaChange{Action: meta.MetaAdd, ID: "meta-4", Addr: m4.Addr()}); !errors.Is(err, meta.ErrDenied) {
		t.Fatalf("meta add by an agent: %v, want ErrDenied", err)
	}
	if _, err := admin.ChangeMeta(ctxT(t, 3*time.Minute), meta.MetaChange{Action: meta.MetaAdd, ID: "meta-5", Addr: m4.Addr()}); !errors.Is(err, meta.ErrInvalid) {
		t.Fatalf("meta add naming the wrong server: %v, want ErrInvalid", err)
	}
	rs, err := admin.ChangeMeta(ctxT(t, 5*time.Minute), meta.MetaChange{Action: meta.MetaAdd, ID: "meta-4", Addr: m4.Addr(), Reason: "grow"})
	if err != nil {
		t.Fatalf("meta add: %v", err)
	}
	if v := voters(rs); len(v) != 4 || !slices.Contains(v, "meta-4") {
		t.Fatalf("voters after meta add: %v", v)
	}
	loop.waitBackups(t, 1)

	// Remove meta-1 (a seed of every config), then stop it.
	if _, err := admin.ChangeMeta(ctxT(t, 3*time.Minute), meta.MetaChange{Action: meta.MetaRemove, ID: "meta-99"}); !errors.Is(err, meta.ErrNotFound) {
		t.Fatalf("meta remove of an unknown ID: %v, want ErrNotFound", err)
	}
	rs, err = admin.ChangeMeta(ctxT(t, 2*time.Minute), meta.MetaChange{Action: meta.MetaRemove, ID: "meta-1", Reason: "retire"})
	if err != nil {
		t.Fatalf("meta remove: %v", err)
	}
	if v := voters(rs); len(v) != 3 || slices.Contains(v, "meta-1") {
		t.Fatalf("voters after meta remove: %v", v)
	}
	if err := c.Stop("meta-1"); err != nil {
		t.Fatal(err)
	}
	loop.waitBackups(t, 2)

	// Quorum: with one of the three voters down, removing a live one is refused.
	l := c.Leader()
	waitFor(t, 3*time.Minute, "a leader", func() (bool, string) { l = c.Leader(); return l != nil, "none" })
	var down, target string
	for _, id := range []string{"meta-2", "meta-3", "meta-4"} {
		switch {
		case id == l.ID():
		case down == "":
			down = id
		default:
			target = id
		}
	}
	if err := c.Kill(down); err != nil {
		t.Fatal(err)
	}
	_, err = admin.ChangeMeta(ctxT(t, 3*time.Minute), meta.MetaChange{Action: meta.MetaRemove, ID: target})
	if !errors.Is(err, meta.ErrInvalid) || !strings.Contains(err.Error(), "would lose the quorum") || !strings.Contains(err.Error(), down) {
		t.Fatalf("quorum-losing remove of %s with %s down: %v", target, down, err)
	}
	if err := c.Restart(down); err != nil {
		t.Fatal(err)
	}
	loop.waitBackups(t, 1)

	// The new chunk node holds its share and the data restores.
	waitFor(t, 3*time.Minute, "every PG healthy with chunk-7", func() (bool, string) { return allHealthy(t, c) })
	checkPlacement(t, c)
	if st, err := c.Node("chunk-7").Shards().Stats(ctxT(t, 3*time.Minute)); err != nil || st.Shards == 0 {
		t.Fatalf("chunk-7 holds no shard after the rebalance: %+v %v", st, err)
	}
	close(stop)
	<-done
	restoreAndCompare(t, a, snap0, src0)
	loop.mu.Lock()
	defer loop.mu.Unlock()
	if len(loop.errs) > 0 {
		t.Fatalf("%d of %d backups failed during the changes: %v", len(loop.errs), len(loop.errs)+len(loop.snaps), loop.errs)
	}
	t.Logf("%d backups during the changes, all succeeded", len(loop.snaps))
	for i, s := range loop.snaps {
		restoreAndCompare(t, a, s, loop.srcs[i])
	}

	// The audit list holds each change. It is read from whichever meta server answers,
	// which may be the one just restarted and still catching up: poll until it shows all.
	wants := []string{"node.add chunk-7 ok", "node.add chunk-99 refused", "meta.add meta-4 ok", "meta.remove meta-1 ok",
		"meta.remove " + target + " refused", "meta.add meta-5 refused"}
	waitFor(t, time.Minute, "every change in the audit log", func() (bool, string) {
		audit, err := admin.AuditLog(ctxT(t, 10*time.Second), 0, 0)
		if err != nil {
			return false, err.Error()
		}
		seen := map[string]bool{}
		for _, e := range audit {
			seen[e.Action+" "+e.Target+" "+e.Outcome] = true
		}
		var missing []string
		for _, want := range wants {
			if !seen[want] {
				missing = append(missing, want)
			}
		}
		return len(missing) == 0, fmt.Sprintf("audit list lacks %q", missing)
	})
}

func voters(rs meta.RaftStatus) []string {
	var out []string
	for _, s := range rs.Servers {
		if s.Voter {
			out = append(out, s.ID)
		}
	}
	return out
}
