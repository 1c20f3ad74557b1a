package node_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/reflist"
	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/client/clientconfig"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/node"
	"github.com/cofferhq/coffer/node/nodetest"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
)

var passphrase = []byte("correct horse battery staple")

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func backup(t *testing.T, a *client.Agent, paths ...string) meta.Snapshot {
	t.Helper()
	res, err := a.Backup(ctxT(t, 5*time.Minute), client.BackupOptions{Paths: paths})
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	return res.Snapshot
}

func restoreAndCompare(t *testing.T, a *client.Agent, snap meta.Snapshot, src string) {
	t.Helper()
	target := filepath.Join(t.TempDir(), "restore")
	start := time.Now()
	res, err := a.Restore(ctxT(t, 5*time.Minute), snap, client.RestoreOptions{Target: target})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	t.Logf("restored %d files, %d bytes in %v", res.Files, res.Bytes, time.Since(start))
	nodetest.CompareTrees(t, src, filepath.Join(target, filepath.Base(src)))
}

// TestWalkingCluster is the walking-cluster acceptance scenario: back up a tree holding
// every file kind plus a 200 MiB file of repeated content over real QUIC; restore it
// bit-identically; stop 2 of 6 chunk nodes and restore again; restart every node from its
// directory and restore again; back up again and see almost nothing stored.
func TestWalkingCluster(t *testing.T) {
	big := int64(200 << 20)
	if testing.Short() {
		big = 8 << 20
	}
	src := filepath.Join(t.TempDir(), "src")
	nodetest.MakeTree(t, src, nodetest.TreeOpts{Seed: 1, BigFile: big})

	c := nodetest.New(t, nodetest.Opts{})
	cfg := c.Connect(t)
	if _, err := client.InitVault(ctxT(t, time.Minute), cfg, "default", passphrase); err != nil {
		t.Fatalf("init: %v", err)
	}
	a, err := client.Open(ctxT(t, time.Minute), cfg, "default", passphrase)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer a.Close()

	start := time.Now()
	snap := backup(t, a, src)
	d := time.Since(start)
	st := snap.Stats
	t.Logf("first backup: %d bytes processed, %d added, %d chunks, %v (%.1f MB/s)",
		st.BytesProcessed, st.BytesAdded, st.ChunksAdded, d, float64(st.BytesProcessed)/d.Seconds()/1e6)
	if st.BytesProcessed < big {
		t.Fatalf("bytes_processed %d < big file %d", st.BytesProcessed, big)
	}
	// The big file is one 1 MiB block repeated: at least half of it must dedup away.
	if st.BytesAdded > st.BytesProcessed-big/2 {
		t.Errorf("repeated content did not dedup: added %d of %d", st.BytesAdded, st.BytesProcessed)
	}
	restoreAndCompare(t, a, snap, src)

	// Shards of every chunk sit on k+m distinct nodes.
	checkShardSpread(t, c, snap)

	// Two of six chunk nodes stopped: any k=4 shards still serve every read.
	for _, id := range []string{"chunk-2", "chunk-5"} {
		if err := c.Stop(id); err != nil {
			t.Fatal(err)
		}
	}
	restoreAndCompare(t, a, snap, src)

	// Restart every node from its directory.
	c.RestartAll()
	cfg2 := c.Connect(t)
	a2, err := client.Open(ctxT(t, time.Minute), cfg2, "default", passphrase)
	if err != nil {
		t.Fatalf("open after restart: %v", err)
	}
	defer a2.Close()
	snaps, err := a2.Snapshots(ctxT(t, time.Minute))
	if err != nil || len(snaps) != 1 || snaps[0].ID != snap.ID {
		t.Fatalf("snapshots after restart: %v %v", snaps, err)
	}
	restoreAndCompare(t, a2, snaps[0], src)

	// Back up the same tree again: almost nothing new is stored.
	again := backup(t, a2, src)
	t.Logf("second backup: %d bytes processed, %d added", again.Stats.BytesProcessed, again.Stats.BytesAdded)
	if again.Stats.BytesAdded > again.Stats.BytesProcessed/1000 {
		t.Errorf("unchanged re-backup added %d bytes of %d processed", again.Stats.BytesAdded, again.Stats.BytesProcessed)
	}
}

// checkShardSpread reads every chunk node's own shard index and checks that each chunk of
// the snapshot has its k+m shards on k+m different nodes, one shard index each.
func checkShardSpread(t *testing.T, c *nodetest.Cluster, snap meta.Snapshot) {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	holders := map[chunk.ID]map[uint8]string{}
	for _, n := range c.Nodes {
		s := n.Shards()
		if s == nil {
			continue
		}
		err := s.EnumerateShards(ctx, nil, func(si chunkstore.ShardInfo) error {
			h := holders[si.Key.ID]
			if h == nil {
				h = map[uint8]string{}
				holders[si.Key.ID] = h
			}
			if prev, ok := h[si.Key.Index]; ok {
				t.Errorf("chunk %s shard %d on both %s and %s", si.Key.ID.Str(), si.Key.Index, prev, n.ID())
			}
			h[si.Key.Index] = n.ID()
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(holders) == 0 {
		t.Fatal("no shards found on any chunk node")
	}
	m := c.Nodes[0].Map()
	want := m.Profile.K + m.Profile.M
	for id, h := range holders {
		nodes := map[string]bool{}
		for _, n := range h {
			nodes[n] = true
		}
		if len(h) != want || len(nodes) != want {
			t.Errorf("chunk %s: %d shards on %d nodes, want %d on %d", id.Str(), len(h), len(nodes), want, want)
		}
	}
	if _, ok := holders[snap.Tree]; !ok {
		t.Errorf("root tree chunk %s not found in any node's index", snap.Tree.Str())
	}
	t.Logf("%d chunks, each with %d shards on %d distinct nodes", len(holders), want, want)
}

// TestLeaderKillLosesNothing kills the Raft leader during a series of backups: every
// acknowledged snapshot survives, a new leader is elected and backups continue.
func TestLeaderKillLosesNothing(t *testing.T) {
	c := nodetest.New(t, nodetest.Opts{})
	cfg := c.Connect(t)
	if _, err := client.InitVault(ctxT(t, time.Minute), cfg, "default", passphrase); err != nil {
		t.Fatal(err)
	}
	a, err := client.Open(ctxT(t, time.Minute), cfg, "default", passphrase)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}

	var acked []meta.SnapshotID
	killed := false
	var oldLeader string
	for i := 0; i < 12; i++ {
		buf := make([]byte, 64<<10)
		_, _ = rand.Read(buf)
		if err := os.WriteFile(filepath.Join(src, "f"), buf, 0o644); err != nil {
			t.Fatal(err)
		}
		if i == 4 {
			l := c.Leader()
			if l == nil {
				t.Fatal("no leader")
			}
			oldLeader = l.ID()
			if err := c.Kill(oldLeader); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
		res, err := a.Backup(ctxT(t, 2*time.Minute), client.BackupOptions{Paths: []string{src}})
		if err != nil {
			t.Logf("backup %d failed (not acknowledged): %v", i, err)
			continue
		}
		acked = append(acked, res.Snapshot.ID)
	}
	if !killed {
		t.Fatal("leader was never killed")
	}
	l := c.Leader()
	if l == nil || l.ID() == oldLeader {
		t.Fatalf("no new leader after killing %s", oldLeader)
	}
	if len(acked) < 10 {
		t.Errorf("only %d of 12 backups acknowledged; backups should continue under the new leader", len(acked))
	}
	snaps, err := a.Snapshots(ctxT(t, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	have := map[meta.SnapshotID]bool{}
	for _, s := range snaps {
		have[s.ID] = true
	}
	for _, id := range acked {
		if !have[id] {
			t.Errorf("acknowledged snapshot %s lost after leader kill", id.Str())
		}
	}
	t.Logf("killed leader %s; new leader %s; %d snapshots acknowledged, all present", oldLeader, l.ID(), len(acked))
}

// TestBadInput: wrong passphrase, unknown snapshot, corrupted shard, commit of missing
// chunks, and a client without a valid certificate each get a clear error and change
// nothing.
func TestBadInput(t *testing.T) {
	c := nodetest.New(t, nodetest.Opts{})
	cfg := c.Connect(t)
	ctx := ctxT(t, 3*time.Minute)
	v, err := client.InitVault(ctx, cfg, "default", passphrase)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("wrong passphrase", func(t *testing.T) {
		_, err := client.Open(ctx, cfg, "default", []byte("not it"))
		if !errors.Is(err, client.ErrWrongPassphrase) {
			t.Fatalf("got %v, want ErrWrongPassphrase", err)
		}
		after, err := cfg.Meta.GetVault(ctx, "default")
		if err != nil || after.Keys == nil || after.Keys.Revision != v.Keys.Revision || !bytes.Equal(after.Keys.Wraps[0].Keyring, v.Keys.Wraps[0].Keyring) {
			t.Fatalf("vault changed after a wrong passphrase: %v", err)
		}
	})

	a, err := client.Open(ctx, cfg, "default", passphrase)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	src := filepath.Join(t.TempDir(), "src")
	nodetest.MakeTree(t, src, nodetest.TreeOpts{Seed: 2})
	snap := backup(t, a, src)

	t.Run("unknown snapshot", func(t *testing.T) {
		for _, ref := range []string{"deadbeef", "0000000000000000000000000000000000000000000000000000000000000000"} {
			if _, err := a.FindSnapshot(ctx, ref); !errors.Is(err, client.ErrSnapshotNotFound) {
				t.Errorf("FindSnapshot(%q) = %v, want ErrSnapshotNotFound", ref, err)
			}
		}
	})

	t.Run("corrupted shard", func(t *testing.T) {
		// Flip a byte inside shard 0 of the root tree chunk on its node.
		key := chunkstore.ShardKey{ID: snap.Tree, Index: 0}
		var holder *node.Node
		for _, n := range c.Nodes {
			if s := n.Shards(); s != nil {
				if ok, _ := s.HasShards(ctx, []chunkstore.ShardKey{key}); len(ok) == 1 && ok[0] {
					holder = n
				}
			}
		}
		if holder == nil {
			t.Fatal("no node holds shard 0 of the root tree")
		}
		path, off, _, err := holder.Shards().Locate(key)
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		b := []byte{0}
		if _, err := f.ReadAt(b, off); err != nil {
			t.Fatal(err)
		}
		b[0] ^= 0xff
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if _, err := holder.Shards().GetShard(ctx, key); !errors.Is(err, chunkstore.ErrCorrupt) {
			t.Fatalf("GetShard of the flipped shard = %v, want ErrCorrupt (CRC)", err)
		}
		restoreAndCompare(t, a, snap, src) // served from the other shards
	})

	t.Run("commit with missing chunk", func(t *testing.T) {
		var ghost chunk.ID
		_, _ = rand.Read(ghost[:])
		var refs []chunkstore.Chunk
		for _, c := range reflist.Encode([]chunk.ID{snap.Tree, ghost}) {
			refs = append(refs, chunkstore.Chunk(c))
		}
		if err := cfg.Chunks.Put(ctx, refs); err != nil {
			t.Fatal(err)
		}
		bad := snap
		_, _ = rand.Read(bad.ID[:])
		bad.Refs = []chunk.ID{refs[0].ID}
		_, err := cfg.Meta.CommitSnapshot(ctx, bad)
		if !errors.Is(err, meta.ErrMissingChunks) {
			t.Fatalf("commit = %v, want ErrMissingChunks", err)
		}
		snaps, err := cfg.Meta.ListSnapshots(ctx, "default")
		if err != nil || len(snaps) != 1 {
			t.Fatalf("snapshots after refused commit: %d, %v (want 1)", len(snaps), err)
		}
	})

	t.Run("client without valid certificate", func(t *testing.T) {
		other, err := pki.NewCA("intruder CA", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		cert, key, err := other.Issue(pki.IssueRequest{CommonName: "intruder", Role: transport.RoleAdmin, Validity: time.Hour}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		f, err := clientconfig.Load(node.DevClientConfig(c.Dir))
		if err != nil {
			t.Fatal(err)
		}
		caPEM, err := os.ReadFile(f.CA)
		if err != nil {
			t.Fatal(err)
		}
		id, err := pki.NewIdentity(caPEM, cert, key)
		if err != nil {
			t.Fatal(err)
		}
		bad := nodetest.ConnectWith(t, id, f.Meta, c.ChunkAddrs())
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		// Refused at the handshake, and told so at once rather than after retries.
		if _, err := bad.Meta.ListVaults(sctx); !errors.Is(err, transport.ErrRefused) {
			t.Fatalf("meta call with a foreign certificate = %v, want ErrRefused", err)
		}
		if _, err := bad.Chunks.Has(sctx, []chunk.ID{snap.Tree}); !errors.Is(err, transport.ErrRefused) {
			t.Fatalf("chunk call with a foreign certificate = %v, want refusal at the handshake", err)
		}
	})
}

// TestDevClusterConfigsAreRunnable checks that DevInit writes node configs that load and
// validate and a client config that names every meta node.
func TestDevClusterConfigsAreRunnable(t *testing.T) {
	dir := t.TempDir()
	if err := node.DevInit(node.DevOptions{Dir: dir, Meta: 3, Chunk: 6}, time.Now()); err != nil {
		t.Fatal(err)
	}
	cfgs, err := node.DevConfigs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfgs) != 9 || !cfgs[0].Has(node.RoleMeta) || !cfgs[8].Has(node.RoleChunk) {
		t.Fatalf("got %d configs", len(cfgs))
	}
	f, err := clientconfig.Load(node.DevClientConfig(dir))
	if err != nil || len(f.Meta) != 3 {
		t.Fatalf("client config: %+v %v", f, err)
	}
	if err := node.DevInit(node.DevOptions{Dir: dir}, time.Now()); !errors.Is(err, node.ErrDevExists) {
		t.Fatalf("second init = %v, want ErrDevExists", err)
	}
}
