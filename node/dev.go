package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"filippo.io/age"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/cofferhq/coffer/client/clientconfig"
	metaserver "github.com/cofferhq/coffer/meta/server"
	"github.com/cofferhq/coffer/placement"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
)

// DevOptions shape a dev cluster. Zero fields mean the defaults: 3 meta and 6 chunk nodes
// on 127.0.0.1, 256 PGs, profile 4+2.
type DevOptions struct {
	Dir     string
	Meta    int
	Chunk   int
	Host    string
	PGCount uint32
	Profile placement.Profile
	// Domains, when > 0, puts chunk node i (from 0) in failure domain "domain-<i mod
	// Domains>"; zero gives every node its own domain.
	Domains int
	// Joining, when > 0, puts the last Joining chunk nodes in the initial map as
	// joining: running, but holding no PG until `coffer admin rebalance apply`.
	Joining int
	// MetricsPort, when > 0, gives the nodes consecutive metrics ports from it (in node
	// order: meta-1.., then chunk-1..); zero picks a free port for each. Every dev node
	// serves metrics (metrics_listen) on Host.
	MetricsPort int
	// Hold, when not nil, keeps every port DevInit picks from other dev clusters on this
	// host until it is closed (see DevPortHold); nil releases them when DevInit returns.
	Hold *DevPortHold
}

func (o DevOptions) withDefaults() DevOptions {
	if o.Meta == 0 {
		o.Meta = 3
	}
	if o.Chunk == 0 {
		o.Chunk = 6
	}
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.PGCount == 0 {
		o.PGCount = 256
	}
	if o.Profile.K == 0 {
		o.Profile = placement.DefaultProfile
	}
	return o
}

// ErrDevExists is returned by DevInit when the directory already holds a cluster.
var ErrDevExists = errors.New("node: dev cluster already initialised")

// DevClientConfig is the client configuration file a dev cluster writes.
func DevClientConfig(dir string) string { return filepath.Join(dir, "coffer.yaml") }

// DevInit writes a whole cluster's configuration under o.Dir without starting anything:
// the root CA (pki/ca.pem, pki/ca-key.pem: a dev cluster keeps the root key beside it),
// a certificate per node, an issuing CA per meta node (nodes/<id>/issuer.pem and
// issuer-key.pem, with which it signs enrolled agents), an admin client certificate,
// the cluster secret, nodes/<id>/node.yaml for each node (runnable with
// `cofferd run --config`; the first meta node's serves the status page on a loopback
// port), and coffer.yaml for clients. Ports are chosen free now and
// then fixed, so the cluster restarts from the same directory on the same ports.
func DevInit(o DevOptions, now time.Time) error {
	o = o.withDefaults()
	if o.Dir == "" {
		return fmt.Errorf("%w: dev: no directory", ErrConfig)
	}
	if o.Chunk-o.Joining < o.Profile.K+o.Profile.M || o.Joining < 0 {
		return fmt.Errorf("%w: dev: %d chunk nodes cannot hold %d+%d shards", ErrConfig, o.Chunk, o.Profile.K, o.Profile.M)
	}
	if o.Meta < 1 {
		return fmt.Errorf("%w: dev: need at least 1 meta node", ErrConfig)
	}
	if _, err := os.Stat(DevClientConfig(o.Dir)); err == nil {
		return fmt.Errorf("%w: %s", ErrDevExists, o.Dir)
	}
	pkiDir := filepath.Join(o.Dir, "pki")
	if err := os.MkdirAll(pkiDir, 0o700); err != nil {
		return fmt.Errorf("node: dev: %w", err)
	}
	ca, err := pki.NewCA("coffer dev CA", now)
	if err != nil {
		return fmt.Errorf("node: dev: %w", err)
	}
	write := func(path string, b []byte) error {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return fmt.Errorf("node: dev: %w", err)
		}
		return nil
	}
	if err := write(filepath.Join(pkiDir, "ca.pem"), ca.CertPEM()); err != nil {
		return err
	}
	if err := write(filepath.Join(pkiDir, "ca-key.pem"), ca.KeyPEM()); err != nil {
		return err
	}
	pk, err := age.GenerateX25519Identity()
	if err != nil {
		return fmt.Errorf("node: dev: platform key: %w", err)
	}
	if err := write(filepath.Join(pkiDir, "platform-key.txt"), []byte("# coffer platform key (age X25519); public key: "+pk.Recipient().String()+"\n"+pk.String()+"\n")); err != nil {
		return err
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return fmt.Errorf("node: dev: %w", err)
	}
	sealKey := make([]byte, 32)
	if _, err := rand.Read(sealKey); err != nil {
		return fmt.Errorf("node: dev: %w", err)
	}
	if err := write(filepath.Join(o.Dir, "secret"), []byte(hex.EncodeToString(secret))); err != nil {
		return err
	}

	type spec struct {
		id      string
		roles   []Role
		listen  string
		gossip  string
		metrics string
	}
	var specs []spec
	for i := 1; i <= o.Meta; i++ {
		specs = append(specs, spec{id: fmt.Sprintf("meta-%d", i), roles: []Role{RoleMeta}})
	}
	for i := 1; i <= o.Chunk; i++ {
		specs = append(specs, spec{id: fmt.Sprintf("chunk-%d", i), roles: []Role{RoleChunk}})
	}
	// NB: every picked port stays bound until all are picked, so no two nodes get the
	// same one (a port closed right after picking is free to be picked again).
	var held []io.Closer
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for i := range specs {
		q, g, err := freePorts(o.Host, &held, o.Hold)
		if err != nil {
			return err
		}
		specs[i].listen = net.JoinHostPort(o.Host, fmt.Sprint(q))
		specs[i].gossip = net.JoinHostPort(o.Host, fmt.Sprint(g))
		mp := o.MetricsPort + i
		if o.MetricsPort <= 0 {
			if mp, err = freeTCPPort(o.Host, &held, o.Hold); err != nil {
				return err
			}
		}
		specs[i].metrics = net.JoinHostPort(o.Host, fmt.Sprint(mp))
	}
	var metas []MetaServer
	var seeds []string
	var chunkNodes []placement.Node
	domain := map[string]string{}
	for _, s := range specs {
		domain[s.id] = s.id
		if s.roles[0] == RoleMeta {
			metas = append(metas, MetaServer{ID: s.id, Addr: s.listen})
			seeds = append(seeds, s.gossip)
		} else {
			if o.Domains > 0 {
				domain[s.id] = fmt.Sprintf("domain-%d", len(chunkNodes)%o.Domains)
			}
			state := placement.StateActive
			if len(chunkNodes) >= o.Chunk-o.Joining {
				state = placement.StateJoining
			}
			chunkNodes = append(chunkNodes, placement.Node{ID: placement.NodeID(s.id), Addr: s.listen,
				Domain: domain[s.id], Weight: 1, State: state})
		}
	}
	boot := &InitialMap{PGCount: o.PGCount, Profile: o.Profile, Nodes: chunkNodes}
	for _, s := range specs {
		dir := filepath.Join(o.Dir, "nodes", s.id)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("node: dev: %w", err)
		}
		role := transport.RoleNode
		if slices.Contains(s.roles, RoleMeta) {
			role = transport.RoleMeta // meta authority is its own identity
		}
		cert, key, err := ca.Issue(pki.IssueRequest{CommonName: s.id, Role: role,
			IPs: []net.IP{net.ParseIP(o.Host)}, Validity: 10 * 365 * 24 * time.Hour}, now)
		if err != nil {
			return fmt.Errorf("node: dev: %w", err)
		}
		if err := write(filepath.Join(dir, "node.pem"), cert); err != nil {
			return err
		}
		if err := write(filepath.Join(dir, "node-key.pem"), key); err != nil {
			return err
		}
		c := Config{
			ID: s.id, Roles: s.roles, Listen: s.listen, Gossip: s.gossip, Join: seeds,
			Domain: domain[s.id], DataDir: "data",
			TLS:               TLSFiles{CA: "../../pki/ca.pem", Cert: "node.pem", Key: "node-key.pem"},
			ClusterSecretFile: "../../secret",
			MetaServers:       metas,
			MemTableSize:      4 << 20,
			SegmentSize:       64 << 20,
			MetricsListen:     s.metrics,
		}
		if s.roles[0] == RoleMeta {
			c.Bootstrap = boot
			// Each meta server signs with its own issuing CA, as in production; only the
			// dev cluster keeps the root key beside it (pki/ca-key.pem).
			ikey, ikeyPEM, err := pki.NewKey()
			if err != nil {
				return fmt.Errorf("node: dev: %w", err)
			}
			icert, err := ca.SignIssuer(ikey.Public(), s.id, 0, now)
			if err != nil {
				return fmt.Errorf("node: dev: %w", err)
			}
			if err := write(filepath.Join(dir, IssuerCertFile), icert); err != nil {
				return err
			}
			if err := write(filepath.Join(dir, IssuerKeyFile), ikeyPEM); err != nil {
				return err
			}
			c.TLS.IssuerCert, c.TLS.IssuerKey = IssuerCertFile, IssuerKeyFile
			c.PlatformKeyFile = "../../pki/platform-key.txt"
			// Every first meta server holds the cluster seal key in its data directory, as
			// after cofferd bootstrap and a join (which fetches it from a peer).
			if err := metaserver.WriteSealKeyFile(filepath.Join(dir, c.DataDir, SealKeyFile), sealKey); err != nil {
				return fmt.Errorf("node: dev: %w", err)
			}
		}
		if s.id == specs[0].id {
			// The first meta node serves the status page to this host (plain HTTP on
			// loopback: a dev cluster's admin has the whole directory anyway).
			p, err := pickPort("127.0.0.1", true, false, &held, o.Hold)
			if err != nil {
				return err
			}
			c.StatusListen, c.StatusLoopback = net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), true
		}
		if err := SaveConfig(filepath.Join(dir, "node.yaml"), c); err != nil {
			return err
		}
	}
	cert, key, err := ca.Issue(pki.IssueRequest{CommonName: "dev-admin", Role: transport.RoleAdmin,
		Validity: 10 * 365 * 24 * time.Hour}, now)
	if err != nil {
		return fmt.Errorf("node: dev: %w", err)
	}
	if err := write(filepath.Join(pkiDir, "client.pem"), cert); err != nil {
		return err
	}
	if err := write(filepath.Join(pkiDir, "client-key.pem"), key); err != nil {
		return err
	}
	var metaAddrs []string
	for _, m := range metas {
		metaAddrs = append(metaAddrs, m.Addr)
	}
	return clientconfig.Save(DevClientConfig(o.Dir), clientconfig.File{
		Meta: metaAddrs, CA: "pki/ca.pem", Cert: "pki/client.pem", Key: "pki/client-key.pem", Vault: "default",
	})
}

// freeTCPPort picks a free TCP port (a metrics listener), keeping it bound in held
// until every port is picked and its lock in hold.
func freeTCPPort(host string, held *[]io.Closer, hold *DevPortHold) (int, error) {
	return pickPort(host, true, false, held, hold)
}

// freePorts picks a free UDP port (QUIC) and a port free on both TCP and UDP (gossip).
// The sockets that reserve them are appended to held; the caller closes them once every
// port is picked. Their locks go to hold (see DevPortHold).
func freePorts(host string, held *[]io.Closer, hold *DevPortHold) (quicPort, gossipPort int, err error) {
	if quicPort, err = pickPort(host, false, true, held, hold); err != nil {
		return 0, 0, err
	}
	if gossipPort, err = pickPort(host, true, true, held, hold); err != nil {
		return 0, 0, err
	}
	return quicPort, gossipPort, nil
}

// DevConfigs loads every node config of a dev cluster directory, sorted by node ID
// (meta nodes first).
func DevConfigs(dir string) ([]Config, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "nodes", "*", "node.yaml"))
	if err != nil {
		return nil, fmt.Errorf("node: dev: %w", err)
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("%w: no nodes/*/node.yaml under %s (run cofferd dev --init-only)", ErrConfig, dir)
	}
	sort.Strings(paths)
	var out []Config
	for _, p := range paths {
		c, err := LoadConfig(p)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Has(RoleMeta) && !out[j].Has(RoleMeta) })
	return out, nil
}

// Dev is a running dev cluster: every node of a directory in this process.
type Dev struct {
	Dir   string
	Nodes []*Node
	deps  func(id string) Deps
}

// StartDev starts every node configured under dir. On error the started nodes are closed.
func StartDev(dir string, deps Deps) (*Dev, error) {
	return StartDevWith(dir, func(string) Deps { return deps })
}

// StartDevWith is StartDev with per-node dependencies (tests give one node a skewed
// clock); deps is called with each node's ID, at start and at every restart.
func StartDevWith(dir string, deps func(id string) Deps) (*Dev, error) {
	cfgs, err := DevConfigs(dir)
	if err != nil {
		return nil, err
	}
	d := &Dev{Dir: dir, deps: deps}
	for _, c := range cfgs {
		n, err := New(c, deps(c.ID))
		if err != nil {
			d.Close()
			return nil, err
		}
		d.Nodes = append(d.Nodes, n)
	}
	return d, nil
}

// WaitReady waits until a meta leader exists and every running node holds a cluster map
// and a reading of the cluster time and revocation list.
func (d *Dev) WaitReady(ctx context.Context) error {
	for {
		leader, maps := false, true
		for _, n := range d.Nodes {
			if n.closed.Load() {
				continue
			}
			if n.meta != nil && n.meta.IsLeader() {
				leader = true
			}
			if n.Map() == nil || n.sec.cur.Load() == nil || !n.RevocationCurrent() {
				maps = false // no map, or no cluster time and current revocation list yet
			}
		}
		if leader && maps {
			return nil
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("node: dev: cluster not ready (leader=%v, maps=%v): %w", leader, maps, ctx.Err())
		case <-t.C:
		}
	}
}

// StatusURL returns the URL of the first status page a running node of the cluster
// serves, or "" when none does.
func (d *Dev) StatusURL() string {
	for _, n := range d.Nodes {
		if n.closed.Load() || n.status == nil {
			continue
		}
		scheme := "https"
		if n.cfg.StatusLoopback {
			scheme = "http"
		}
		return scheme + "://" + n.StatusAddr() + "/"
	}
	return ""
}

// Node returns the running node with the given ID, or nil.
func (d *Dev) Node(id string) *Node {
	for _, n := range d.Nodes {
		if n.ID() == id {
			return n
		}
	}
	return nil
}

// Close stops every node, meta nodes last.
func (d *Dev) Close() error {
	var errs []error
	for i := len(d.Nodes) - 1; i >= 0; i-- {
		errs = append(errs, d.Nodes[i].Close())
	}
	return errors.Join(errs...)
}

// Stop closes one node gracefully (gossip leave) and keeps it in the list as stopped.
func (d *Dev) Stop(id string) error {
	n := d.Node(id)
	if n == nil {
		return fmt.Errorf("node: dev: no node %q", id)
	}
	return n.Close()
}

// Kill stops one node the way a crash looks to its peers (no gossip leave).
func (d *Dev) Kill(id string) error {
	n := d.Node(id)
	if n == nil {
		return fmt.Errorf("node: dev: no node %q", id)
	}
	return n.Kill()
}

// Crash stops one node the way kill -9 looks to its peers: silent at once (Node.Crash).
func (d *Dev) Crash(id string) error {
	n := d.Node(id)
	if n == nil {
		return fmt.Errorf("node: dev: no node %q", id)
	}
	return n.Crash()
}

// Restart starts a stopped node again from its directory and configuration.
func (d *Dev) Restart(id string) error {
	cfgs, err := DevConfigs(d.Dir)
	if err != nil {
		return err
	}
	for i, n := range d.Nodes {
		if n.ID() != id {
			continue
		}
		if !n.closed.Load() {
			return fmt.Errorf("node: dev: node %q is running", id)
		}
		for _, c := range cfgs {
			if c.ID == id {
				nn, err := New(c, d.deps(id))
				if err != nil {
					return err
				}
				d.Nodes[i] = nn
				return nil
			}
		}
	}
	return fmt.Errorf("node: dev: no node %q", id)
}
