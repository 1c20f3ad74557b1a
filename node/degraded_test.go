package node_test

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore/coord"
	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/client/clientconfig"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/node"
	"github.com/cofferhq/coffer/node/nodetest"
	"github.com/cofferhq/coffer/placement"
	"github.com/cofferhq/coffer/transport/pki"
)

// last is the report pgStates saw last for each PG (failure messages).
var last = map[uint32]placement.PGHealth{}

// pgStates returns the state (with its reason) of every PG of the leader's map as admin
// pgs shows it, "unknown" only for a PG of which no report has arrived.
func pgStates(t *testing.T, c *nodetest.Cluster) (*placement.Map, map[uint32]string, error) {
	m := leaderMap(t, c)
	l := c.Leader()
	if m == nil || l == nil {
		return nil, nil, errors.New("no leader")
	}
	reps, err := l.Meta().PGHealth(ctxT(t, 10*time.Second))
	if err != nil {
		return nil, nil, err
	}
	out := map[uint32]string{}
	for pg := range m.PGCount {
		out[pg] = "unknown"
	}
	for _, r := range reps {
		if r.Reporter != "" {
			out[r.PG] = r.Describe()
			last[r.PG] = r
		}
	}
	return m, out, nil
}

// openAgent initialises the default vault (if needed) and opens it with cfg.
func openAgent(t *testing.T, cfg client.Config) *client.Agent {
	t.Helper()
	if _, err := client.InitVault(ctxT(t, time.Minute), cfg, "default", passphrase); err != nil && !errors.Is(err, meta.ErrExists) {
		t.Fatal(err)
	}
	a, err := client.Open(ctxT(t, time.Minute), cfg, "default", passphrase)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// TestDegradedPGsSayWhy is the first acceptance line of issue 14: with 6 chunk nodes
// and 4+2, killing one makes every PG report "degraded (cannot place …)" within a repair
// interval of the map marking it down, and no PG is ever "unknown" once the first
// reports are in: not while the node is down, not after it is out (before, every repair
// pass failed at the first PG once the node was out and all PGs showed "unknown").
// Backups keep working on the five nodes left and restore identically.
func TestDegradedPGsSayWhy(t *testing.T) {
	if testing.Short() || os.Getenv("COFFER_FAULTS") == "" {
		t.Skip("cluster fault scenario: make test-faults (COFFER_FAULTS=1)")
	}
	c := nodetest.New(t, nodetest.Opts{Chunk: 6, PGCount: 32, DownOut: 5 * time.Second, RepairInterval: time.Second})
	a := openAgent(t, c.Connect(t))
	src := filepath.Join(t.TempDir(), "src")
	nodetest.MakeTree(t, src, nodetest.TreeOpts{Seed: 14})
	backup(t, a, src)
	waitFor(t, time.Minute, "healthy before the failure", func() (bool, string) { return allHealthy(t, c) })

	if err := c.Kill("chunk-4"); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	var downAt, whyAt time.Time
	check := func(want string) (bool, string) {
		m, states, err := pgStates(t, c)
		if err != nil {
			return false, err.Error()
		}
		if n, _ := m.Node("chunk-4"); n.State == placement.StateDown && downAt.IsZero() {
			downAt = time.Now()
		}
		bad := 0
		var sample string
		for pg, st := range states {
			if st == "unknown" {
				t.Fatalf("pg %d is unknown %v after the kill (map epoch %d): every PG had a report", pg, time.Since(killed), m.Epoch)
			}
			if !strings.HasPrefix(st, want) {
				bad++
				sample = fmt.Sprintf("pg %d: %s by %s at epoch %d; map epoch %d", pg, st, last[pg].Reporter, last[pg].Epoch, m.Epoch)
			}
		}
		return bad == 0, fmt.Sprintf("%d PGs not %q (%s)", bad, want, sample)
	}
	waitFor(t, time.Minute, "every PG degraded (cannot place …)", func() (bool, string) {
		return check("degraded (cannot place: 6 shards need 6 domains, 5 ")
	})
	whyAt = time.Now()
	t.Logf("kill → every PG \"degraded (cannot place …)\": %v (map marked it down after %v)", whyAt.Sub(killed).Round(time.Millisecond), downAt.Sub(killed).Round(time.Millisecond))
	waitFor(t, time.Minute, "chunk-4 out and every PG degraded (cannot place: … 5 eligible)", func() (bool, string) {
		m := leaderMap(t, c)
		if m == nil {
			return false, "no leader"
		}
		if n, _ := m.Node("chunk-4"); n.State != placement.StateOut {
			_, msg := check("degraded (cannot place")
			return false, "chunk-4 " + string(n.State) + "; " + msg
		}
		return check("degraded (cannot place: 6 shards need 6 domains, 5 eligible)")
	})
	// Writes go on: 5 distinct nodes take each stripe.
	src2 := filepath.Join(t.TempDir(), "src2")
	nodetest.MakeTree(t, src2, nodetest.TreeOpts{Seed: 15})
	snap := backup(t, a, src2)
	restoreAndCompare(t, a, snap, src2)
}

// TestHealSevenAfterOneOut is the second acceptance line: with 7 chunk nodes, one killed
// node is marked out after down_out_interval and repair brings every PG back to healthy
// (k+m shards on the six left).
func TestHealSevenAfterOneOut(t *testing.T) {
	if testing.Short() || os.Getenv("COFFER_FAULTS") == "" {
		t.Skip("cluster fault scenario: make test-faults (COFFER_FAULTS=1)")
	}
	const downOut = 5 * time.Second
	c := nodetest.New(t, nodetest.Opts{Chunk: 7, PGCount: 32, DownOut: downOut, RepairInterval: time.Second})
	a := openAgent(t, c.Connect(t))
	src := filepath.Join(t.TempDir(), "src")
	nodetest.MakeTree(t, src, nodetest.TreeOpts{Seed: 16})
	snap := backup(t, a, src)
	waitFor(t, time.Minute, "healthy before the failure", func() (bool, string) { return allHealthy(t, c) })
	if err := c.Kill("chunk-3"); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	var out time.Time
	waitFor(t, 2*time.Minute, "chunk-3 out and every PG healthy", func() (bool, string) {
		m := leaderMap(t, c)
		if m == nil {
			return false, "no leader"
		}
		if n, _ := m.Node("chunk-3"); n.State != placement.StateOut {
			return false, "chunk-3 " + string(n.State)
		}
		if out.IsZero() {
			out = time.Now()
		}
		return allHealthy(t, c)
	})
	t.Logf("kill → out %v (down_out_interval %v); out → every PG healthy %v",
		out.Sub(killed).Round(time.Millisecond), downOut, time.Since(out).Round(time.Millisecond))
	checkPlacement(t, c)
	restoreAndCompare(t, a, snap, src)
}

// TestBackupWithTwoOfSevenDown is the cluster side of the in-process acceptance line:
// two of seven chunk nodes are killed in the middle of a backup and the backup completes
// (the coordinator writes the dead owners' shards to substitutes); the snapshot restores
// identically, and once the map marks the two out repair re-protects every PG on the
// five left... as far as five nodes can: the PGs report "degraded (cannot place …)".
// The agent talks to one coordinator that stays up (failing over to another coordinator
// is the client's part, tested there).
func TestBackupWithTwoOfSevenDown(t *testing.T) {
	if testing.Short() || os.Getenv("COFFER_FAULTS") == "" {
		t.Skip("cluster fault scenario: make test-faults (COFFER_FAULTS=1)")
	}
	c := nodetest.New(t, nodetest.Opts{Chunk: 7, PGCount: 32, DownOut: time.Hour, RepairInterval: time.Second})
	f, err := clientconfig.Load(node.DevClientConfig(c.Dir))
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.LoadIdentity(f.CA, f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	m := leaderMap(t, c)
	if m == nil {
		t.Fatal("no leader")
	}
	coordAddr := ""
	for _, n := range m.Nodes {
		if n.ID == "chunk-1" {
			coordAddr = n.Addr
		}
	}
	a := openAgent(t, nodetest.ConnectWith(t, id, f.Meta, []string{coordAddr}))
	src := filepath.Join(t.TempDir(), "src")
	nodetest.MakeTree(t, src, nodetest.TreeOpts{Seed: 17})
	for i := range 3 {
		blob := make([]byte, 6<<20)
		_, _ = rand.Read(blob)
		if err := os.WriteFile(filepath.Join(src, fmt.Sprintf("blob%d", i)), blob, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var opened atomic.Int64
	var killedAt time.Time
	res, err := a.Backup(ctxT(t, 5*time.Minute), client.BackupOptions{Paths: []string{src}, OnOpen: func(string) {
		if opened.Add(1) == 3 {
			for _, id := range []string{"chunk-5", "chunk-6"} {
				if err := c.Kill(id); err != nil {
					t.Errorf("kill %s: %v", id, err)
				}
			}
			killedAt = time.Now()
		}
	}})
	if err != nil {
		t.Fatalf("backup with 2 of 7 chunk nodes killed in the middle: %v", err)
	}
	if killedAt.IsZero() {
		t.Fatal("the nodes were not killed during the backup")
	}
	t.Logf("backup completed %v after the kill: %d bytes read", time.Since(killedAt).Round(time.Millisecond), res.BytesRead)
	var subs int64
	for _, n := range c.Nodes {
		if d, ok := n.Chunks().(interface{ Degraded() coord.DegradedWrites }); ok {
			subs += d.Degraded().SubstituteShards
		}
	}
	t.Logf("substitute shards written: %d", subs)
	if subs == 0 {
		t.Fatal("no shard went to a substitute")
	}
	restoreAndCompare(t, a, res.Snapshot, src)
}
