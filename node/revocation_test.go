package node_test

import (
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/node/nodetest"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
	cquic "github.com/cofferhq/coffer/transport/quic"
)

// endpointAs is a client endpoint holding a certificate the test CA issues now.
func endpointAs(t *testing.T, c *nodetest.Cluster, req pki.IssueRequest) *cquic.Endpoint {
	t.Helper()
	ep, err := cquic.New(cquic.Config{Identity: identityFor(t, c, req), Logger: nodetest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	return ep
}

// notYetCurrent reports whether err is a node's refusal for not yet holding a current
// revocation list.
func notYetCurrent(err error) bool {
	return transport.CodeOf(err) == transport.Unavailable && strings.Contains(err.Error(), "revocation list")
}

// TestRevocationFailsClosedAfterRestart: a chunk node and a meta node restarted while
// the meta group has no quorum still refuse a revoked agent (the list they persisted),
// refuse every other non-node peer with Unavailable until they read a list at least as
// new from the leader, and keep serving node peers; once the meta group is back, the
// other agent is served again and the revoked one is still refused. A gossip member
// whose certificate is revoked is not used as a peer.
func TestRevocationFailsClosedAfterRestart(t *testing.T) {
	c := nodetest.New(t, nodetest.Opts{Meta: 3, Chunk: 6, PGCount: 16})
	ctx := ctxT(t, 3*time.Minute)
	admin := c.Connect(t)
	es := admin.Meta.(meta.EnrollService)

	revoked := endpointAs(t, c, pki.IssueRequest{CommonName: "web01", Role: transport.RoleAgent})
	other := endpointAs(t, c, pki.IssueRequest{CommonName: "web02", Role: transport.RoleAgent})
	peer := endpointAs(t, c, pki.IssueRequest{CommonName: "chunk-9", Role: transport.RoleNode})
	r, err := es.RevokeCert(ctx, meta.Revocation{Principal: "web01", Reason: "stolen laptop"})
	if err != nil {
		t.Fatal(err)
	}
	waitRevocation(t, c, r.Seq)
	// A chunk node's certificate is revoked too: gossip stops counting it as a member
	// (by its advertised certificate), so no node uses it as a peer.
	rn, err := es.RevokeCert(ctx, meta.Revocation{Principal: "chunk-3", Reason: "decommissioned"})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"chunk-1", "chunk-2", "meta-1"} {
		waitMemberState(ctx, t, c.Node(id), "chunk-3", "revoked")
	}

	// The meta group loses its quorum; a chunk node and a meta node restart without it.
	for _, id := range []string{"meta-2", "meta-3", "meta-1", "chunk-1"} {
		if err := c.Stop(id); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"chunk-1", "meta-1"} {
		if err := c.Restart(id); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"chunk-1", "meta-1"} {
		n := c.Node(id)
		if got := n.RevocationVersion(); got != rn.Seq {
			t.Fatalf("%s enforces revocation list %d after its restart, want the persisted %d", id, got, rn.Seq)
		}
		addr := n.Addr()
		_, err := revoked.Call(ctx, addr, "node.Status", nil)
		if transport.CodeOf(err) != transport.PermissionDenied || !strings.Contains(err.Error(), "revoked") {
			t.Errorf("%s restarted without meta serves the revoked agent: %v, want PermissionDenied (revoked)", id, err)
		}
		if _, err := other.Call(ctx, addr, "node.Status", nil); !notYetCurrent(err) {
			t.Errorf("%s restarted without meta, another agent: %v, want Unavailable naming the revocation list", id, err)
		}
		if _, err := peer.Call(ctx, addr, "node.Status", nil); err != nil {
			t.Errorf("%s restarted without meta refuses a node peer: %v", id, err)
		}
	}

	for _, id := range []string{"meta-2", "meta-3"} {
		if err := c.Restart(id); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, id := range []string{"chunk-1", "meta-1"} {
		n := c.Node(id)
		for !n.RevocationCurrent() {
			if time.Now().After(deadline) {
				t.Fatalf("%s has not read the revocation list 30 s after the meta group came back", id)
			}
			time.Sleep(20 * time.Millisecond) // polling a condition the node reaches on its own
		}
		addr := n.Addr()
		if _, err := other.Call(ctx, addr, "node.Status", nil); notYetCurrent(err) {
			t.Errorf("%s with a current list still refuses another agent: %v", id, err)
		}
		if _, err := revoked.Call(ctx, addr, "node.Status", nil); transport.CodeOf(err) != transport.PermissionDenied {
			t.Errorf("%s serves the revoked agent: %v", id, err)
		}
	}
}
