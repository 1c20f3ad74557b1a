package node_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/client/enroll"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/metarpc"
	"github.com/cofferhq/coffer/node"
	"github.com/cofferhq/coffer/node/nodetest"
	"github.com/cofferhq/coffer/placement"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
	cquic "github.com/cofferhq/coffer/transport/quic"
)

// freeAddrs returns a free UDP port for QUIC and, on the next port, a gossip port free on
// TCP and UDP (cofferd's default gossip address is the listen port + 1).
func freeAddrs(t *testing.T) string {
	t.Helper()
	for range 50 {
		u, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := u.LocalAddr().(*net.UDPAddr).Port
		g := fmt.Sprintf("127.0.0.1:%d", p+1)
		tl, terr := net.Listen("tcp", g)
		gu, uerr := net.ListenPacket("udp", g)
		u.Close()
		if terr == nil {
			tl.Close()
		}
		if uerr == nil {
			gu.Close()
		}
		if terr == nil && uerr == nil && p < 65534 {
			return fmt.Sprintf("127.0.0.1:%d", p)
		}
	}
	t.Fatal("no free port pair")
	return ""
}

// bootCluster is a cluster brought up with the production bootstrap commands' library
// entry points only: a CA directory, a first meta server, an admin, and hosts joined
// with tokens. Every host has its own directory.
type bootCluster struct {
	t      *testing.T
	root   string // parent of every host directory
	caDir  string
	caPEM  []byte
	meta1  string // meta-1's data directory
	nodes  []*node.Node
	admin  *metarpc.Client
	metas  []string
	deps   node.Deps
	adminD string
}

func (b *bootCluster) start(cfgPath string) *node.Node {
	b.t.Helper()
	cfg, err := node.LoadConfig(cfgPath)
	if err != nil {
		b.t.Fatal(err)
	}
	n, err := node.New(cfg, b.deps)
	if err != nil {
		b.t.Fatal(err)
	}
	b.nodes = append(b.nodes, n)
	b.t.Cleanup(func() { n.Close() })
	return n
}

// clientFor is a meta client over an endpoint with the identity in dir's files.
func clientFor(t *testing.T, caPEM []byte, certFile, keyFile string, metas []string) *metarpc.Client {
	t.Helper()
	cert, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.NewIdentity(caPEM, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := cquic.New(cquic.Config{Identity: id, Logger: nodetest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	return metarpc.NewClient(ep, metas)
}

func newBootCluster(t *testing.T) *bootCluster {
	t.Helper()
	root := t.TempDir()
	b := &bootCluster{t: t, root: root, caDir: filepath.Join(root, "ca-host"), meta1: filepath.Join(root, "meta-1"),
		deps: node.Deps{Logger: nodetest.Logger(t), Now: time.Now, RaftTimeouts: 500 * time.Millisecond}}
	now := time.Now()
	// CA host.
	if err := node.CAInit(b.caDir, "", now); err != nil {
		t.Fatal(err)
	}
	var err error
	if b.caPEM, err = os.ReadFile(filepath.Join(b.caDir, node.CACertFile)); err != nil {
		t.Fatal(err)
	}
	// meta-1 makes its keys; only the CSRs travel to the CA host and certificates back.
	if err := node.CARequest(b.meta1, "meta-1", true); err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct{ csr, role, out string }{
		{node.NodeCSRFile, node.SignMeta, node.NodeCertFile}, {node.IssuerCSRFile, node.SignIssuer, node.IssuerCertFile},
	} {
		csr, err := os.ReadFile(filepath.Join(b.meta1, s.csr))
		if err != nil {
			t.Fatal(err)
		}
		cert, err := node.CASign(node.SignOptions{CADir: b.caDir, CSR: csr, Role: s.role, ID: "meta-1"}, now)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(b.meta1, s.out), cert, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	listen := freeAddrs(t)
	cfgPath, err := node.Bootstrap(node.BootstrapOptions{ID: "meta-1", DataDir: b.meta1, CA: b.caPEM, Listen: listen,
		PGCount: 16, Profile: placement.Profile{K: 1, M: 1}})
	if err != nil {
		t.Fatal(err)
	}
	b.metas = []string{listen}
	b.start(cfgPath)
	// The first admin: key and CSR on the workstation, signed by the root on the CA host.
	b.adminD = filepath.Join(root, "admin-ws")
	if err := os.MkdirAll(b.adminD, 0o700); err != nil {
		t.Fatal(err)
	}
	b.admin = b.requestCert("alice", node.SignAdmin, now)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if _, err := b.admin.ClusterMap(ctx); err == nil {
			break
		} else if ctx.Err() != nil {
			t.Fatalf("first meta server never served the map: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // polling a condition with a deadline
	}
	return b
}

// requestCert makes a key and CSR for name in the admin workstation's directory, has the
// root sign it on the CA host and returns a meta client with that identity.
func (b *bootCluster) requestCert(name, role string, now time.Time) *metarpc.Client {
	b.t.Helper()
	key, keyPEM, err := pki.NewKey()
	if err != nil {
		b.t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, name)
	if err != nil {
		b.t.Fatal(err)
	}
	cert, err := node.CASign(node.SignOptions{CADir: b.caDir, CSR: csr, Role: role, ID: name}, now)
	if err != nil {
		b.t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(b.adminD, name+".pem"), filepath.Join(b.adminD, name+"-key.pem")
	if err := os.WriteFile(certFile, cert, 0o644); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		b.t.Fatal(err)
	}
	return clientFor(b.t, b.caPEM, certFile, keyFile, b.metas)
}

// join creates a node token as the admin and joins a host with it.
func (b *bootCluster) join(ctx context.Context, role, id string) (string, meta.NodeJoinResult) {
	b.t.Helper()
	tok, _, err := b.admin.CreateNodeToken(ctx, role, id, "rack-"+id, time.Hour)
	if err != nil {
		b.t.Fatal(err)
	}
	path, res, err := node.Join(ctx, node.JoinOptions{Token: tok, Meta: b.metas, CA: b.caPEM, ID: id,
		Listen: freeAddrs(b.t), DataDir: filepath.Join(b.root, id), Logger: nodetest.Logger(b.t)})
	if err != nil {
		b.t.Fatal(err)
	}
	return path, res
}

// keyOwners maps the public key of every private key file under root (any file holding a
// PEM private key) to the host directories (root's first-level entries) that hold it.
func keyOwners(t *testing.T, root string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil || !bytes.Contains(data, []byte("PRIVATE KEY")) {
			return err
		}
		k, err := pki.ParseKey(data)
		if err != nil {
			return nil // not a key of ours (pebble, raft files mentioning the words)
		}
		der, err := x509.MarshalPKIXPublicKey(k.Public())
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		host, _, _ := strings.Cut(rel, string(filepath.Separator))
		out[string(der)] = append(out[string(der)], host)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func publicDER(t *testing.T, certPEM []byte) string {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(c.PublicKey.(crypto.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	return string(der)
}

// TestProductionBootstrap brings up a cluster with the bootstrap commands' library entry
// points only (ca init, ca request, ca sign, bootstrap, node-token create, join, cert
// issue, enroll, renew), each host in its own directory, and checks that no host
// directory holds another host's private key and none but the CA host the root key.
func TestProductionBootstrap(t *testing.T) {
	b := newBootCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	chunkCfg, res := b.join(ctx, meta.NodeRoleChunk, "chunk-1")
	if res.Role != meta.NodeRoleChunk || res.Domain != "rack-chunk-1" || len(res.MetaServers) != 1 || res.MetaServers[0].ID != "meta-1" {
		t.Fatalf("join result: %+v", res)
	}
	chunk := b.start(chunkCfg)
	meta2Cfg, res2 := b.join(ctx, meta.NodeRoleMeta, "meta-2")
	if res2.Role != meta.NodeRoleMeta {
		t.Fatalf("meta join result: %+v", res2)
	}
	cfg2, err := node.LoadConfig(meta2Cfg)
	if err != nil {
		t.Fatal(err)
	}
	if cfg2.Bootstrap != nil || !cfg2.Has(node.RoleMeta) || cfg2.TLS.IssuerKey == "" {
		t.Fatalf("joined meta config: bootstrap %v roles %v issuer key %q", cfg2.Bootstrap, cfg2.Roles, cfg2.TLS.IssuerKey)
	}
	// Its issuer is signed by the root on the CA host from the CSR it made.
	csr, err := os.ReadFile(filepath.Join(b.root, "meta-2", node.IssuerCSRFile))
	if err != nil {
		t.Fatal(err)
	}
	icert, err := node.CASign(node.SignOptions{CADir: b.caDir, CSR: csr, Role: node.SignIssuer, ID: "meta-2"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.root, "meta-2", node.IssuerCertFile), icert, 0o644); err != nil {
		t.Fatal(err)
	}
	b.start(meta2Cfg)

	// The joined chunk node runs: it reads the map and the revocation list from meta-1.
	for chunk.Map() == nil || !chunk.RevocationCurrent() {
		if ctx.Err() != nil {
			t.Fatal("joined chunk node never read the map and revocation list")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A second admin from a CSR made on its own workstation, issued by meta-1's issuer.
	bobKey, bobKeyPEM, _ := pki.NewKey()
	bobCSR, _ := pki.NewCSR(bobKey, "bob")
	der, _ := pki.CSRFromPEM(bobCSR)
	ir, err := b.admin.IssueCert(ctx, meta.IssueCertRequest{Role: meta.CertRoleAdmin, Principal: "bob", CSR: der})
	if err != nil {
		t.Fatal(err)
	}
	bobDir := filepath.Join(b.root, "bob-ws")
	os.MkdirAll(bobDir, 0o700)
	os.WriteFile(filepath.Join(bobDir, "bob.pem"), ir.Cert, 0o644)
	os.WriteFile(filepath.Join(bobDir, "bob-key.pem"), bobKeyPEM, 0o600)
	bob := clientFor(t, b.caPEM, filepath.Join(bobDir, "bob.pem"), filepath.Join(bobDir, "bob-key.pem"), b.metas)
	if _, _, _, err := bob.ListCerts(ctx); err != nil {
		t.Fatalf("issued admin certificate does not work: %v", err)
	}
	// An agent enrolls through meta-1's issuer.
	etok, _, err := b.admin.CreateEnrollToken(ctx, "web", "web01", time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	er, err := enroll.Enroll(ctx, enroll.Request{CA: b.caPEM, Meta: b.metas, Token: etok, Name: "web01", Logger: nodetest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := enroll.Write(filepath.Join(b.root, "web01"), b.metas, er); err != nil {
		t.Fatal(err)
	}
	// The chunk node renews its certificate (new key, same identity).
	old, _ := os.ReadFile(filepath.Join(b.root, "chunk-1", node.NodeCertFile))
	info, err := node.Renew(ctx, chunkCfg, nodetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.Principal != "chunk-1" || info.Role != "node" || info.Serial == res.Serial {
		t.Fatalf("renewed: %+v (old serial %s)", info, res.Serial)
	}
	renewed, _ := os.ReadFile(filepath.Join(b.root, "chunk-1", node.NodeCertFile))
	if bytes.Equal(old, renewed) || publicDER(t, old) == publicDER(t, renewed) {
		t.Fatal("renewal kept the certificate or the key")
	}

	// Lifetimes: every signature by an issuer is listed with its validity.
	certs, _, now, err := b.admin.ListCerts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hows := map[string]string{}
	for _, c := range certs {
		if !c.NotAfter.After(now) || c.NotBefore.After(now) || c.Issuer != "meta-1" {
			t.Errorf("cert %+v: lifetime or issuer wrong at %s", c, now)
		}
		hows[c.Principal+"/"+c.How] = c.Role
	}
	for k, role := range map[string]string{"chunk-1/join": "node", "meta-2/join": "meta", "bob/issue": "admin", "web01/enroll": "agent", "chunk-1/renew": "node"} {
		if hows[k] != role {
			t.Errorf("issued list lacks %s (%s): %v", k, role, hows)
		}
	}

	// No host directory holds another host's private key; none but the CA host the root's.
	owners := keyOwners(t, b.root)
	rootPub := publicDER(t, b.caPEM)
	if hosts := owners[rootPub]; len(hosts) != 1 || hosts[0] != "ca-host" {
		t.Errorf("the root key is held by %v, want only ca-host", hosts)
	}
	for _, hosts := range owners {
		if len(hosts) != 1 {
			t.Errorf("one private key is held by several hosts: %v", hosts)
		}
	}
	// Each host's keys belong to its own certificates.
	for host, cert := range map[string]string{"meta-1": node.NodeCertFile, "chunk-1": node.NodeCertFile, "meta-2": node.NodeCertFile} {
		pemBytes, err := os.ReadFile(filepath.Join(b.root, host, cert))
		if err != nil {
			t.Fatal(err)
		}
		if h := owners[publicDER(t, pemBytes)]; len(h) != 1 || h[0] != host {
			t.Errorf("%s's certificate key is held by %v", host, h)
		}
	}
	if len(owners) < 8 { // root, meta-1 node+issuer, alice, chunk-1 (+.old), meta-2 node+issuer, bob, web01
		t.Errorf("only %d private keys found: the scan missed some", len(owners))
	}
}

// TestBootstrapAttacks: the refusals of the join, issue and renew paths.
func TestBootstrapAttacks(t *testing.T) {
	b := newBootCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	anon, err := pki.NewAnonymousIdentity(b.caPEM)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := cquic.New(cquic.Config{Identity: anon, Logger: nodetest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer ep.Close()
	anonC := metarpc.NewClient(ep, b.metas)
	csrFor := func(name string) []byte {
		k, _, _ := pki.NewKey()
		p, _ := pki.NewCSR(k, name)
		der, _ := pki.CSRFromPEM(p)
		return der
	}

	// A chunk token used to ask for a meta certificate.
	tok, _, err := b.admin.CreateNodeToken(ctx, meta.NodeRoleChunk, "chunk-9", "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := anonC.JoinNode(ctx, meta.NodeJoinRequest{Token: tok, CSR: csrFor("chunk-9"), ID: "chunk-9", Role: meta.NodeRoleMeta}); !errors.Is(err, meta.ErrDenied) {
		t.Fatalf("chunk token gave a meta join: %v", err)
	}
	// ... and for another ID.
	if _, err := anonC.JoinNode(ctx, meta.NodeJoinRequest{Token: tok, CSR: csrFor("meta-9"), ID: "meta-9"}); !errors.Is(err, meta.ErrDenied) {
		t.Fatalf("chunk token joined another ID: %v", err)
	}
	// An agent enrollment token never joins a node, a node token never enrolls an agent.
	etok, _, err := b.admin.CreateEnrollToken(ctx, "web", "web02", time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := anonC.JoinNode(ctx, meta.NodeJoinRequest{Token: etok, CSR: csrFor("web02"), ID: "web02"}); !errors.Is(err, meta.ErrDenied) {
		t.Fatalf("agent token joined a node: %v", err)
	}
	if _, err := anonC.Enroll(ctx, meta.EnrollRequest{Token: tok, CSR: csrFor("chunk-9")}); !errors.Is(err, meta.ErrDenied) {
		t.Fatalf("node token enrolled an agent: %v", err)
	}
	// The token still works for what it is for, and yields a node (not meta) certificate.
	res, err := anonC.JoinNode(ctx, meta.NodeJoinRequest{Token: tok, CSR: csrFor("chunk-9"), ID: "chunk-9"})
	if err != nil {
		t.Fatal(err)
	}
	if info, err := pki.ParseCertInfo(res.Cert); err != nil || info.Role != string(transport.RoleNode) || info.Principal != "chunk-9" {
		t.Fatalf("chunk join gave %+v, %v", info, err)
	}
	// A token replayed.
	if _, err := anonC.JoinNode(ctx, meta.NodeJoinRequest{Token: tok, CSR: csrFor("chunk-9"), ID: "chunk-9"}); !errors.Is(err, meta.ErrDenied) || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("replayed token: %v", err)
	}
	// A CSR for another principal.
	if _, err := b.admin.IssueCert(ctx, meta.IssueCertRequest{Role: meta.CertRoleAdmin, Principal: "bob", CSR: csrFor("mallory")}); !errors.Is(err, meta.ErrDenied) {
		t.Fatalf("CSR for another principal was signed: %v", err)
	}
	k, _, _ := pki.NewKey()
	mcsr, _ := pki.NewCSR(k, "mallory")
	if _, err := node.CASign(node.SignOptions{CADir: b.caDir, CSR: mcsr, Role: node.SignAdmin, ID: "bob"}, time.Now()); !errors.Is(err, meta.ErrDenied) {
		t.Fatalf("root signed a CSR for another principal: %v", err)
	}
	// A renewal by a revoked certificate: join a chunk node, revoke its certificate.
	cfgPath, jr := b.join(ctx, meta.NodeRoleChunk, "chunk-8")
	if _, err := b.admin.RevokeCert(ctx, meta.Revocation{Serial: jr.Serial, Reason: "stolen"}); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(b.root, "chunk-8", node.NodeCertFile))
	// The leader refuses from its log at once (the node gate too, from its next refresh).
	_, rerr := node.Renew(ctx, cfgPath, nodetest.Logger(t))
	if rerr == nil || !strings.Contains(rerr.Error(), "revoked") {
		t.Fatalf("renewal by a revoked certificate: %v", rerr)
	}
	after, _ := os.ReadFile(filepath.Join(b.root, "chunk-8", node.NodeCertFile))
	if !bytes.Equal(before, after) {
		t.Fatal("a refused renewal changed the certificate file")
	}
}
