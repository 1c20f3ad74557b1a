package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/metarpc"
	metaserver "github.com/cofferhq/coffer/meta/server"
	"github.com/cofferhq/coffer/placement"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
	cquic "github.com/cofferhq/coffer/transport/quic"
)

// Production bootstrap (issue 13): every key is made on the host that uses it. The root
// CA's key stays in the CA directory on the CA host (CAInit, CASign); each meta server
// has its own issuing CA, signed by the root; nodes join with one-time tokens (Join).
// See docs/security.md, "Credentials".

// File names of a CA directory and of a node's data directory.
const (
	CACertFile     = "ca.pem"         // the cluster root certificate (CA dir and node dirs)
	CAKeyFile      = "ca-key.pem"     // the root's key: CA directory only
	NodeKeyFile    = "node-key.pem"   // a node's key, generated on the node
	NodeCSRFile    = "node.csr"       // its request, signed on the CA host (first meta only)
	NodeCertFile   = "node.pem"       // its certificate, then the issuer's
	IssuerKeyFile  = "issuer-key.pem" // a meta server's issuing CA key, generated on it
	IssuerCSRFile  = "issuer.csr"     // its request, signed by the root on the CA host
	IssuerCertFile = "issuer.pem"     // the issuing CA certificate
	SecretFile     = "secret"         // the cluster secret
	SealKeyFile    = "seal.key"       // the cluster seal key: meta servers' data directories only
	ConfigFile     = "node.yaml"      // the node's configuration
)

// Roles CASign signs for (SignOptions.Role).
const (
	SignMeta    = "meta"
	SignChunk   = "chunk"
	SignAdmin   = "admin"
	SignRestore = "restore-operator"
	SignIssuer  = "issuer"
	// SignReplication is another cluster's replication job, scoped to --vaults.
	SignReplication = "replication"
)

// exists reports whether path exists (errors other than not-exist count as existing,
// so that nothing is overwritten on a doubt).
func exists(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, os.ErrNotExist)
}

// CAInit creates the cluster root CA in dir (created 0700): ca.pem and ca-key.pem (0600).
// It refuses to overwrite an existing key. The key never leaves this directory: run it
// on the CA host (or an offline machine).
func CAInit(dir, name string, now time.Time) error {
	if name == "" {
		name = "coffer cluster root"
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("node: ca init: %w", err)
	}
	keyPath := filepath.Join(dir, CAKeyFile)
	if exists(keyPath) {
		return fmt.Errorf("node: ca init: %s exists: %w (a second root would split the cluster's trust)", keyPath, os.ErrExist)
	}
	ca, err := pki.NewCA(name, now)
	if err != nil {
		return fmt.Errorf("node: ca init: %w", err)
	}
	if err := pki.WriteFile(keyPath, ca.KeyPEM(), 0o600); err != nil {
		return fmt.Errorf("node: ca init: %w", err)
	}
	if err := pki.WriteFile(filepath.Join(dir, CACertFile), ca.CertPEM(), 0o644); err != nil {
		return fmt.Errorf("node: ca init: %w", err)
	}
	return nil
}

// newKeyFiles generates a key for cn in keyPath (0600, refused if it exists) and writes
// its CSR to csrPath.
func newKeyFiles(keyPath, csrPath, cn string) error {
	if exists(keyPath) {
		return fmt.Errorf("%s exists: %w (a key is never overwritten)", keyPath, os.ErrExist)
	}
	key, keyPEM, err := pki.NewKey()
	if err != nil {
		return err
	}
	csr, err := pki.NewCSR(key, cn)
	if err != nil {
		return err
	}
	if err := pki.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return err
	}
	return pki.WriteFile(csrPath, csr, 0o644)
}

// CARequest makes, in dataDir (created 0700), the node key and node.csr for node id and,
// with issuer, a meta server's issuing CA key and issuer.csr. The CSRs go to the CA host
// (CASign); the keys stay here. Used for the first meta server, which has no cluster to
// join.
func CARequest(dataDir, id string, issuer bool) error {
	if err := meta.ValidateAgentName(id); err != nil {
		return fmt.Errorf("node: ca request: node ID: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("node: ca request: %w", err)
	}
	if issuer && exists(filepath.Join(dataDir, IssuerKeyFile)) {
		return fmt.Errorf("node: ca request: %s exists: %w", filepath.Join(dataDir, IssuerKeyFile), os.ErrExist)
	}
	if err := newKeyFiles(filepath.Join(dataDir, NodeKeyFile), filepath.Join(dataDir, NodeCSRFile), id); err != nil {
		return fmt.Errorf("node: ca request: %w", err)
	}
	if issuer {
		if err := newKeyFiles(filepath.Join(dataDir, IssuerKeyFile), filepath.Join(dataDir, IssuerCSRFile), pki.IssuerName(id)); err != nil {
			return fmt.Errorf("node: ca request: %w", err)
		}
	}
	return nil
}

// SignOptions is one signature by the root CA on the CA host.
type SignOptions struct {
	CADir string // holds ca.pem and ca-key.pem
	CSR   []byte // PEM certificate request
	// Role is meta, chunk, admin, restore-operator, replication, or issuer (a meta
	// server's issuing CA, path length 0).
	Role string
	// ID is the principal (node ID, admin name) or, for issuer, the meta server's ID. The
	// CSR must name it (for an issuer: pki.IssuerName(ID)); another name is refused.
	ID       string
	Vaults   []string      // restore-operator scope; the vaults a replication job reads (required)
	Validity time.Duration // 0: the default of the role
}

// CASign signs a CSR with the root CA and returns the certificate PEM.
func CASign(o SignOptions, now time.Time) ([]byte, error) {
	certPEM, err := os.ReadFile(filepath.Join(o.CADir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("node: ca sign: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(o.CADir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("node: ca sign: %w (run this on the CA host, --ca-dir naming the directory of cofferd ca init)", err)
	}
	root, err := pki.LoadCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("node: ca sign: %w", err)
	}
	der, err := pki.CSRFromPEM(o.CSR)
	if err != nil {
		return nil, fmt.Errorf("node: ca sign: %w", err)
	}
	pub, cn, err := pki.ParseCSRName(der)
	if err != nil {
		return nil, fmt.Errorf("node: ca sign: %w", err)
	}
	if err := meta.ValidateAgentName(o.ID); err != nil {
		return nil, fmt.Errorf("node: ca sign: --id: %w", err)
	}
	want := o.ID
	if o.Role == SignIssuer {
		want = pki.IssuerName(o.ID)
	}
	if cn != want {
		return nil, fmt.Errorf("%w: node: ca sign: the request is for %q, not %q: a request is signed only for the name it was made for", meta.ErrDenied, cn, want)
	}
	var role transport.Role
	switch o.Role {
	case SignIssuer:
		return root.SignIssuer(pub, o.ID, o.Validity, now)
	case SignMeta:
		role = transport.RoleMeta
	case SignChunk:
		role = transport.RoleNode
	case SignAdmin:
		role = transport.RoleAdmin
	case SignRestore:
		role = transport.RoleRestore
	case SignReplication:
		role = transport.RoleReplication
		if len(o.Vaults) == 0 {
			return nil, fmt.Errorf("%w: node: ca sign: a replication certificate names the vaults it replicates (--vaults)", meta.ErrInvalid)
		}
	default:
		return nil, fmt.Errorf("%w: node: ca sign: role %q: want meta, chunk, admin, restore-operator, replication or issuer", meta.ErrInvalid, o.Role)
	}
	if len(o.Vaults) > 0 && role != transport.RoleRestore && role != transport.RoleReplication {
		return nil, fmt.Errorf("%w: node: ca sign: only restore-operator and replication certificates are scoped to vaults", meta.ErrInvalid)
	}
	serial, err := pki.NewSerial()
	if err != nil {
		return nil, fmt.Errorf("node: ca sign: %w", err)
	}
	return root.Sign(pub, serial, pki.IssueRequest{CommonName: o.ID, Role: role, Vaults: o.Vaults, Validity: o.Validity}, now)
}

// BootstrapOptions set up the first meta server of a new cluster, whose node.pem and
// issuer.pem were signed on the CA host from CARequest's CSRs.
type BootstrapOptions struct {
	ID      string
	DataDir string // holds node-key.pem, node.pem, issuer-key.pem, issuer.pem
	CA      []byte // the root certificate (PEM), copied from the CA host
	Listen  string // QUIC address host:port
	Gossip  string // memberlist address; "" = Listen's host, port + 1
	Domain  string // failure domain; "" = the ID
	PGCount uint32 // 0 = 256
	Profile placement.Profile
}

// defaultGossip is the listen host with the port after the listen port.
func defaultGossip(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("%w: listen %q: %v", ErrConfig, listen, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p <= 0 || p >= 65535 {
		return "", fmt.Errorf("%w: listen %q: give a numeric port below 65535 (or --gossip)", ErrConfig, listen)
	}
	return net.JoinHostPort(host, strconv.Itoa(p+1)), nil
}

// Bootstrap writes the first meta server's node.yaml (an initial map without chunk
// nodes, meta_servers holding only itself), ca.pem and a new cluster secret, after
// checking that its certificate and issuer were signed by the root for its keys. It
// returns the config path.
func Bootstrap(o BootstrapOptions) (string, error) {
	if o.PGCount == 0 {
		o.PGCount = 256
	}
	if o.Profile.K == 0 {
		o.Profile = placement.DefaultProfile
	}
	if o.Gossip == "" {
		g, err := defaultGossip(o.Listen)
		if err != nil {
			return "", err
		}
		o.Gossip = g
	}
	cfgPath := filepath.Join(o.DataDir, ConfigFile)
	if exists(cfgPath) {
		return "", fmt.Errorf("node: bootstrap: %s exists: %w", cfgPath, os.ErrExist)
	}
	if err := pki.WriteFile(filepath.Join(o.DataDir, CACertFile), o.CA, 0o644); err != nil {
		return "", fmt.Errorf("node: bootstrap: %w", err)
	}
	id, err := pki.LoadIdentity(filepath.Join(o.DataDir, CACertFile), filepath.Join(o.DataDir, NodeCertFile), filepath.Join(o.DataDir, NodeKeyFile))
	if err != nil {
		return "", fmt.Errorf("node: bootstrap: %w", err)
	}
	if id.Role() != transport.RoleMeta || id.Principal() != o.ID {
		return "", fmt.Errorf("%w: node: bootstrap: %s is a %s certificate for %q, want a meta certificate for %q (cofferd ca sign --role meta --id %s)",
			ErrConfig, NodeCertFile, id.Role(), id.Principal(), o.ID, o.ID)
	}
	if _, err := loadIssuer(filepath.Join(o.DataDir, CACertFile), filepath.Join(o.DataDir, IssuerCertFile), filepath.Join(o.DataDir, IssuerKeyFile)); err != nil {
		return "", fmt.Errorf("node: bootstrap: %w", err)
	}
	if !exists(filepath.Join(o.DataDir, IssuerCertFile)) {
		return "", fmt.Errorf("%w: node: bootstrap: %s is missing: the first meta server needs its issuing CA to admit anyone (cofferd ca sign --role issuer --id %s)",
			ErrConfig, filepath.Join(o.DataDir, IssuerCertFile), o.ID)
	}
	c := Config{
		ID: o.ID, Roles: []Role{RoleMeta}, Listen: o.Listen, Gossip: o.Gossip, Join: []string{o.Gossip},
		Domain: o.Domain, DataDir: "data",
		TLS: TLSFiles{CA: CACertFile, Cert: NodeCertFile, Key: NodeKeyFile,
			IssuerCert: IssuerCertFile, IssuerKey: IssuerKeyFile},
		ClusterSecretFile: SecretFile,
		MetaServers:       []MetaServer{{ID: o.ID, Addr: o.Listen}},
		Bootstrap:         &InitialMap{PGCount: o.PGCount, Profile: o.Profile, Nodes: []placement.Node{}},
	}
	if err := c.Validate(); err != nil {
		return "", fmt.Errorf("node: bootstrap: %w", err)
	}
	secretPath := filepath.Join(o.DataDir, SecretFile)
	if !exists(secretPath) {
		secret := make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return "", fmt.Errorf("node: bootstrap: %w", err)
		}
		if err := pki.WriteFile(secretPath, []byte(hex.EncodeToString(secret)), 0o600); err != nil {
			return "", fmt.Errorf("node: bootstrap: %w", err)
		}
	}
	// The cluster seal key (TOTP secrets are sealed under it): made here for the first
	// meta server; meta servers joining later fetch it from a peer (meta.SealKey).
	if err := metaserver.NewSealKeyFile(filepath.Join(o.DataDir, c.DataDir, SealKeyFile)); err != nil {
		return "", fmt.Errorf("node: bootstrap: %w", err)
	}
	if err := SaveConfig(cfgPath, c); err != nil {
		return "", err
	}
	return cfgPath, nil
}

// JoinOptions join a host to a running cluster with a node join token.
type JoinOptions struct {
	Token   string
	Meta    []string // meta server addresses; any one is enough
	CA      []byte   // the cluster root certificate (PEM): the servers are verified against it
	ID      string   // the node ID the host expects (the token fixes it; another is refused)
	Listen  string   // QUIC address host:port
	Gossip  string   // "" = Listen's host, port + 1
	DataDir string
	Logger  *slog.Logger
}

// Join runs `cofferd join`: it generates the node's key in DataDir, obtains its
// certificate with the token over the enrollment protocol (no certificate yet; the
// server is verified against CA), and writes node.pem, ca.pem, the cluster secret and
// node.yaml (role, ID and domain from the token; meta servers and gossip seeds from the
// cluster). A meta server also gets issuer-key.pem and issuer.csr, to be signed on the CA
// host, and a node.yaml without bootstrap (it waits to be added to Raft). It returns the
// config path and the join result. Nothing is written when the cluster refuses.
func Join(ctx context.Context, o JoinOptions) (string, meta.NodeJoinResult, error) {
	var res meta.NodeJoinResult
	if o.Token == "" || len(o.Meta) == 0 || o.DataDir == "" {
		return "", res, fmt.Errorf("%w: node: join: token, meta server addresses and data directory are required", ErrConfig)
	}
	if err := meta.ValidateAgentName(o.ID); err != nil {
		return "", res, fmt.Errorf("node: join: node ID: %w", err)
	}
	if _, _, err := net.SplitHostPort(o.Listen); err != nil {
		return "", res, fmt.Errorf("%w: node: join: listen %q: %v", ErrConfig, o.Listen, err)
	}
	if o.Gossip == "" {
		g, err := defaultGossip(o.Listen)
		if err != nil {
			return "", res, err
		}
		o.Gossip = g
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	keyPath := filepath.Join(o.DataDir, NodeKeyFile)
	for _, f := range []string{NodeKeyFile, ConfigFile} {
		if p := filepath.Join(o.DataDir, f); exists(p) {
			return "", res, fmt.Errorf("node: join: %s exists: %w (this directory already holds a node)", p, os.ErrExist)
		}
	}
	anon, err := pki.NewAnonymousIdentity(o.CA)
	if err != nil {
		return "", res, fmt.Errorf("node: join: %w", err)
	}
	ep, err := cquic.New(cquic.Config{Identity: anon, Logger: o.Logger})
	if err != nil {
		return "", res, fmt.Errorf("node: join: %w", err)
	}
	defer ep.Close()
	key, keyPEM, err := pki.NewKey()
	if err != nil {
		return "", res, fmt.Errorf("node: join: %w", err)
	}
	csrPEM, err := pki.NewCSR(key, o.ID)
	if err != nil {
		return "", res, fmt.Errorf("node: join: %w", err)
	}
	csr, err := pki.CSRFromPEM(csrPEM)
	if err != nil {
		return "", res, fmt.Errorf("node: join: %w", err)
	}
	res, err = metarpc.NewClient(ep, o.Meta).JoinNode(ctx, meta.NodeJoinRequest{Token: o.Token, CSR: csr, ID: o.ID})
	if err != nil {
		return "", res, fmt.Errorf("node: join: %w", err)
	}
	id, err := pki.NewIdentity(o.CA, res.Cert, keyPEM)
	if err != nil {
		return "", res, fmt.Errorf("node: join: the returned certificate does not fit the generated key: %w", err)
	}
	wantRole := transport.RoleNode
	if res.Role == meta.NodeRoleMeta {
		wantRole = transport.RoleMeta
	}
	if id.Principal() != o.ID || id.Role() != wantRole {
		return "", res, fmt.Errorf("node: join: the returned certificate is a %s certificate for %q, want %s for %q", id.Role(), id.Principal(), wantRole, o.ID)
	}
	if len(res.ClusterSecret) == 0 {
		return "", res, fmt.Errorf("node: join: the cluster sent no cluster secret")
	}
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return "", res, fmt.Errorf("node: join: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{{NodeKeyFile, keyPEM, 0o600}, {NodeCertFile, res.Cert, 0o644}, {CACertFile, o.CA, 0o644}, {SecretFile, res.ClusterSecret, 0o600}} {
		if err := pki.WriteFile(filepath.Join(o.DataDir, f.name), f.data, f.mode); err != nil {
			return "", res, fmt.Errorf("node: join: %w", err)
		}
	}
	if _, err := pki.LoadIdentity(filepath.Join(o.DataDir, CACertFile), filepath.Join(o.DataDir, NodeCertFile), keyPath); err != nil {
		return "", res, fmt.Errorf("node: join: %w", err)
	}
	c := Config{
		ID: o.ID, Listen: o.Listen, Gossip: o.Gossip, Join: res.GossipSeeds, Domain: res.Domain, DataDir: "data",
		TLS:               TLSFiles{CA: CACertFile, Cert: NodeCertFile, Key: NodeKeyFile},
		ClusterSecretFile: SecretFile,
	}
	for _, m := range res.MetaServers {
		if m.ID != o.ID {
			c.MetaServers = append(c.MetaServers, MetaServer{ID: m.ID, Addr: m.Addr})
		}
	}
	if res.Role == meta.NodeRoleMeta {
		c.Roles = []Role{RoleMeta}
		c.MetaServers = append(c.MetaServers, MetaServer{ID: o.ID, Addr: o.Listen})
		if err := newKeyFiles(filepath.Join(o.DataDir, IssuerKeyFile), filepath.Join(o.DataDir, IssuerCSRFile), pki.IssuerName(o.ID)); err != nil {
			return "", res, fmt.Errorf("node: join: issuer: %w", err)
		}
		c.TLS.IssuerCert, c.TLS.IssuerKey = IssuerCertFile, IssuerKeyFile
	} else {
		c.Roles = []Role{RoleChunk}
	}
	if len(c.Join) == 0 {
		c.Join = []string{o.Gossip}
	}
	cfgPath := filepath.Join(o.DataDir, ConfigFile)
	if err := c.Validate(); err != nil {
		return "", res, fmt.Errorf("node: join: %w", err)
	}
	if err := SaveConfig(cfgPath, c); err != nil {
		return "", res, err
	}
	return cfgPath, res, nil
}

// Renew runs `cofferd renew`: with the node's current certificate it asks a meta server
// for a new one (same identity) for a key generated here, then replaces node.pem and
// node-key.pem (keeping the old ones as .old). The node uses it from its next start. It
// returns the new certificate's description.
func Renew(ctx context.Context, cfgPath string, logger *slog.Logger) (pki.CertInfo, error) {
	cfg, err := LoadConfig(cfgPath)
	if err != nil {
		return pki.CertInfo{}, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	id, err := pki.LoadIdentity(cfg.TLS.CA, cfg.TLS.Cert, cfg.TLS.Key)
	if err != nil {
		return pki.CertInfo{}, fmt.Errorf("node: renew: %w", err)
	}
	ep, err := cquic.New(cquic.Config{Identity: id, Logger: logger})
	if err != nil {
		return pki.CertInfo{}, fmt.Errorf("node: renew: %w", err)
	}
	defer ep.Close()
	var addrs []string
	for _, m := range cfg.MetaServers {
		if m.ID != cfg.ID {
			addrs = append(addrs, m.Addr)
		}
	}
	for _, m := range cfg.MetaServers {
		if m.ID == cfg.ID {
			addrs = append(addrs, m.Addr) // itself last: it may be the node being renewed, stopped
		}
	}
	return RenewWith(ctx, metarpc.NewClient(ep, addrs), id, cfg.TLS.CA, cfg.TLS.Cert, cfg.TLS.Key)
}

// RenewWith renews identity id through svc and replaces certFile and keyFile (the old
// ones kept with the suffix .old). caFile is the root the new certificate must chain to.
func RenewWith(ctx context.Context, svc meta.CertService, id *pki.Identity, caFile, certFile, keyFile string) (pki.CertInfo, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return pki.CertInfo{}, fmt.Errorf("node: renew: %w", err)
	}
	key, keyPEM, err := pki.NewKey()
	if err != nil {
		return pki.CertInfo{}, fmt.Errorf("node: renew: %w", err)
	}
	csrPEM, err := pki.NewCSR(key, id.Principal())
	if err != nil {
		return pki.CertInfo{}, fmt.Errorf("node: renew: %w", err)
	}
	csr, err := pki.CSRFromPEM(csrPEM)
	if err != nil {
		return pki.CertInfo{}, fmt.Errorf("node: renew: %w", err)
	}
	res, err := svc.RenewCert(ctx, meta.RenewRequest{CSR: csr})
	if err != nil {
		return pki.CertInfo{}, fmt.Errorf("node: renew: %w", err)
	}
	return pki.InstallRenewed(caPEM, res.Cert, keyPEM, id, certFile, keyFile)
}
