package node_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/chunkrpc"
	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/client/clientconfig"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/metarpc"
	"github.com/cofferhq/coffer/node"
	"github.com/cofferhq/coffer/node/nodetest"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
	cquic "github.com/cofferhq/coffer/transport/quic"
	"github.com/cofferhq/coffer/transport/wire"
)

// shardBytes sums the live shard bytes of every chunk node.
func shardBytes(t *testing.T, c *nodetest.Cluster) int64 {
	t.Helper()
	var n int64
	for _, nd := range c.Nodes {
		if st := nd.Shards(); st != nil {
			s, err := st.Stats(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			n += s.Bytes
		}
	}
	return n
}

// TestGCOverQUIC runs garbage collection on a real cluster: the chunks of a forgotten
// snapshot are swept from the segment stores, the other snapshot still restores, and GC
// orders or shard deletes from anyone but the meta leader are refused and audited.
func TestGCOverQUIC(t *testing.T) {
	c := nodetest.New(t, nodetest.Opts{})
	f, err := clientconfig.Load(node.DevClientConfig(c.Dir))
	if err != nil {
		t.Fatal(err)
	}
	adminCfg := c.Connect(t)
	ctx := ctxT(t, 3*time.Minute)
	if _, err := client.InitVault(ctx, adminCfg, "gc", passphrase); err != nil {
		t.Fatal(err)
	}
	a, err := client.Open(ctx, adminCfg, "gc", passphrase)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	oldSrc, keepSrc := filepath.Join(t.TempDir(), "old"), filepath.Join(t.TempDir(), "keep")
	nodetest.MakeTree(t, oldSrc, nodetest.TreeOpts{Seed: 21})
	nodetest.MakeTree(t, keepSrc, nodetest.TreeOpts{Seed: 22})
	old := backup(t, a, oldSrc)
	keep := backup(t, a, keepSrc)
	before := shardBytes(t, c)

	gca := gcRetry{adminCfg.Meta.(meta.GCAdmin)}
	// With the default grace (1 h) nothing just written is a candidate.
	if _, err := adminCfg.Meta.(meta.RetentionService).DeleteSnapshots(ctx, "gc", []meta.SnapshotID{old.ID}, meta.Bypass{}); err != nil {
		t.Fatal(err)
	}
	rep, err := gca.RunGC(ctx, meta.GCOptions{})
	if err != nil || rep.Candidates != 0 || rep.SweptChunks != 0 || rep.Nodes == 0 {
		t.Fatalf("gc within the grace period: %+v, %v; want no candidates", rep, err)
	}
	// A dry run with a short grace lists the forgotten snapshot's chunks and deletes nothing.
	rep, err = gca.RunGC(ctx, meta.GCOptions{DryRun: true, Grace: time.Millisecond})
	if err != nil || rep.Candidates == 0 || rep.SweptChunks != 0 {
		t.Fatalf("dry run: %+v, %v", rep, err)
	}
	if got := shardBytes(t, c); got != before {
		t.Fatalf("dry run changed stored bytes: %d → %d", before, got)
	}
	epoch := rep.Epoch
	rep, err = gca.RunGC(ctx, meta.GCOptions{Grace: time.Millisecond})
	if err != nil || rep.SweptChunks != rep.Candidates {
		t.Fatalf("gc: %+v, %v; want every candidate swept", rep, err)
	}
	after := shardBytes(t, c)
	if after >= before {
		t.Fatalf("stored shard bytes %d → %d after gc", before, after)
	}
	// Unless a leader change made the test run it again (an earlier, interrupted epoch
	// may have swept some), the report accounts for every byte.
	if rep.Epoch == epoch+1 && before-after != rep.SweptBytes {
		t.Fatalf("stored shard bytes %d → %d, but the report says %d swept", before, after, rep.SweptBytes)
	}
	t.Logf("gc epoch %d: %d snapshots marked, %d live chunks, %d candidates, %d chunks / %d shards / %d bytes swept (%d → %d stored)",
		rep.Epoch, rep.Snapshots, rep.Live, rep.Candidates, rep.SweptChunks, rep.SweptShards, rep.SweptBytes, before, after)
	restoreAndCompare(t, a, keep, keepSrc)
	// The old snapshot's tree is gone from the cluster.
	if has, err := adminCfg.Chunks.Has(ctx, []chunk.ID{old.Tree}); err != nil || has[0] {
		t.Fatalf("forgotten snapshot's tree still stored (%v, %v)", has, err)
	}

	// Orders from anyone but the leader: a follower's meta certificate, a chunk node's, an
	// agent's, an admin's, a restore operator's.
	st, err := gca.GCAdmin.GCStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	leader := st.Leader
	var follower, chunkNode string
	for _, nd := range c.Nodes {
		switch {
		case nd.Meta() != nil && nd.ID() != leader && follower == "":
			follower = nd.ID()
		case nd.Meta() == nil:
			chunkNode = nd.ID()
		}
	}
	target := c.ChunkAddrs()[0]
	stored := shardBytes(t, c)
	keepIDs := []chunk.ID{keep.Tree}
	for _, who := range []pki.IssueRequest{
		{CommonName: follower, Role: transport.RoleMeta},
		{CommonName: chunkNode, Role: transport.RoleNode},
		{CommonName: "web01", Role: transport.RoleAgent, Vaults: []string{"gc"}},
		{CommonName: "dev-admin", Role: transport.RoleAdmin},
		{CommonName: "oncall", Role: transport.RoleRestore, Vaults: []string{"gc"}},
	} {
		ep, err := cquic.New(cquic.Config{Identity: identityFor(t, c, who), Logger: nodetest.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		defer ep.Close()
		gcc := chunkrpc.NewGCClient(ep, target)
		if _, err := gcc.Sweep(ctx, st.State.Epoch, keepIDs); transport.CodeOf(err) != transport.PermissionDenied {
			t.Errorf("sweep order from %s %q: %v, want PermissionDenied", who.Role, who.CommonName, err)
		}
		if err := gcc.Prepare(ctx, st.State.Epoch+1, 0); transport.CodeOf(err) != transport.PermissionDenied {
			t.Errorf("prepare from %s %q: %v, want PermissionDenied", who.Role, who.CommonName, err)
		}
		// A direct shard delete of shards the node owns and holds intact.
		sc := chunkrpc.NewShardClient(ep, target)
		var keys []chunkstore.ShardKey
		for i := range 6 {
			keys = append(keys, chunkstore.ShardKey{ID: keep.Tree, Index: uint8(i)})
		}
		if err := sc.DeleteShards(ctx, keys); transport.CodeOf(err) != transport.PermissionDenied {
			t.Errorf("shard delete from %s %q: %v, want PermissionDenied", who.Role, who.CommonName, err)
		}
		if who.Role == transport.RoleNode {
			// The chunk node's key claiming to act for an admin, at every meta server.
			for _, addr := range f.Meta {
				err := wire.Call(ctx, ep, addr, metarpc.MethodDeleteSnapshots, map[string]any{"vault": "gc",
					"ids": []meta.SnapshotID{keep.ID}, "as": meta.Principal{Name: "dev-admin", Role: meta.RoleAdmin}}, nil)
				if transport.CodeOf(err) != transport.PermissionDenied {
					t.Errorf("chunk node deleting as admin at %s: %v, want PermissionDenied", addr, err)
				}
			}
		}
	}
	if _, err := adminCfg.Meta.GetSnapshot(ctx, "gc", keep.ID); err != nil {
		t.Fatalf("the kept snapshot after the refused deletes: %v", err)
	}
	if got := shardBytes(t, c); got != stored {
		t.Fatalf("refused orders changed the stored bytes: %d → %d", stored, got)
	}
	// An agent may not run a collection.
	agentCfg := nodetest.ConnectWith(t, identityFor(t, c, pki.IssueRequest{CommonName: "web01", Role: transport.RoleAgent, Vaults: []string{"gc"}}), f.Meta, c.ChunkAddrs())
	if _, err := agentCfg.Meta.(meta.GCAdmin).RunGC(ctx, meta.GCOptions{}); !errors.Is(err, meta.ErrDenied) {
		t.Fatalf("agent running gc: %v, want ErrDenied", err)
	}
	// Every refusal reaches the audit log (chunk nodes report theirs in the background).
	deadline := time.Now().Add(20 * time.Second)
	for {
		es, err := adminCfg.Meta.(meta.RetentionService).AuditLog(ctx, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		refused := map[string]int{}
		for _, e := range es {
			if e.Outcome == meta.AuditRefused {
				refused[e.Action]++
			}
		}
		// The follower's orders pass the role check and are refused by the GC check
		// (gc.sweep, gc.prepare); the chunk node's, agent's, admin's and restore operator's
		// fail the authorization table (gc.Sweep, gc.Prepare); every shard delete is
		// refused (5), and so is the chunk node's delete as admin at each meta server; the
		// agent's collection is refused by the table (meta.GCRun).
		ok := refused["gc.sweep"] >= 1 && refused["gc.prepare"] >= 1 && refused["gc.Sweep"] >= 4 &&
			refused["gc.Prepare"] >= 4 && refused["shard.Delete"] >= 5 && refused["meta.GCRun"] >= 1 &&
			refused[metarpc.MethodDeleteSnapshots] >= len(f.Meta)
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("refusals in the audit log: %v", refused)
		}
		time.Sleep(50 * time.Millisecond) // the chunk nodes report refusals asynchronously
	}
}

// gcRetry runs a collection again when the meta leadership moved during one (the epoch is
// then abandoned with nothing swept, and chunk nodes refuse the old leader's orders).
type gcRetry struct{ meta.GCAdmin }

func (g gcRetry) RunGC(ctx context.Context, opts meta.GCOptions) (meta.GCReport, error) {
	for attempt := 1; ; attempt++ {
		rep, err := g.GCAdmin.RunGC(ctx, opts)
		if err == nil || attempt == 3 || !(errors.Is(err, meta.ErrNotLeader) || strings.Contains(err.Error(), "not the meta leader")) {
			return rep, err
		}
	}
}
