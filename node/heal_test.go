package node_test

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/node/nodetest"
	"github.com/cofferhq/coffer/placement"
)

// waitFor polls cond every 100 ms until it returns true or d passes; the last status
// message goes into the failure.
func waitFor(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	last := ""
	for time.Now().Before(deadline) {
		ok, msg := cond()
		if ok {
			return
		}
		last = msg
		time.Sleep(100 * time.Millisecond) // polling interval, not synchronisation
	}
	t.Fatalf("%s: not reached within %v (last: %s)", what, d, last)
}

// leaderMap returns the map of the current meta leader's FSM via its service.
func leaderMap(t *testing.T, c *nodetest.Cluster) *placement.Map {
	l := c.Leader()
	if l == nil {
		return nil
	}
	m, err := l.Meta().ClusterMap(ctxT(t, 10*time.Second))
	if err != nil {
		return nil
	}
	return &m
}

// allHealthy reports whether every PG has a report at the current epoch counting all
// k+m shards healthy and none misplaced.
func allHealthy(t *testing.T, c *nodetest.Cluster) (bool, string) {
	m := leaderMap(t, c)
	if m == nil {
		return false, "no leader"
	}
	l := c.Leader()
	if l == nil { // leadership moved since leaderMap
		return false, "no leader"
	}
	reps, err := l.Meta().PGHealth(ctxT(t, 10*time.Second))
	if err != nil {
		return false, err.Error()
	}
	good := 0
	for _, r := range reps {
		if r.Epoch == m.Epoch && r.State() == "healthy" {
			good++
		}
	}
	return good == int(m.PGCount), fmt.Sprintf("%d of %d PGs healthy at epoch %d", good, m.PGCount, m.Epoch)
}

// checkPlacement checks every stored shard against the current map: each chunk has
// all k+m shards, each on its desired owner, and no PG puts more shards in one failure
// domain than the domains require.
func checkPlacement(t *testing.T, c *nodetest.Cluster) int {
	t.Helper()
	m := leaderMap(t, c)
	n := m.Profile.N()
	held := map[chunk.ID]map[uint8]string{}
	for _, nd := range c.Nodes {
		s := nd.Shards()
		if s == nil || nd.Map() == nil {
			continue
		}
		if mn, ok := m.Node(placement.NodeID(nd.ID())); !ok || mn.State != placement.StateActive {
			continue
		}
		err := s.EnumerateShards(ctxT(t, time.Minute), nil, func(si chunkstore.ShardInfo) error {
			if held[si.Key.ID] == nil {
				held[si.Key.ID] = map[uint8]string{}
			}
			held[si.Key.ID][si.Key.Index] = nd.ID()
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	domains := map[string]bool{}
	for _, nd := range m.Nodes {
		if nd.State == placement.StateActive {
			domains[nd.Domain] = true
		}
	}
	capPerDomain := (n + len(domains) - 1) / len(domains)
	for id, h := range held {
		desired, err := m.Place(m.PG(id), n)
		if err != nil {
			t.Fatal(err)
		}
		perDomain := map[string]int{}
		for i, d := range desired {
			perDomain[d.Domain]++
			if h[uint8(i)] != string(d.ID) {
				t.Errorf("chunk %s shard %d: on %q, owner %s", id.Str(), i, h[uint8(i)], d.ID)
			}
		}
		for dom, k := range perDomain {
			if k > capPerDomain {
				t.Errorf("pg %d: %d shards in domain %s (cap %d with %d domains)", m.PG(id), k, dom, capPerDomain, len(domains))
			}
		}
	}
	return len(held)
}

// TestHealAfterNodeLoss is the re-protection acceptance scenario: 8 chunk nodes in 4
// failure domains; two are lost for good; after the (shortened) down→out interval every
// PG returns to k+m healthy shards on the surviving nodes and the snapshot restores
// bit-identically. One lost node then comes back and rejoins.
func TestHealAfterNodeLoss(t *testing.T) {
	if testing.Short() || os.Getenv("COFFER_FAULTS") == "" {
		t.Skip("cluster fault scenario: make test-faults (COFFER_FAULTS=1)")
	}
	c := nodetest.New(t, nodetest.Opts{Chunk: 8, Domains: 4, PGCount: 32, DownOut: 3 * time.Second, RepairInterval: time.Second})
	cfg := c.Connect(t)
	// NB: under heavy load the meta client may retry a create that did commit.
	if _, err := client.InitVault(ctxT(t, time.Minute), cfg, "default", passphrase); err != nil && !errors.Is(err, meta.ErrExists) {
		t.Fatal(err)
	}
	a, err := client.Open(ctxT(t, time.Minute), cfg, "default", passphrase)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	src := filepath.Join(t.TempDir(), "src")
	nodetest.MakeTree(t, src, nodetest.TreeOpts{Seed: 5})
	blob := make([]byte, 12<<20)
	_, _ = rand.Read(blob)
	if err := os.WriteFile(filepath.Join(src, "blob"), blob, 0o644); err != nil {
		t.Fatal(err)
	}
	snap := backup(t, a, src)
	waitFor(t, 30*time.Second, "healthy before the failure", func() (bool, string) { return allHealthy(t, c) })
	chunks := checkPlacement(t, c)
	t.Logf("%d chunks placed on 8 nodes in 4 domains", chunks)

	// Lose two nodes in different domains: one crashes, one shuts down.
	if err := c.Kill("chunk-2"); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop("chunk-7"); err != nil {
		t.Fatal(err)
	}
	lost := time.Now()

	waitFor(t, time.Minute, "lost nodes marked out", func() (bool, string) {
		m := leaderMap(t, c)
		if m == nil {
			return false, "no leader"
		}
		n2, _ := m.Node("chunk-2")
		n7, _ := m.Node("chunk-7")
		return n2.State == placement.StateOut && n7.State == placement.StateOut, fmt.Sprintf("chunk-2 %s, chunk-7 %s", n2.State, n7.State)
	})
	out := time.Now()
	// Reads keep working while the cluster heals.
	if err := a.Dump(ctxT(t, time.Minute), snap, filepath.Join(filepath.Base(src), "blob"), io.Discard); err != nil {
		t.Fatalf("read during repair: %v", err)
	}
	waitFor(t, 2*time.Minute, "every PG re-protected", func() (bool, string) { return allHealthy(t, c) })
	healed := time.Now()
	var written int64
	for _, nd := range c.Nodes {
		if r := nd.Repair(); r != nil && nd.Map() != nil {
			written += r.Status().BytesWritten
		}
	}
	reprotect := healed.Sub(out)
	t.Logf("re-protect: marked out %v after the loss, re-protected %v later: %d shard bytes rebuilt (%.1f MB/s)",
		out.Sub(lost).Round(time.Millisecond), reprotect.Round(time.Millisecond), written, float64(written)/reprotect.Seconds()/1e6)
	if written == 0 {
		t.Fatal("no shard was rebuilt")
	}
	if n := checkPlacement(t, c); n != chunks {
		t.Fatalf("%d chunks on the survivors, want %d", n, chunks)
	}
	restoreAndCompare(t, a, snap, src)

	// The stopped node comes back: it rejoins as active and the PGs settle again.
	if err := c.Restart("chunk-7"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "chunk-7 rejoins", func() (bool, string) {
		m := leaderMap(t, c)
		if m == nil {
			return false, "no leader"
		}
		n7, _ := m.Node("chunk-7")
		return n7.State == placement.StateActive, string(n7.State)
	})
	waitFor(t, 2*time.Minute, "healthy after the rejoin", func() (bool, string) { return allHealthy(t, c) })
	checkPlacement(t, c)
	restoreAndCompare(t, a, snap, src)

	// NB: leadership may move while nodes restart: ask whichever node leads now.
	var audit []meta.AuditEntry
	waitFor(t, 30*time.Second, "the audit log from the leader", func() (bool, string) {
		l := c.Leader()
		if l == nil {
			return false, "no leader"
		}
		a, err := l.Meta().AuditLog(ctxT(t, 10*time.Second), 0, 0)
		if err != nil {
			return false, err.Error()
		}
		audit = a
		return true, ""
	})
	seen := map[string]bool{}
	for _, e := range audit {
		seen[e.Action+" "+e.Target] = true
	}
	for _, want := range []string{"node.down chunk-2", "node.out chunk-2", "node.out chunk-7", "node.active chunk-7"} {
		if !seen[want] {
			t.Errorf("audit list lacks %q: %+v", want, audit)
		}
	}
}
