// Package nodetest runs whole Coffer clusters inside one test process: every node with its
// own data directory, QUIC endpoint on loopback, Raft group and gossip, exactly as
// `cofferd dev` runs them, plus helpers to stop, kill and restart nodes and to build
// connected clients.
package nodetest

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore/chunkrpc"
	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/client/clientconfig"
	"github.com/cofferhq/coffer/client/crypt"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/metarpc"
	"github.com/cofferhq/coffer/node"
	"github.com/cofferhq/coffer/transport/pki"
	cquic "github.com/cofferhq/coffer/transport/quic"
)

// Opts shape a test cluster. Zero fields mean 3 meta and 6 chunk nodes.
type Opts struct {
	Meta, Chunk int
	PGCount     uint32
	// Domains spreads the chunk nodes round-robin over this many failure domains
	// (zero: one domain per node).
	Domains int
	// Joining puts the last Joining chunk nodes in the map as joining.
	Joining int
	// DownOut shortens the down→out interval; RepairInterval the time between repair
	// passes (zero: the node defaults).
	DownOut, RepairInterval time.Duration
	// StatusSample, when non-zero, is how often the status page (served by the first
	// meta node) samples capacity (node.Deps.StatusSample).
	StatusSample time.Duration
	// JobTimeout shortens how long a silent agent's job runs before the leader fails it.
	JobTimeout time.Duration
	// RetentionInterval shortens the time between automatic retention rounds.
	RetentionInterval time.Duration
	// TwoPerson puts the cluster under meta.DefaultApprovalPolicy (the production
	// default); without it only changes of the approval policy need a second admin, so
	// tests of other features run gated operations directly.
	TwoPerson bool
	// ApprovalTTL shortens how long approval requests wait (zero: 24 h).
	ApprovalTTL time.Duration
	// Clock, when set, gives the wall clock (node.Deps.Now) of each node by ID; nil
	// results and a nil Clock mean time.Now.
	Clock func(id string) func() time.Time
}

// Cluster is a running in-process cluster owned by one test.
type Cluster struct {
	*node.Dev
	Dir   string
	t     testing.TB
	deps  node.Deps
	clock func(id string) func() time.Time
	// ports keeps the cluster's ports from every other dev cluster on the host until the
	// test ends, also while nodes are stopped (a CI run: RestartAll failed with "bind:
	// address already in use" on a gossip port another package's cluster had picked
	// while this one was down).
	ports *node.DevPortHold
}

// testWriter sends log lines to t.Log until the test ends.
type testWriter struct {
	t  testing.TB
	mu *sync.Mutex
	on *bool
}

func (w testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if *w.on {
		w.t.Log(string(p))
	}
	return len(p), nil
}

// Logger returns a logger writing to t.Log at the level in COFFER_TEST_LOG (default
// error), silent once the test has finished.
func Logger(t testing.TB) *slog.Logger {
	var lvl slog.Level = slog.LevelError
	if s := os.Getenv("COFFER_TEST_LOG"); s != "" {
		_ = lvl.UnmarshalText([]byte(s))
	}
	mu, on := &sync.Mutex{}, true
	t.Cleanup(func() { mu.Lock(); on = false; mu.Unlock() })
	return slog.New(slog.NewTextHandler(testWriter{t: t, mu: mu, on: &on}, &slog.HandlerOptions{Level: lvl}))
}

// New initialises a cluster in a temporary directory, starts it, waits until it is ready
// and stops it when the test ends.
func New(t testing.TB, o Opts) *Cluster {
	t.Helper()
	c := &Cluster{t: t, deps: node.Deps{Logger: Logger(t), Now: time.Now, RaftTimeouts: 500 * time.Millisecond,
		DownOut: o.DownOut, RepairInterval: o.RepairInterval, StatusSample: o.StatusSample, JobTimeout: o.JobTimeout, ApprovalTTL: o.ApprovalTTL,
		RetentionInterval: o.RetentionInterval}, clock: o.Clock}
	if !o.TwoPerson {
		minimal := meta.MinimalApprovalPolicy()
		c.deps.Approvals = &minimal
	}
	c.ports = node.NewDevPortHold()
	t.Cleanup(func() { c.ports.Close() })
	// NB: ports are picked free at init and bound at start; a process that is not a dev
	// cluster may take one in between. Then init again with fresh ports, a few times.
	for attempt := 1; ; attempt++ {
		c.Dir = t.TempDir()
		if err := node.DevInit(node.DevOptions{Dir: c.Dir, Meta: o.Meta, Chunk: o.Chunk, PGCount: o.PGCount, Domains: o.Domains, Joining: o.Joining, Hold: c.ports}, time.Now()); err != nil {
			t.Fatalf("nodetest: init: %v", err)
		}
		d, err := node.StartDevWith(c.Dir, c.depsFor)
		if err == nil {
			c.Dev = d
			break
		}
		if !portTakenRetry(attempt, err) {
			t.Fatalf("nodetest: start: %v", err)
		}
		t.Logf("nodetest: start: %v; initialising again with other ports", err)
	}
	c.WaitReady()
	t.Cleanup(func() {
		if err := c.Dev.Close(); err != nil {
			t.Logf("nodetest: close: %v", err)
		}
	})
	return c
}

// portTakenRetry reports whether a start that failed with err on try attempt is worth
// another try with fresh ports: a port picked free was taken before the node bound it
// (three tries in all).
func portTakenRetry(attempt int, err error) bool {
	return attempt < 3 && strings.Contains(err.Error(), "address already in use")
}

// depsFor returns node id's dependencies: the cluster's, with the clock Opts.Clock gives.
func (c *Cluster) depsFor(id string) node.Deps {
	d := c.deps
	if c.clock != nil {
		if now := c.clock(id); now != nil {
			d.Now = now
		}
	}
	return d
}

func (c *Cluster) start() {
	c.t.Helper()
	d, err := node.StartDevWith(c.Dir, c.depsFor)
	if err != nil {
		c.t.Fatalf("nodetest: start: %v", err)
	}
	c.Dev = d
	c.WaitReady()
}

// WaitReady waits (up to 60 s) for a leader and a cluster map on every running node.
func (c *Cluster) WaitReady() {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.Dev.WaitReady(ctx); err != nil {
		c.t.Fatalf("nodetest: %v", err)
	}
}

// RestartAll stops every node and starts the whole cluster again from its directories.
func (c *Cluster) RestartAll() {
	c.t.Helper()
	if err := c.Dev.Close(); err != nil {
		c.t.Fatalf("nodetest: close: %v", err)
	}
	c.start()
}

// Leader returns the node that currently leads the meta group, or nil.
func (c *Cluster) Leader() *node.Node {
	for _, n := range c.Nodes {
		if m := n.Meta(); m != nil && m.IsLeader() {
			return n
		}
	}
	return nil
}

// WaitLeader returns the node that leads the meta group, waiting (up to a minute) while
// there is none: on a loaded machine an election can run at any moment, also right after
// WaitReady.
func (c *Cluster) WaitLeader(t testing.TB) *node.Node {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if l := c.Leader(); l != nil {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatal("nodetest: no meta leader within a minute")
		}
		time.Sleep(20 * time.Millisecond) // polling for a state, not synchronising
	}
}

// Connect returns a client configuration connected to the cluster with the dev admin
// certificate over a fresh client-side QUIC endpoint (closed when the test ends).
func (c *Cluster) Connect(t testing.TB) client.Config {
	t.Helper()
	f, err := clientconfig.Load(node.DevClientConfig(c.Dir))
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.LoadIdentity(f.CA, f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	return ConnectWith(t, id, f.Meta, c.ChunkAddrs())
}

// ChunkAddrs returns the chunk nodes' addresses from the current cluster map.
func (c *Cluster) ChunkAddrs() []string {
	var out []string
	for _, n := range c.Nodes {
		if m := n.Map(); m != nil {
			for _, cn := range m.Nodes {
				out = append(out, cn.Addr)
			}
			return out
		}
	}
	return nil
}

// ConnectWith builds a client configuration for identity id against the meta servers at
// metaAddrs, storing chunks through the chunk nodes at chunkAddrs.
func ConnectWith(t testing.TB, id *pki.Identity, metaAddrs, chunkAddrs []string) client.Config {
	t.Helper()
	ep, err := cquic.New(cquic.Config{Identity: id, Logger: Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ep.Close() })
	return client.Config{
		Meta:    metarpc.NewClient(ep, metaAddrs),
		Chunks:  chunkrpc.NewClient(ep, chunkAddrs),
		Host:    "nodetest",
		Logger:  Logger(t),
		Now:     time.Now,
		Argon2:  crypt.TestArgon2Params(),
		Rand:    rand.Reader,
		Workers: 4,
	}
}

// DataDir returns a node's data directory.
func (c *Cluster) DataDir(id string) string { return filepath.Join(c.Dir, "nodes", id, "data") }

// Discard is a logger that drops everything.
func Discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// AddNode writes a new node's configuration the way `cofferd join` does (node.DevAddNode:
// its own key and certificate, the meta servers as seeds, no bootstrap section), starts
// it and returns it. It is not in the cluster map or the Raft group yet: `admin node add`
// and `admin meta add` bring it in.
func (c *Cluster) AddNode(t testing.TB, id string, roles []node.Role, domain string) *node.Node {
	t.Helper()
	// NB: as in New, the ports DevAddNode picks may be taken by another process before
	// the node binds them (a CI run: "listen 127.0.0.1:32483: bind: address already in
	// use"); then the node's directory is written again with fresh ports.
	for attempt := 1; ; attempt++ {
		if _, err := node.DevAddNode(c.Dir, id, roles, domain, c.ports, time.Now()); err != nil {
			t.Fatalf("nodetest: add node: %v", err)
		}
		n, err := c.StartNode(id)
		if err == nil {
			return n
		}
		if !portTakenRetry(attempt, err) {
			t.Fatalf("nodetest: start %s: %v", id, err)
		}
		t.Logf("nodetest: start %s: %v; adding it again with other ports", id, err)
		if err := os.RemoveAll(filepath.Join(c.Dir, "nodes", id)); err != nil {
			t.Fatalf("nodetest: add node: %v", err)
		}
	}
}
