package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/memstore"
	"github.com/cofferhq/coffer/chunkstore/reflist"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/placement"
	"github.com/hashicorp/raft"
)

// cluster is n meta servers over raft's in-memory transport with on-disk stores.
type cluster struct {
	t      *testing.T
	n      int
	dirs   []string
	trans  []*raft.InmemTransport
	srv    []*Server
	chunks *memstore.Chunks
	tweak  func(*Config)
}

func addrOf(i int) string { return fmt.Sprintf("m%d", i) }

func newCluster(t *testing.T, n int, tweak func(*Config)) *cluster {
	c := &cluster{t: t, n: n, chunks: memstore.NewChunks(), tweak: tweak,
		dirs: make([]string, n), trans: make([]*raft.InmemTransport, n), srv: make([]*Server, n)}
	for i := range n {
		c.dirs[i] = t.TempDir()
		_, c.trans[i] = raft.NewInmemTransport(raft.ServerAddress(addrOf(i)))
	}
	c.connect()
	for i := range n {
		c.start(i)
	}
	t.Cleanup(func() {
		for _, s := range c.srv {
			if s != nil {
				s.Close()
			}
		}
	})
	return c
}

func (c *cluster) connect() {
	for i := range c.n {
		for j := range c.n {
			if i != j {
				c.trans[i].Connect(raft.ServerAddress(addrOf(j)), c.trans[j])
			}
		}
	}
}

func (c *cluster) config(i int) Config {
	var boot []meta.Server
	for j := range c.n {
		boot = append(boot, meta.Server{ID: addrOf(j), Addr: addrOf(j), Voter: true})
	}
	cfg := Config{
		ID: addrOf(i), Addr: addrOf(i), Dir: c.dirs[i], Transport: c.trans[i], Bootstrap: boot,
		Chunks: c.chunks, Now: time.Now,
		ChunkNotFound: func(err error) bool { return errors.Is(err, chunkstore.ErrNotFound) },
		InitialMap:    &placement.Map{PGCount: 16, Profile: placement.DefaultProfile, Nodes: []placement.Node{{ID: "c1", Addr: "x:1", State: placement.StateActive}}},
		// NB: a leader steps down when no follower has answered it for LeaderLeaseTimeout,
		// and a follower's raft loop waits for each bolt fsync of the log; on a machine
		// loaded by parallel race-enabled tests those stalls passed 120 ms, and tests
		// that hold one leader for seconds (TestAutoRetentionKeepLast,
		// TestAnomalyFlaggedAndAlertedOnce) failed with "not the leader" when it lost its
		// lease. Failover after a kill takes 1-2 s with these.
		HeartbeatTimeout: time.Second, ElectionTimeout: time.Second, LeaderLeaseTimeout: 500 * time.Millisecond,
		TickInterval: 100 * time.Millisecond,
		// Scheduled retention is off unless a test sets an interval: its first round runs
		// at the first tick after a vault policy is stored, and deleted the snapshots
		// TestForgetUsesStoredPolicy was about to forget ("DeleteSnapshots: snapshot …
		// not found" in a CI run).
		RetentionInterval: -1,
	}
	minimal := meta.MinimalApprovalPolicy()
	cfg.Approvals = &minimal
	if c.tweak != nil {
		c.tweak(&cfg)
	}
	return cfg
}

func (c *cluster) start(i int) {
	c.t.Helper()
	s, err := New(c.config(i))
	if err != nil {
		c.t.Fatal(err)
	}
	c.srv[i] = s
}

// kill shuts server i down (its stores stay on disk).
func (c *cluster) kill(i int) {
	c.t.Helper()
	if err := c.srv[i].Close(); err != nil {
		c.t.Fatal(err)
	}
	c.srv[i] = nil
}

// restart brings server i back from its directory on a fresh transport.
func (c *cluster) restart(i int) {
	c.t.Helper()
	_, c.trans[i] = raft.NewInmemTransport(raft.ServerAddress(addrOf(i)))
	c.connect()
	c.start(i)
}

// leader waits for a leader among the running servers that the others follow, and
// returns its index. A server that still believes it leads after the others elected
// another (its lease not yet run out) is not taken.
func (c *cluster) leader() int {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if i, ok := c.agreedLeader(); ok {
			return i
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
	c.t.Fatal("no leader elected")
	return -1
}

// agreedLeader returns the running server that leads, when exactly one believes it does
// and a majority of the running servers name it as the leader.
func (c *cluster) agreedLeader() (int, bool) {
	li, running, naming := -1, 0, 0
	for i, s := range c.srv {
		if s == nil {
			continue
		}
		running++
		if s.IsLeader() {
			if li >= 0 {
				return -1, false
			}
			li = i
		}
	}
	if li < 0 {
		return -1, false
	}
	for _, s := range c.srv {
		if s != nil && s.LeaderAddr() == addrOf(li) {
			naming++
		}
	}
	return li, 2*naming > running
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func randID(t *testing.T) chunk.ID {
	var id chunk.ID
	if _, err := rand.Read(id[:]); err != nil {
		t.Fatal(err)
	}
	return id
}

// storedSnapshot stores n data chunks, a tree and their reference list, and returns a
// snapshot to commit. skip > 0 leaves that many data chunks unstored.
func storedSnapshot(t *testing.T, store chunkstore.Store, vault meta.VaultID, n, skip int) meta.Snapshot {
	t.Helper()
	ctx := context.Background()
	var ids []chunk.ID
	var put []chunkstore.Chunk
	for i := range n + 1 {
		data := []byte(fmt.Sprintf("chunk %d %x", i, randID(t)))
		id := chunk.ID(sha256.Sum256(data))
		ids = append(ids, id)
		if i >= skip {
			put = append(put, chunkstore.Chunk{ID: id, Data: data})
		}
	}
	tree := ids[n] // the last one stands for the root tree
	refs := reflist.Encode(ids)
	for _, c := range refs {
		put = append(put, chunkstore.Chunk(c))
	}
	if err := store.Put(ctx, put); err != nil {
		t.Fatal(err)
	}
	var refIDs []chunk.ID
	for _, r := range refs {
		refIDs = append(refIDs, r.ID)
	}
	return meta.Snapshot{ID: randID(t), Vault: vault, Host: "h", Paths: []string{"/"}, Start: time.Now(), Tree: tree, Refs: refIDs}
}

func newVault(id meta.VaultID) meta.Vault {
	return meta.Vault{ID: id, KeyWraps: [][]byte{{1, 2, 3}}, Chunker: "fastcdc-v1-1M"}
}
