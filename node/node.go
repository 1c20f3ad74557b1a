package node

import (
	"context"
	"errors"
	"filippo.io/age"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunkrpc"
	"github.com/cofferhq/coffer/chunkstore/coord"
	"github.com/cofferhq/coffer/chunkstore/erasure"
	"github.com/cofferhq/coffer/chunkstore/gcnode"
	"github.com/cofferhq/coffer/chunkstore/grant"
	"github.com/cofferhq/coffer/chunkstore/repair"
	"github.com/cofferhq/coffer/chunkstore/segstore"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/metarpc"
	metaserver "github.com/cofferhq/coffer/meta/server"
	"github.com/cofferhq/coffer/placement"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/authz"
	"github.com/cofferhq/coffer/transport/metricsrv"
	"github.com/cofferhq/coffer/transport/pki"
	cquic "github.com/cofferhq/coffer/transport/quic"
	"github.com/cofferhq/coffer/transport/raftlayer"
	"github.com/cofferhq/coffer/transport/tcp"
	"github.com/cofferhq/coffer/transport/wire"
)

// mapRefresh is how often a node re-reads the cluster map from the meta service.
const mapRefresh = 2 * time.Second

// metaRefreshRounds is how many map reads apart a node re-reads the meta group's servers
// (every 10 s): the first read learns them, and the addresses of the seeds stay behind.
const metaRefreshRounds = 5

// Deps are the process-level dependencies a node is given instead of reaching for globals.
type Deps struct {
	Logger *slog.Logger     // required
	Now    func() time.Time // required: the wall clock (time.Now in production)
	// RaftTimeouts, when non-zero, shortens Raft's heartbeat/election/lease timeouts
	// (tests); zero keeps hashicorp/raft's defaults.
	RaftTimeouts time.Duration
	// DownOut, when non-zero, overrides the config's down_out_interval (tests).
	DownOut time.Duration
	// RepairInterval, when non-zero, overrides the config's repair interval (tests).
	RepairInterval time.Duration
	// StatusSample, when non-zero, overrides the config's status_sample_interval (tests).
	StatusSample time.Duration
	// JobTimeout, when non-zero, overrides the config's jobs.timeout (tests).
	JobTimeout time.Duration
	// RetentionInterval, when non-zero, overrides the config's retention.interval
	// (tests).
	RetentionInterval time.Duration
	// Approvals, when set, is the approval policy in force while the cluster stored none
	// (tests; nil: meta.DefaultApprovalPolicy).
	Approvals *meta.ApprovalPolicy
	// ApprovalTTL, when non-zero, is how long approval requests wait (tests; zero: 24 h).
	ApprovalTTL time.Duration
}

// Node is one running Coffer node.
type Node struct {
	cfg  Config
	deps Deps
	log  *slog.Logger
	ep   *cquic.Endpoint
	// tcp carries shard traffic to and from other nodes (shard_transport: tcp); nil when
	// shard traffic goes over QUIC.
	tcp    *tcp.Endpoint
	shards *segstore.Store // nil without the chunk role
	chunks *coord.Store    // coordinator; every node has one (meta nodes use it for commit checks)
	peers  *peers          // every chunk node's shard store, as the coordinator and repair reach them
	meta   *metaserver.Server
	metaC  *metarpc.Client
	gossip *gossip
	cmap   atomic.Pointer[placement.Map]
	id     *pki.Identity  // this node's certificate (alert probe: its expiry)
	repair *repair.Worker // nil without the chunk role
	pgRep  pgReports      // the last PG reports gathered (meta leader: admin pgs)
	sec    securityState  // revocations and cluster time from the meta leader
	authz  *authz.Table   // checked for every request (checkPeer)
	status *statusPage    // nil without status_listen
	// auditSlots bounds the refusal reports in flight to the audit log (see auditRefusal).
	auditSlots chan struct{}
	gcn        *gcnode.Node // nil without the chunk role
	// counters and metrics are the node's observability (figures.go, metrics.go);
	// metricsSrv serves them on cfg.MetricsListen (nil when unset).
	counters   counters
	metrics    *nodeMetrics
	metricsSrv *metricsrv.Server

	// ctx is the node's lifetime (cancelled by Close); background reports use it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool

	// certNotAfter is when this node's certificate expires (node.Status reports it).
	certNotAfter time.Time
}

// New builds and starts a node: its endpoint serves RPCs as soon as New returns. On error
// everything already started is closed again.
func New(cfg Config, deps Deps) (_ *Node, err error) {
	if deps.Logger == nil || deps.Now == nil {
		return nil, fmt.Errorf("%w: deps need Logger and Now", ErrConfig)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	n := &Node{cfg: cfg, deps: deps, log: deps.Logger.With("node", cfg.ID, "component", "node"), auditSlots: make(chan struct{}, maxAuditInFlight),
		authz: AuthzTable()}
	ctx, cancel := context.WithCancel(context.Background())
	n.ctx, n.cancel = ctx, cancel
	defer func() {
		if err != nil {
			n.close(false)
		}
	}()

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	// Enforced from the first request on; the node serves only its peers until it has
	// read a list at least this new from the meta leader (checkPeer).
	revs, err := loadRevocations(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	n.sec.rev.Store(revs)
	secret, err := os.ReadFile(cfg.ClusterSecretFile)
	if err != nil {
		return nil, fmt.Errorf("node: cluster secret: %w", err)
	}
	id, err := pki.LoadIdentity(cfg.TLS.CA, cfg.TLS.Cert, cfg.TLS.Key)
	if err != nil {
		return nil, fmt.Errorf("node: identity: %w", err)
	}
	n.id = id
	n.certNotAfter = id.Leaf().NotAfter
	if cfg.Has(RoleMeta) != (id.Role() == transport.RoleMeta) {
		return nil, fmt.Errorf("%w: node %s has roles %v and a %q certificate: meta servers, and only they, hold a %q certificate",
			ErrConfig, cfg.ID, cfg.Roles, id.Role(), transport.RoleMeta)
	}
	if cfg.Has(RoleMeta) && id.Principal() != cfg.ID {
		// Peers admit a meta server to Raft and forwarding only as the Raft server whose
		// ID is its certificate's name.
		return nil, fmt.Errorf("%w: meta server %s holds a certificate for %q: a meta server's certificate must name its node ID",
			ErrConfig, cfg.ID, id.Principal())
	}
	var ca *pki.CA
	if cfg.TLS.IssuerCert != "" {
		if ca, err = loadIssuer(cfg.TLS.CA, cfg.TLS.IssuerCert, cfg.TLS.IssuerKey); err != nil {
			return nil, err
		}
		if ca == nil {
			n.log.Warn("this meta server holds no issuing CA yet: it signs no certificates (sign its issuer.csr on the CA host with cofferd ca sign --role issuer and put the result at tls.issuer_cert)",
				"issuer_cert", cfg.TLS.IssuerCert)
		}
	}
	var platformKey *age.X25519Identity
	if cfg.PlatformKeyFile != "" {
		if platformKey, err = loadPlatformKey(cfg.PlatformKeyFile); err != nil {
			return nil, err
		}
	}
	ecfg := cquic.Config{ListenAddr: cfg.Listen, Identity: id, Logger: n.log.With("component", "quic"), CheckPeer: n.checkPeer}
	if cfg.Has(RoleMeta) {
		ecfg.AnonymousMethods = n.authz.Anonymous()
	}
	n.ep, err = cquic.New(ecfg)
	if err != nil {
		return nil, fmt.Errorf("node: endpoint: %w", err)
	}
	// Shard traffic between nodes goes over TCP+TLS 1.3 on the same port number as the
	// QUIC socket (a separate namespace), so the cluster map's addresses serve both.
	var shardCaller transport.Caller = n.ep
	if cfg.ShardTransport == ShardTransportTCP {
		listen := ""
		if cfg.Has(RoleChunk) {
			listen = n.ep.Addr()
		}
		n.tcp, err = tcp.New(tcp.Config{ListenAddr: listen, Identity: id, Logger: n.log, CheckPeer: n.checkPeer})
		if err != nil {
			return nil, fmt.Errorf("node: shard transport: %w", err)
		}
		shardCaller = n.tcp
	}
	var metaAddrs []string
	for _, m := range cfg.MetaServers {
		metaAddrs = append(metaAddrs, m.Addr)
	}
	n.metaC = metarpc.NewClient(n.ep, metaAddrs)

	if cfg.Has(RoleChunk) {
		n.shards, err = segstore.Open(filepath.Join(cfg.DataDir, "shards"), segstore.Options{
			SegmentSize:  cfg.SegmentSize,
			MemTableSize: cfg.MemTableSize,
			Logger:       n.log.With("component", "segstore"),
		})
		if err != nil {
			return nil, fmt.Errorf("node: shard store: %w", err)
		}
	}
	n.gossip, err = startGossip(cfg, n.ep.Addr(), secret, id.Leaf(), n.memberRevoked, deps.Now, n.log)
	if err != nil {
		return nil, err
	}
	var local chunkstore.ShardStore
	if n.shards != nil {
		local = n.shards
	}
	pr := newPeers(placement.NodeID(cfg.ID), local, shardCaller, n.gossip.alive, deps.Now)
	n.peers = pr
	n.chunks, err = coord.New(coord.Config{
		Principal: cfg.ID,
		Map:       n.cmap.Load,
		Shards:    pr.store,
		Alive:     n.gossip.alive, // the same view peers fail fast by
		Codec:     erasure.NewCodec(),
		Logger:    n.log.With("component", "coord"),
	})
	if err != nil {
		return nil, fmt.Errorf("node: coordinator: %w", err)
	}

	if n.shards != nil {
		if err := n.startRepair(ctx, pr); err != nil {
			return nil, err
		}
	}

	n.metrics = newNodeMetrics(n)
	mux := transport.NewMux()
	cs := chunkrpc.NewServer(local, countingStore{s: n.chunks, c: &n.counters})
	grantKey := grant.Key(secret)
	cs.EnableGrants(grantKey, n.clusterNow)
	cs.OnRefused(func(peer transport.Peer, method, reason string) { n.auditRefusal(ctx, peer, method, reason) })
	if n.shards != nil {
		gcn, err := n.newGCNode(ctx)
		if err != nil {
			return nil, fmt.Errorf("node: gc: %w", err)
		}
		n.gcn = gcn
		cs.EnableGC(gcn)
		cs.GuardDeletes(n.guardDelete)
	}
	mux.Handle("shard", cs)
	mux.Handle("chunk", cs)
	mux.Handle("gc", cs)
	mux.Handle("node", transport.HandlerFunc(n.serveNode))

	if cfg.Has(RoleMeta) {
		// An initial voter bootstraps Raft with the seed list and proposes the initial
		// map; a joining meta server does neither and waits to be added (meta add).
		var boot []meta.Server
		var im *placement.Map
		if cfg.initialVoter() {
			for _, m := range cfg.MetaServers {
				boot = append(boot, meta.Server{ID: m.ID, Addr: m.Addr, Voter: true})
			}
			if im, err = placement.NewMap(1, cfg.Bootstrap.PGCount, cfg.Bootstrap.Profile, cfg.Bootstrap.Nodes); err != nil {
				return nil, fmt.Errorf("node: bootstrap map: %w", err)
			}
		}
		mcfg := metaserver.Config{
			ID:          cfg.ID,
			Addr:        n.ep.Addr(),
			Dir:         filepath.Join(cfg.DataDir, "meta"),
			Layer:       raftlayer.New(n.ep),
			Bootstrap:   boot,
			Chunks:      n.chunks,
			Logger:      n.log,
			Now:         deps.Now,
			InitialMap:  im,
			PeerApplied: metarpc.PeerApplied(n.ep),
			PeerStatus:  metarpc.PeerStatus(n.ep),
			Candidate:   n.gossip.candidate,
			Liveness:    n.gossip.liveness,
			DownOut:     cfg.DownOutInterval,
			PGHealth:    n.gatherPGHealth,
			GrantKey:    grantKey,
			CA:          ca,
			PlatformKey: platformKey,
			SealKeyFile: filepath.Join(cfg.DataDir, SealKeyFile),
			PeerSealKey: metarpc.PeerSealKey(n.ep, cfg.ID),
			JoinInfo:    func() meta.JoinInfo { return joinInfo(cfg, secret, n.gossip.members()) },
			GCPeer:      n.gcPeer,
			GCGrace:     cfg.GC.Grace,
			GCInterval:  cfg.GC.Interval,
			OnCommit:    n.metrics.observeCommit,
		}
		mcfg.JobTimeout, mcfg.JobRetention = cfg.Jobs.Timeout, cfg.Jobs.Retention
		mcfg.Approvals, mcfg.ApprovalTTL = deps.Approvals, deps.ApprovalTTL
		if deps.JobTimeout > 0 {
			mcfg.JobTimeout = deps.JobTimeout
		}
		mcfg.RetentionInterval = cfg.Retention.Interval
		if deps.RetentionInterval != 0 {
			mcfg.RetentionInterval = deps.RetentionInterval
		}
		mcfg.Alerts = metaserver.AlertConfig{Commands: cfg.Alerts.Commands, RetryBase: cfg.Alerts.RetryBase, Probe: n.alertProbe}
		// The commit check tells a missing reference list from an unreadable one by the
		// coordinator's not-found error.
		mcfg.ChunkNotFound = func(err error) bool { return errors.Is(err, chunkstore.ErrNotFound) }
		switch {
		case mcfg.GCInterval == 0:
			mcfg.GCInterval = 24 * time.Hour
		case mcfg.GCInterval < 0:
			mcfg.GCInterval = 0
		}
		if deps.DownOut > 0 {
			mcfg.DownOut = deps.DownOut
		}
		if t := deps.RaftTimeouts; t > 0 {
			mcfg.HeartbeatTimeout, mcfg.ElectionTimeout, mcfg.LeaderLeaseTimeout = t, t, t/2
		}
		n.meta, err = metaserver.New(mcfg)
		if err != nil {
			return nil, fmt.Errorf("node: meta: %w", err)
		}
		ms := metarpc.NewServer(n.meta, n.ep, n.meta)
		ms.OnRefused(func(peer transport.Peer, method, reason string) { n.auditRefusal(ctx, peer, method, reason) })
		mux.Handle("meta", ms)
	}
	handler := n.metrics.instrument(n.authz, mux, n.log.With("component", "rpc"))
	n.ep.SetHandler(handler)
	if n.tcp != nil {
		n.tcp.SetHandler(handler) // node certificates only (the tcp endpoint refuses others)
	}
	if cfg.MetricsListen != "" {
		n.metricsSrv, err = metricsrv.Start(cfg.MetricsListen, n.metrics.reg, n.log.With("component", "metrics"))
		if err != nil {
			return nil, fmt.Errorf("node: metrics_listen: %w", err)
		}
	}

	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.refreshMap(ctx)
	}()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.gossip.maintain(ctx)
	}()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.refreshSecurity(ctx)
	}()
	if n.meta != nil {
		rep := &replicator{n: n, running: map[string]context.CancelFunc{}}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			rep.loop(ctx)
		}()
	}
	if cfg.StatusListen != "" {
		if err := n.startStatus(ctx, id); err != nil {
			return nil, err
		}
	}
	n.log.Info("node started", "addr", n.ep.Addr(), "roles", cfg.Roles, "gossip", cfg.Gossip, "metrics", n.MetricsAddr())
	return n, nil
}

// refreshMap keeps n.cmap current: it retries quickly until the first map arrives, then
// polls every mapRefresh; every metaRefreshRounds maps it also re-reads the meta servers. Owned by New; stops when ctx is cancelled.
func (n *Node) refreshMap(ctx context.Context) {
	wait := 100 * time.Millisecond
	rounds := 0 // maps read so far
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		m, err := n.metaC.ClusterMap(cctx)
		if err == nil && rounds%metaRefreshRounds == 0 {
			// Follow the meta group as it changes (meta add|remove); the seeds stay
			// behind as a fallback.
			if _, rerr := n.metaC.RefreshServers(cctx); rerr != nil {
				n.log.Debug("meta servers not refreshed", "err", rerr)
			}
		}
		if err == nil {
			rounds++
		}
		cancel()
		if err == nil {
			if cur := n.cmap.Load(); cur == nil || cur.Epoch < m.Epoch {
				n.cmap.Store(&m)
				n.log.Debug("cluster map", "epoch", m.Epoch)
			}
			wait = mapRefresh
		} else if ctx.Err() == nil {
			n.log.Debug("cluster map not available yet", "err", err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// serveNode answers the "node." RPCs.
func (n *Node) serveNode(ctx context.Context, peer transport.Peer, method string, body []byte) ([]byte, error) {
	switch method {
	case methodPGHealth, methodScrub:
		return n.serveRepair(ctx, peer, method, body)
	case methodStatus:
		if !peer.Role.IsNode() && peer.Role != transport.RoleAdmin {
			return nil, transport.Errorf(transport.PermissionDenied, "node: %s: role %q not allowed (node or admin only)", method, peer.Role)
		}
		st, err := n.Status(ctx)
		if err != nil {
			return nil, err
		}
		return wire.Marshal(st)
	default:
		return nil, transport.Errorf(transport.UnknownMethod, "node: unknown method %q", method)
	}
}

// Status reports this node's view of itself.
func (n *Node) Status(ctx context.Context) (meta.NodeStatus, error) {
	st := meta.NodeStatus{ID: n.cfg.ID, Addr: n.ep.Addr(), Domain: n.cfg.Domain, Members: n.gossip.members(), CertNotAfter: n.certNotAfter}
	for _, r := range n.cfg.Roles {
		st.Roles = append(st.Roles, string(r))
	}
	if n.shards != nil {
		s, err := n.shards.Stats(ctx)
		if err != nil {
			return st, fmt.Errorf("node: stats: %w", err)
		}
		st.Shards = s
	}
	if n.repair != nil {
		rs := n.repair.Status()
		st.Repair = &rs
	}
	if n.meta != nil {
		rs, err := n.meta.RaftStatus(ctx)
		if err != nil {
			return st, fmt.Errorf("node: raft status: %w", err)
		}
		st.Raft = &rs
	}
	return st, nil
}

// ID returns the node's ID.
func (n *Node) ID() string { return n.cfg.ID }

// Addr returns the node's QUIC address.
func (n *Node) Addr() string { return n.ep.Addr() }

// Meta returns the meta server, or nil without the meta role.
func (n *Node) Meta() *metaserver.Server { return n.meta }

// Shards returns the local shard store, or nil without the chunk role.
func (n *Node) Shards() *segstore.Store { return n.shards }

// Chunks returns this node's chunk coordinator.
func (n *Node) Chunks() chunkstore.Store { return n.chunks }

// Metrics returns the node's Prometheus registry (what its metrics listener serves).
func (n *Node) Metrics() prometheus.Gatherer { return n.metrics.reg }

// MetricsAddr returns the address the metrics listener is bound to, or "" when the
// node serves no metrics (metrics_listen unset).
func (n *Node) MetricsAddr() string {
	if n.metricsSrv == nil {
		return ""
	}
	return n.metricsSrv.Addr()
}

// Map returns the node's current cluster map, or nil before the first one arrived.
func (n *Node) Map() *placement.Map { return n.cmap.Load() }

// Run blocks until ctx is done, then closes the node gracefully.
func (n *Node) Run(ctx context.Context) error {
	<-ctx.Done()
	return n.Close()
}

// Close leaves gossip gracefully (peers notice at once), stops Raft, the endpoint and the
// stores, and waits for every goroutine. Safe to call twice.
func (n *Node) Close() error { return n.close(true) }

// Kill stops the node without a graceful gossip leave, as a crash would look to peers
// (they detect it by failed probes). Storage is still closed cleanly.
func (n *Node) Kill() error { return n.close(false) }

// Crash stops the node the way kill -9 looks to its peers: its QUIC socket closes first,
// so they hear nothing more from it (no CONNECTION_CLOSE, no gossip leave, no Raft
// goodbye) and must notice the silence; then everything is closed as by Kill. Fault
// tests use it; Kill's peers learn at once that its QUIC connections are closed.
func (n *Node) Crash() error {
	if n.closed.Load() {
		return nil
	}
	var errs []error
	if n.ep != nil {
		errs = append(errs, n.ep.Silence())
	}
	errs = append(errs, n.close(false))
	return errors.Join(errs...)
}

func (n *Node) close(graceful bool) error {
	if n.closed.Swap(true) {
		return nil
	}
	var errs []error
	if n.metricsSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		errs = append(errs, n.metricsSrv.Close(ctx))
		cancel()
	}
	if n.gossip != nil {
		errs = append(errs, n.gossip.leave(graceful))
	}
	if n.cancel != nil {
		n.cancel()
	}
	errs = append(errs, n.closeStatus())
	if n.meta != nil {
		errs = append(errs, n.meta.Close())
	}
	if n.ep != nil {
		errs = append(errs, n.ep.Close())
	}
	if n.tcp != nil {
		errs = append(errs, n.tcp.Close())
	}
	n.wg.Wait()
	if n.shards != nil {
		errs = append(errs, n.shards.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("node: close %s: %w", n.cfg.ID, err)
	}
	return nil
}
