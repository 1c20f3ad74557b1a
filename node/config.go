package node

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/cofferhq/coffer/placement"
)

// Role names a node role.
type Role string

// Node roles.
const (
	RoleMeta  Role = "meta"
	RoleChunk Role = "chunk"
)

// ErrConfig marks an invalid node configuration.
var ErrConfig = errors.New("node: invalid config")

// TLSFiles names the PEM files of a node's identity.
type TLSFiles struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// CAKey was the cluster CA's private key on meta servers. It is refused: the root
	// key stays on the CA host; meta servers sign with their own issuer (IssuerCert).
	CAKey string `yaml:"ca_key,omitempty"`
	// IssuerCert and IssuerKey, optional and for meta nodes only, are this meta server's
	// issuing CA (signed by the cluster root with `cofferd ca sign --role issuer`) and its
	// key, generated on this host. With them the server signs the certificates of
	// enrolling agents, joining nodes, admins and renewals. A missing IssuerCert file
	// (its CSR not signed yet) leaves the server without one; others sign.
	IssuerCert string `yaml:"issuer_cert,omitempty"`
	IssuerKey  string `yaml:"issuer_key,omitempty"`
}

// MetaServer is one initial Raft voter.
type MetaServer struct {
	ID   string `yaml:"id"`
	Addr string `yaml:"addr"`
}

// InitialMap is the cluster map the first meta leader records when none exists yet.
type InitialMap struct {
	PGCount uint32            `yaml:"pg_count"`
	Profile placement.Profile `yaml:"profile"`
	Nodes   []placement.Node  `yaml:"nodes"`
}

// Config is one node's configuration. Zero fields mean the default (DefaultConfig).
type Config struct {
	ID      string   `yaml:"id"`
	Roles   []Role   `yaml:"roles"`
	Listen  string   `yaml:"listen"` // QUIC address for RPC and Raft (one UDP port)
	Gossip  string   `yaml:"gossip"` // memberlist bind address (UDP+TCP)
	Join    []string `yaml:"join"`   // memberlist seeds
	Domain  string   `yaml:"domain"` // failure domain
	DataDir string   `yaml:"data_dir"`
	TLS     TLSFiles `yaml:"tls"`
	// ClusterSecretFile holds the cluster secret; memberlist's keyring is derived from it.
	ClusterSecretFile string `yaml:"cluster_secret_file"`
	// MetaServers is the seed list of meta servers: every node reaches the metadata
	// service through it first and then follows the group's current servers (which
	// `coffer admin meta add|remove` change). An initial voter (a meta node with a
	// bootstrap section) must be listed here and, with no Raft state yet, bootstraps
	// Raft with exactly this list.
	MetaServers []MetaServer `yaml:"meta_servers"`
	// Bootstrap is the initial map. On a meta node it marks an initial voter; a meta
	// node without it joins a running group: it waits, without bootstrapping Raft,
	// until `coffer admin meta add` adds it.
	Bootstrap *InitialMap `yaml:"bootstrap,omitempty"`
	// SegmentSize is the shard segment file size in bytes (chunk role).
	SegmentSize int64 `yaml:"segment_size,omitempty"`
	// MemTableSize is the Pebble memtable size in bytes for this node's stores.
	MemTableSize int `yaml:"memtable_size,omitempty"`
	// DownOutInterval is how long the meta leader waits before marking a down node out
	// (its PGs are then rebuilt elsewhere); zero means 10 minutes (meta role).
	DownOutInterval time.Duration `yaml:"down_out_interval,omitempty"`
	// Repair throttles this node's repair and backfill (chunk role).
	Repair RepairConfig `yaml:"repair,omitempty"`
	// ShardTransport is how nodes move shards between them: "tcp" (TCP+TLS 1.3 on the
	// listen port number, the default: about 3.8x less CPU per byte than QUIC here) or
	// "quic". Agents and admins always use QUIC. Every node of a cluster must agree.
	ShardTransport string `yaml:"shard_transport,omitempty"`
	// GC schedules garbage collection (meta role; the leader runs it).
	GC GCConfig `yaml:"gc,omitempty"`
	// Retention schedules automatic retention (meta role; the leader runs it).
	Retention RetentionConfig `yaml:"retention,omitempty"`
	// Alerts configures alert delivery (meta role; the leader delivers).
	Alerts AlertsConfig `yaml:"alerts,omitempty"`
	// PlatformKeyFile, optional and for meta nodes only, is the platform key: an age
	// X25519 identity file (age-keygen's format), the same on every meta server.
	// Platform-managed vaults (`coffer init --key-management platform`) are also wrapped
	// to it, and an admin restores them through it with no passphrase. Keep it outside
	// the data directory: the Raft log and state hold only what is sealed to it, so a
	// stolen data directory alone opens no vault. Without it no vault can be
	// platform-managed.
	PlatformKeyFile string `yaml:"platform_key_file,omitempty"`
	// StatusListen, when set, is the TCP address of the read-only status page (HTTPS
	// with mutual TLS under the node's identity: admin client certificates only).
	StatusListen string `yaml:"status_listen,omitempty"`
	// StatusLoopback serves the status page as plain HTTP without certificates instead;
	// StatusListen must then be a loopback IP address.
	StatusLoopback bool `yaml:"status_loopback,omitempty"`
	// StatusSampleInterval is how often the status page samples capacity and throughput
	// for its charts (a day of samples is kept in memory); 0 means 1 minute.
	StatusSampleInterval time.Duration `yaml:"status_sample_interval,omitempty"`
	// MetricsListen, when set, is the TCP address ("host:port") where the node serves
	// Prometheus metrics over plain HTTP at /metrics (docs/operations.md, "Metrics").
	// Bind it to a loopback or management address: the series name nodes and counts, but
	// carry no secrets. Empty: no metrics listener.
	MetricsListen string `yaml:"metrics_listen,omitempty"`
	// Jobs bounds backup job records (meta role; the leader enforces it).
	Jobs JobsConfig `yaml:"jobs,omitempty"`
}

// JobsConfig bounds backup job records. Zero fields mean the defaults.
type JobsConfig struct {
	// Timeout is how long a running job may go without its agent's heartbeat or
	// progress before the leader marks it failed; 0 means 5 minutes.
	Timeout time.Duration `yaml:"timeout,omitempty"`
	// Retention is how long job records are kept after they end; 0 means 90 days.
	Retention time.Duration `yaml:"retention,omitempty"`
}

// GCConfig schedules garbage collection. Zero fields mean the defaults.
type GCConfig struct {
	// Interval is the cluster time between scheduled collections; 0 means 24 hours,
	// negative disables them (`coffer admin gc` still runs one).
	Interval time.Duration `yaml:"interval,omitempty"`
	// Grace spares chunks written or asked about within this long before a collection
	// began (a backup between its existence query and its commit); 0 means 1 hour.
	Grace time.Duration `yaml:"grace,omitempty"`
}

// RepairConfig throttles a chunk node's repair worker. Zero fields mean the defaults.
type RepairConfig struct {
	// BytesPerSecond bounds the shard bytes written by repair and read by deep scrub;
	// 0 is unlimited.
	BytesPerSecond int64 `yaml:"bytes_per_second,omitempty"`
	// ConcurrentPGs bounds the PGs repaired at once; 0 means 4.
	ConcurrentPGs int `yaml:"concurrent_pgs,omitempty"`
	// Interval is the time between full passes when the map does not change; 0 means
	// 1 minute.
	Interval time.Duration `yaml:"interval,omitempty"`
	// DeepScrubInterval is the time between scheduled deep scrubs; 0 means 7 days,
	// negative disables them (`coffer admin scrub start` still runs one).
	DeepScrubInterval time.Duration `yaml:"deep_scrub_interval,omitempty"`
	// VerifyInterval bounds how long a PG found whole goes without being listed again
	// while none of its shards changes (a few such PGs per pass); 0 means 1 hour,
	// negative lists unchanged PGs only after a map change, a node restart or in a deep
	// scrub.
	VerifyInterval time.Duration `yaml:"verify_interval,omitempty"`
}

// DefaultConfig returns a configuration with every default filled in except identity,
// addresses and directories.
func DefaultConfig() Config {
	return Config{
		Roles:        []Role{RoleMeta, RoleChunk},
		Domain:       "",
		SegmentSize:  256 << 20,
		MemTableSize: 16 << 20,
	}
}

// withDefaults fills zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if len(c.Roles) == 0 {
		c.Roles = d.Roles
	}
	if c.SegmentSize == 0 {
		c.SegmentSize = d.SegmentSize
	}
	if c.MemTableSize == 0 {
		c.MemTableSize = d.MemTableSize
	}
	if c.Domain == "" {
		c.Domain = c.ID
	}
	if c.ShardTransport == "" {
		c.ShardTransport = ShardTransportTCP
	}
	return c
}

// Shard transports (Config.ShardTransport).
const (
	ShardTransportTCP  = "tcp"
	ShardTransportQUIC = "quic"
)

// initialVoter reports whether the node is a meta server with a bootstrap section: one
// of the voters the group is bootstrapped with (Validate: listed in meta_servers).
func (c Config) initialVoter() bool { return c.Has(RoleMeta) && c.Bootstrap != nil }

// Has reports whether the node has role r.
func (c Config) Has(r Role) bool { return slices.Contains(c.Roles, r) }

// Validate reports the first problem, naming the field.
func (c Config) Validate() error {
	c = c.withDefaults()
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
	}
	if c.ID == "" {
		return bad("id is empty")
	}
	if c.ShardTransport != ShardTransportTCP && c.ShardTransport != ShardTransportQUIC {
		return bad("shard_transport: %q is neither %q nor %q", c.ShardTransport, ShardTransportTCP, ShardTransportQUIC)
	}
	for _, r := range c.Roles {
		if r != RoleMeta && r != RoleChunk {
			return bad("roles: unknown role %q (want meta or chunk)", r)
		}
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return bad("listen %q: %v", c.Listen, err)
	}
	if _, _, err := net.SplitHostPort(c.Gossip); err != nil {
		return bad("gossip %q: %v", c.Gossip, err)
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			return bad("metrics_listen %q: %v (want host:port, e.g. 127.0.0.1:9450)", c.MetricsListen, err)
		}
	}
	if c.DataDir == "" {
		return bad("data_dir is empty")
	}
	if c.TLS.CA == "" || c.TLS.Cert == "" || c.TLS.Key == "" {
		return bad("tls: ca, cert and key are all required")
	}
	if c.TLS.CAKey != "" {
		return bad("tls: ca_key is no longer accepted: the cluster root key stays on the CA host; a meta server signs with its own issuing CA (tls.issuer_cert, tls.issuer_key; see docs/security.md, Credentials)")
	}
	if (c.TLS.IssuerCert == "") != (c.TLS.IssuerKey == "") {
		return bad("tls: issuer_cert and issuer_key go together")
	}
	if c.TLS.IssuerCert != "" && !c.Has(RoleMeta) {
		return bad("tls: issuer_cert is for meta nodes (they sign certificates); node %q has no meta role", c.ID)
	}
	if c.PlatformKeyFile != "" && !c.Has(RoleMeta) {
		return bad("platform_key_file is for meta nodes (a chunk node must never hold a key that opens vaults); node %q has no meta role", c.ID)
	}
	if c.ClusterSecretFile == "" {
		return bad("cluster_secret_file is empty")
	}
	if len(c.MetaServers) == 0 {
		return bad("meta_servers is empty")
	}
	seen := map[string]bool{}
	self := false
	for _, m := range c.MetaServers {
		if m.ID == "" || m.Addr == "" {
			return bad("meta_servers: entry needs id and addr")
		}
		if seen[m.ID] {
			return bad("meta_servers: duplicate id %q", m.ID)
		}
		seen[m.ID] = true
		if m.ID == c.ID {
			self = true
		}
	}
	if c.Has(RoleMeta) && c.Bootstrap != nil {
		if !self {
			return bad("meta node %q has a bootstrap section (an initial voter) but is not in meta_servers", c.ID)
		}
		m := placement.Map{Epoch: 1, PGCount: c.Bootstrap.PGCount, Profile: c.Bootstrap.Profile, Nodes: c.Bootstrap.Nodes}
		if _, err := placement.NewMap(m.Epoch, m.PGCount, m.Profile, m.Nodes); err != nil {
			return bad("bootstrap map: %v", err)
		}
	}
	if c.SegmentSize < 1<<20 {
		return bad("segment_size %d is below 1 MiB", c.SegmentSize)
	}
	if err := c.validateStatus(); err != nil {
		return bad("%v", err)
	}
	for _, p := range c.Alerts.Commands {
		if !filepath.IsAbs(p) {
			return bad("alerts.commands: %q is not an absolute path", p)
		}
	}
	return nil
}

// LoadConfig reads a YAML node config; relative paths resolve against the file's directory.
func LoadConfig(path string) (Config, error) {
	var c Config
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("node: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("node: %s: %w: %v", path, ErrConfig, err)
	}
	dir := filepath.Dir(path)
	for _, p := range []*string{&c.DataDir, &c.TLS.CA, &c.TLS.Cert, &c.TLS.Key, &c.TLS.CAKey, &c.TLS.IssuerCert, &c.TLS.IssuerKey, &c.ClusterSecretFile, &c.PlatformKeyFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("node: %s: %w", path, err)
	}
	return c.withDefaults(), nil
}

// SaveConfig writes c as YAML (mode 0600).
func SaveConfig(path string, c Config) error {
	b, err := yaml.Marshal(c)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	return nil
}
