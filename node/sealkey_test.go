package node_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/metarpc"
	"github.com/cofferhq/coffer/node"
	"github.com/cofferhq/coffer/node/nodetest"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
	cquic "github.com/cofferhq/coffer/transport/quic"
)

// TestMFASealKeyAcrossLeaders: a TOTP secret enrolled on one leader opens on the next,
// which signs with another issuing CA (issue 13): the secret is sealed under the cluster
// seal key every meta server holds, not under a server's own CA key. Chunk nodes hold no
// seal key and are refused it over the wire (as are admins); every meta server of the
// configuration is answered with the same key.
func TestMFASealKeyAcrossLeaders(t *testing.T) {
	c := nodetest.New(t, nodetest.Opts{TwoPerson: true})
	metas := metaAddrs(t, c)
	connect := func(name string, role transport.Role) meta.ApprovalService {
		return nodetest.ConnectWith(t, identityFor(t, c, pki.IssueRequest{CommonName: name, Role: role}), metas, c.ChunkAddrs()).Meta.(meta.ApprovalService)
	}
	alice, bob := connect("alice", transport.RoleAdmin), connect("bob", transport.RoleAdmin)
	ctx := ctxT(t, 4*time.Minute)
	first := c.Leader()
	aliceKey := enrollMFA(t, alice, "alice")
	bobKey := enrollMFA(t, bob, "bob")

	// The issuing CAs differ: a key derived from one would not open on the next leader.
	issuer := func(n *node.Node) []byte {
		b, err := os.ReadFile(filepath.Join(c.Dir, "nodes", n.ID(), node.IssuerKeyFile))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if err := c.Stop(first.ID()); err != nil {
		t.Fatal(err)
	}
	var second *node.Node
	for deadline := time.Now().Add(time.Minute); second == nil || second == first; {
		if time.Now().After(deadline) {
			t.Fatal("no new leader within a minute after stopping the first")
		}
		second = c.Leader()
		if second == nil || second == first {
			time.Sleep(100 * time.Millisecond) // polling for the election
		}
	}
	if bytes.Equal(issuer(first), issuer(second)) {
		t.Fatalf("leaders %s and %s share an issuing CA key; the test needs distinct ones", first.ID(), second.ID())
	}

	// A gated operation (a policy change is always gated) requested with alice's code and
	// approved with bob's on the new leader: the secrets sealed by the first open.
	_, err := alice.SetApprovalPolicy(meta.WithTOTP(ctx, totpCode(t, aliceKey, time.Now().Add(30*time.Second))), meta.DefaultApprovalPolicy())
	id, ok := meta.ApprovalIDFrom(err)
	if !ok {
		t.Fatalf("policy change by one admin: %v, want approval required", err)
	}
	r, err := bob.DecideApproval(ctx, id, true, totpCode(t, bobKey, time.Now().Add(30*time.Second)), "")
	if err != nil || r.State != meta.ApprovalExecuted {
		t.Fatalf("approval on the new leader %s: %+v, %v; want executed", second.ID(), r, err)
	}

	// Every meta server holds the same key file (0600); no chunk node holds one.
	var key []byte
	for _, n := range c.Nodes {
		p := filepath.Join(c.DataDir(n.ID()), node.SealKeyFile)
		st, err := os.Stat(p)
		if n.Meta() == nil {
			if err == nil {
				t.Fatalf("chunk node %s holds a seal key (%s)", n.ID(), p)
			}
			continue
		}
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("meta server %s: seal key %s: %v, mode %v; want 0600", n.ID(), p, err, st.Mode())
		}
		b, _ := os.ReadFile(p)
		if key != nil && !bytes.Equal(b, key) {
			t.Fatalf("meta server %s holds another seal key", n.ID())
		}
		key = b
	}
	// Over the wire a chunk node's and an admin's certificate are refused the key.
	for _, who := range []pki.IssueRequest{{CommonName: "chunk-1", Role: transport.RoleNode}, {CommonName: "alice", Role: transport.RoleAdmin}} {
		ep, err := cquic.New(cquic.Config{Identity: identityFor(t, c, who), Logger: nodetest.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ep.Close() })
		_, err = metarpc.PeerSealKey(ep, who.CommonName)(ctx, second.ID(), second.Addr())
		if !errors.Is(err, meta.ErrDenied) {
			t.Fatalf("%s (%s) asking for the seal key: %v, want ErrDenied", who.CommonName, who.Role, err)
		}
	}
	// Refusals by the authorization table are recorded asynchronously: poll.
	for deadline := time.Now().Add(time.Minute); ; {
		es, err := alice.(meta.RetentionService).AuditLog(ctx, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		refused := map[string]bool{}
		for _, e := range es {
			if e.Action == "seal key read" && e.Outcome == meta.AuditRefused && strings.Contains(e.Reason, "meta only") {
				refused[e.Principal] = true
			}
		}
		if refused["chunk-1"] && refused["alice"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("audited seal key refusals %v, want chunk-1's and alice's", refused)
		}
		time.Sleep(200 * time.Millisecond) // polling the audit log
	}
}
