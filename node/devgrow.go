package node

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
)

// DevAddNode writes the configuration of one more node for a dev cluster directory, the
// way `cofferd join` writes a new host's: a key and a certificate of its own (a meta
// certificate named id for the meta role, a node certificate otherwise), the cluster's
// CA and secret, and nodes/<id>/node.yaml listing the cluster's meta servers as seeds
// (and itself, for a meta node), the meta nodes' gossip addresses as join seeds, and no
// bootstrap section: a chunk node waits to be added to the map (`coffer admin node add`),
// a meta node to be added to the Raft group (`coffer admin meta add`). Nothing is
// started (Dev.StartNode). Ports are picked free on the cluster's host and, when hold is
// not nil, kept in it (see DevPortHold).
func DevAddNode(dir, id string, roles []Role, domain string, hold *DevPortHold, now time.Time) (Config, error) {
	cfgs, err := DevConfigs(dir)
	if err != nil {
		return Config{}, err
	}
	var metas []MetaServer
	var seeds []string
	host := ""
	for _, c := range cfgs {
		if c.ID == id {
			return Config{}, fmt.Errorf("%w: dev: node %q exists", ErrConfig, id)
		}
		if c.initialVoter() && len(metas) == 0 {
			metas = c.MetaServers
		}
		if c.Has(RoleMeta) {
			seeds = append(seeds, c.Gossip)
		}
		if host == "" {
			host, _, _ = net.SplitHostPort(c.Listen)
		}
	}
	var held []io.Closer
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	q, g, err := freePorts(host, &held, hold)
	if err != nil {
		return Config{}, err
	}
	caCert, caKey := filepath.Join(dir, "pki", "ca.pem"), filepath.Join(dir, "pki", "ca-key.pem")
	ca, err := loadCA(caCert, caKey)
	if err != nil {
		return Config{}, err
	}
	role := transport.RoleNode
	if slices.Contains(roles, RoleMeta) {
		role = transport.RoleMeta
	}
	cert, key, err := ca.Issue(pki.IssueRequest{CommonName: id, Role: role, IPs: []net.IP{net.ParseIP(host)}, Validity: 10 * 365 * 24 * time.Hour}, now)
	if err != nil {
		return Config{}, fmt.Errorf("node: dev: %w", err)
	}
	nd := filepath.Join(dir, "nodes", id)
	if err := os.MkdirAll(nd, 0o700); err != nil {
		return Config{}, fmt.Errorf("node: dev: %w", err)
	}
	for name, b := range map[string][]byte{"node.pem": cert, "node-key.pem": key} {
		if err := os.WriteFile(filepath.Join(nd, name), b, 0o600); err != nil {
			return Config{}, fmt.Errorf("node: dev: %w", err)
		}
	}
	listen := net.JoinHostPort(host, fmt.Sprint(q))
	ms := slices.Clone(metas)
	if role == transport.RoleMeta {
		ms = append(ms, MetaServer{ID: id, Addr: listen})
	}
	if domain == "" {
		domain = id
	}
	c := Config{
		ID: id, Roles: roles, Listen: listen, Gossip: net.JoinHostPort(host, fmt.Sprint(g)), Join: seeds,
		Domain: domain, DataDir: "data",
		TLS:               TLSFiles{CA: "../../pki/ca.pem", Cert: "node.pem", Key: "node-key.pem"},
		ClusterSecretFile: "../../secret",
		MetaServers:       ms,
		MemTableSize:      4 << 20,
		SegmentSize:       64 << 20,
	}
	if role == transport.RoleMeta {
		// Its own issuing CA, as every dev meta server has (DevInit).
		ikey, ikeyPEM, err := pki.NewKey()
		if err != nil {
			return Config{}, fmt.Errorf("node: dev: %w", err)
		}
		icert, err := ca.SignIssuer(ikey.Public(), id, 0, now)
		if err != nil {
			return Config{}, fmt.Errorf("node: dev: %w", err)
		}
		for name, b := range map[string][]byte{IssuerCertFile: icert, IssuerKeyFile: ikeyPEM} {
			if err := os.WriteFile(filepath.Join(nd, name), b, 0o600); err != nil {
				return Config{}, fmt.Errorf("node: dev: %w", err)
			}
		}
		c.TLS.IssuerCert, c.TLS.IssuerKey = IssuerCertFile, IssuerKeyFile
	}
	p := filepath.Join(nd, "node.yaml")
	if err := SaveConfig(p, c); err != nil {
		return Config{}, err
	}
	return LoadConfig(p)
}

// StartNode starts a node of the directory that is not running yet (one DevAddNode
// wrote) and adds it to d.Nodes.
func (d *Dev) StartNode(id string) (*Node, error) {
	if d.Node(id) != nil {
		return nil, fmt.Errorf("node: dev: node %q is already started", id)
	}
	cfgs, err := DevConfigs(d.Dir)
	if err != nil {
		return nil, err
	}
	for _, c := range cfgs {
		if c.ID == id {
			n, err := New(c, d.deps(id))
			if err != nil {
				return nil, err
			}
			d.Nodes = append(d.Nodes, n)
			return n, nil
		}
	}
	return nil, fmt.Errorf("node: dev: no node %q under %s", id, d.Dir)
}
