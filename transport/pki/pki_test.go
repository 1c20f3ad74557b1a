package pki_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
)

func newCA(t *testing.T, name string) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA(name, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t *testing.T, ca *pki.CA, cn string, role transport.Role, now time.Time, validity time.Duration) *pki.Identity {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(pki.IssueRequest{CommonName: cn, Role: role, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Validity: validity}, now)
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.NewIdentity(ca.CertPEM(), certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// handshake runs a TLS handshake over an in-memory pipe and returns each side's error and
// the server's view of the client.
func handshake(t *testing.T, server, client *tls.Config) (serverErr, clientErr error, peer transport.Peer) {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	srv := tls.Server(a, server)
	cli := tls.Client(b, client)
	done := make(chan error, 1)
	go func() {
		err := srv.Handshake()
		if err != nil {
			a.Close() // unblock the client
		}
		done <- err
	}()
	clientErr = cli.Handshake()
	if clientErr != nil {
		b.Close()
	} else {
		// NB: in TLS 1.3 the client finishes before the server has checked its
		// certificate; read so that the server's alert (if any) is not blocked on the pipe.
		go io.Copy(io.Discard, cli)
	}
	serverErr = <-done
	if serverErr == nil {
		peer = pki.PeerFromTLS(srv.ConnectionState(), a.RemoteAddr())
	}
	return serverErr, clientErr, peer
}

func TestIssueAndHandshake(t *testing.T) {
	ca := newCA(t, "cluster")
	now := time.Now()
	node := issue(t, ca, "node-1", transport.RoleNode, now, 0)
	agent := issue(t, ca, "host-a", transport.RoleAgent, now, time.Hour)
	if node.Principal() != "node-1" || node.Role() != transport.RoleNode {
		t.Fatalf("node identity %q %q", node.Principal(), node.Role())
	}
	for _, cli := range []*pki.Identity{node, agent} {
		se, ce, peer := handshake(t, node.ServerTLS("coffer-rpc/1"), cli.ClientTLS("coffer-rpc/1"))
		if se != nil || ce != nil {
			t.Fatalf("%s: server %v, client %v", cli.Principal(), se, ce)
		}
		if peer.Principal != cli.Principal() || peer.Role != cli.Role() {
			t.Fatalf("peer %+v, want %s/%s", peer, cli.Principal(), cli.Role())
		}
	}
	if got := agent.Leaf().NotAfter.Sub(agent.Leaf().NotBefore); got > time.Hour+10*time.Minute {
		t.Errorf("agent validity %v, want about 1h", got)
	}
	if ku := node.Leaf().ExtKeyUsage; len(ku) != 2 {
		t.Errorf("node EKUs %v, want server+client", ku)
	}
	if ku := agent.Leaf().ExtKeyUsage; len(ku) != 1 {
		t.Errorf("agent EKUs %v, want client only", ku)
	}
}

func TestOtherCARefused(t *testing.T) {
	ca, other := newCA(t, "cluster"), newCA(t, "intruder")
	node := issue(t, ca, "node-1", transport.RoleNode, time.Now(), 0)
	foreignCert, foreignKey, err := other.Issue(pki.IssueRequest{CommonName: "node-x", Role: transport.RoleNode}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// The intruder trusts both CAs, so only the cluster node's check can refuse it.
	bundle := append(ca.CertPEM(), other.CertPEM()...)
	intruder, err := pki.NewIdentity(bundle, foreignCert, foreignKey)
	if err != nil {
		t.Fatal(err)
	}
	se, _, _ := handshake(t, node.ServerTLS("p"), intruder.ClientTLS("p"))
	if se == nil {
		t.Fatal("server accepted a client certificate from another CA")
	}
	// And a client of the cluster refuses a server from another CA.
	_, ce, _ := handshake(t, intruder.ServerTLS("p"), node.ClientTLS("p"))
	if ce == nil || !strings.Contains(ce.Error(), "node-x") {
		t.Fatalf("client accepted a foreign server: %v", ce)
	}
	// A client that trusts only the cluster CA but holds a foreign certificate (a
	// misconfiguration NewIdentity allows) is refused by the server too.
	misfit, err := pki.NewIdentity(ca.CertPEM(), foreignCert, foreignKey)
	if err != nil {
		t.Fatal(err)
	}
	if se, _, _ := handshake(t, node.ServerTLS("p"), misfit.ClientTLS("p")); se == nil {
		t.Fatal("server accepted a foreign certificate")
	}
	// LoadIdentity, the operator's path, refuses the mismatch up front.
	dir := t.TempDir()
	files := map[string][]byte{"ca.pem": ca.CertPEM(), "x.pem": foreignCert, "x.key": foreignKey}
	for name, data := range files {
		if err := pki.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, err = pki.LoadIdentity(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "x.pem"), filepath.Join(dir, "x.key"))
	if !errors.Is(err, pki.ErrInvalid) || !strings.Contains(err.Error(), "not issued by a trusted CA") {
		t.Fatalf("LoadIdentity with the wrong CA: %v", err)
	}
}

func TestDeriveSecret(t *testing.T) {
	ca := newCA(t, "cluster")
	certPEM, keyPEM, err := ca.Issue(pki.IssueRequest{CommonName: "n", Role: transport.RoleNode}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	a, err := pki.NewIdentity(ca.CertPEM(), certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	b, err := pki.NewIdentity(ca.CertPEM(), certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	other := issue(t, ca, "m", transport.RoleNode, time.Now(), 0)
	if a.DeriveSecret("x") != b.DeriveSecret("x") {
		t.Error("same key, same label: secrets differ (not stable across restarts)")
	}
	if a.DeriveSecret("x") == a.DeriveSecret("y") {
		t.Error("different labels give the same secret")
	}
	if a.DeriveSecret("x") == other.DeriveSecret("x") {
		t.Error("different keys give the same secret")
	}
}

func TestExpiredRefused(t *testing.T) {
	ca := newCA(t, "cluster")
	past := time.Now().Add(-48 * time.Hour)
	node := issue(t, ca, "node-1", transport.RoleNode, time.Now(), 0)
	oldAgent := issue(t, ca, "host-a", transport.RoleAgent, past, time.Hour)
	oldNode := issue(t, ca, "node-old", transport.RoleNode, past, time.Hour)
	if se, _, _ := handshake(t, node.ServerTLS("p"), oldAgent.ClientTLS("p")); se == nil {
		t.Fatal("server accepted an expired client certificate")
	}
	if _, ce, _ := handshake(t, oldNode.ServerTLS("p"), node.ClientTLS("p")); ce == nil || !strings.Contains(ce.Error(), "expired") {
		t.Fatalf("client accepted an expired server certificate: %v", ce)
	}
}

func TestClientRequiresNodeServer(t *testing.T) {
	ca := newCA(t, "cluster")
	node := issue(t, ca, "node-1", transport.RoleNode, time.Now(), 0)
	admin := issue(t, ca, "alice", transport.RoleAdmin, time.Now(), 0)
	// An admin certificate has no server-auth EKU and is not a node: refused either way.
	if _, ce, _ := handshake(t, admin.ServerTLS("p"), node.ClientTLS("p")); ce == nil {
		t.Fatal("client accepted a non-node server")
	}
}

func TestIssueRejectsBadRequests(t *testing.T) {
	ca := newCA(t, "cluster")
	for _, req := range []pki.IssueRequest{
		{CommonName: "", Role: transport.RoleNode},
		{CommonName: "x", Role: "root"},
		{CommonName: "x", Role: transport.RoleAgent, Validity: -time.Hour},
	} {
		if _, _, err := ca.Issue(req, time.Now()); !errors.Is(err, pki.ErrInvalid) {
			t.Errorf("%+v: err %v, want ErrInvalid", req, err)
		}
	}
	if _, err := pki.NewCA("", time.Now()); !errors.Is(err, pki.ErrInvalid) {
		t.Errorf("NewCA empty name: %v", err)
	}
}

func TestLoadCAAndFiles(t *testing.T) {
	ca := newCA(t, "cluster")
	again, err := pki.LoadCA(ca.CertPEM(), ca.KeyPEM())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.CertPEM(), ca.CertPEM()) {
		t.Fatal("reloaded CA differs")
	}
	if v := ca.Certificate().NotAfter.Sub(ca.Certificate().NotBefore); v < 3650*24*time.Hour {
		t.Errorf("CA validity %v, want 10 years", v)
	}
	other := newCA(t, "other")
	if _, err := pki.LoadCA(ca.CertPEM(), other.KeyPEM()); !errors.Is(err, pki.ErrInvalid) {
		t.Errorf("mismatched key: %v", err)
	}
	if _, err := pki.LoadCA([]byte("junk"), ca.KeyPEM()); !errors.Is(err, pki.ErrInvalid) {
		t.Errorf("junk cert: %v", err)
	}
	certPEM, keyPEM, err := again.Issue(pki.IssueRequest{CommonName: "n", Role: transport.RoleNode}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.LoadCA(certPEM, keyPEM); !errors.Is(err, pki.ErrInvalid) {
		t.Errorf("leaf loaded as CA: %v", err)
	}
	dir := t.TempDir()
	paths := []string{filepath.Join(dir, "ca.pem"), filepath.Join(dir, "n.pem"), filepath.Join(dir, "n.key")}
	for i, data := range [][]byte{ca.CertPEM(), certPEM, keyPEM} {
		if err := pki.WriteFile(paths[i], data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if fi, err := os.Stat(paths[2]); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", fi.Mode(), err)
	}
	id, err := pki.LoadIdentity(paths[0], paths[1], paths[2])
	if err != nil {
		t.Fatal(err)
	}
	if id.Principal() != "n" {
		t.Fatalf("principal %q", id.Principal())
	}
	if _, err := pki.LoadIdentity(paths[0], paths[1], filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing key file accepted")
	}
}
