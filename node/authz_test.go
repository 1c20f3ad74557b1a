package node_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/metarpc"
	"github.com/cofferhq/coffer/node"
	"github.com/cofferhq/coffer/node/nodetest"
	"github.com/cofferhq/coffer/placement"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/authz"
	"github.com/cofferhq/coffer/transport/pki"
	cquic "github.com/cofferhq/coffer/transport/quic"
	"github.com/cofferhq/coffer/transport/raftlayer"
	"github.com/cofferhq/coffer/transport/wire"
)

// docTable reads the authorization table of docs/security.md: method → role → cell text.
func docTable(t *testing.T) map[string]map[authz.Role]string {
	t.Helper()
	b, err := os.ReadFile(securityDoc)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i, j := strings.Index(doc, tableBegin), strings.Index(doc, tableEnd)
	if i < 0 || j < i {
		t.Fatalf("%s: no generated authorization table", securityDoc)
	}
	roles := authz.Roles()
	out := map[string]map[authz.Role]string{}
	for _, line := range strings.Split(doc[i+len(tableBegin):j], "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cols := strings.Split(strings.Trim(line, "| "), " | ")
		if len(cols) != 1+len(roles) {
			t.Fatalf("%s: row %q has %d columns", securityDoc, line, len(cols))
		}
		name, _, _ := strings.Cut(cols[0], " (") // "(D)" or "(A)" after the name
		method := strings.Trim(name, "`")
		out[method] = map[authz.Role]string{}
		for k, r := range roles {
			out[method][r] = cols[1+k]
		}
	}
	return out
}

// caller is one credential of the matrix.
type caller struct {
	name      string // the certificate's principal ("" for anonymous)
	role      authz.Role
	revoked   bool
	ep        *cquic.Endpoint
	handshake bool // the stream-protocol handshake itself refuses this caller
}

func endpointFor(t *testing.T, id *pki.Identity) *cquic.Endpoint {
	t.Helper()
	ep, err := cquic.New(cquic.Config{Identity: id, Logger: nodetest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	return ep
}

// TestAuthzMatrix calls every method of the authorization table with every credential
// (agent, restore operator, replication, admin, chunk node, meta node, anonymous, revoked) over
// loopback QUIC against one dev cluster, and checks each answer against the cell of
// docs/security.md: a refused cell is refused before its handler (PermissionDenied, or
// Unauthenticated without a certificate), an allowed one is never refused for the
// caller's role (it may still fail on its empty arguments), a conditional one reaches its
// handler. A revoked certificate is refused everything. Every refusal of a destructive
// method for an authenticated caller is in the audit log. Unknown methods are refused.
// The subtests check what the conditional cells of topology and key-wrap reads return.
func TestAuthzMatrix(t *testing.T) {
	start := time.Now()
	c := nodetest.New(t, nodetest.Opts{Meta: 1, Chunk: 6, PGCount: 16})
	ctx := ctxT(t, 3*time.Minute)
	issue := func(cn string, role transport.Role, vaults ...string) *pki.Identity {
		return identityFor(t, c, pki.IssueRequest{CommonName: cn, Role: role, Vaults: vaults})
	}
	metaAddr := c.WaitLeader(t).Addr()
	var chunkAddr string
	for _, n := range c.Nodes {
		if n.Shards() != nil {
			chunkAddr = n.Addr()
			break
		}
	}
	adminID := issue("matrix-admin", transport.RoleAdmin)
	admin := nodetest.ConnectWith(t, adminID, []string{metaAddr}, c.ChunkAddrs())
	if _, err := client.InitVault(ctx, admin, "v1", passphrase); err != nil {
		t.Fatal(err)
	}
	if _, err := client.InitVault(ctx, admin, "v2", passphrase); err != nil {
		t.Fatal(err)
	}
	revokedID := issue("matrix-revoked", transport.RoleAdmin)
	rv, err := admin.Meta.(meta.EnrollService).RevokeCert(ctx, meta.Revocation{Principal: "matrix-revoked", Reason: "matrix"})
	if err != nil {
		t.Fatal(err)
	}
	waitRevocation(t, c, rv.Seq)

	callers := []caller{
		{name: "matrix-agent", role: authz.Agent, ep: endpointFor(t, issue("matrix-agent", transport.RoleAgent, "v1")), handshake: true},
		{name: "matrix-restore", role: authz.Restore, ep: endpointFor(t, issue("matrix-restore", transport.RoleRestore, "v1")), handshake: true},
		{name: "matrix-repl", role: authz.Replication, ep: endpointFor(t, issue("matrix-repl", transport.RoleReplication, "v1")), handshake: true},
		{name: "matrix-admin", role: authz.Admin, ep: endpointFor(t, adminID), handshake: true},
		{name: "matrix-node", role: authz.Node, ep: endpointFor(t, issue("matrix-node", transport.RoleNode))},
		{name: "matrix-meta", role: authz.Meta, ep: endpointFor(t, issue("matrix-meta", transport.RoleMeta))},
		{name: "", role: authz.Anonymous, ep: anonymousEndpoint(t, c), handshake: true},
		{name: "matrix-revoked", role: authz.Admin, revoked: true, ep: endpointFor(t, revokedID), handshake: true},
	}

	t.Run("matrix", func(t *testing.T) {
		doc := docTable(t)
		tab := node.AuthzTable()
		if len(doc) != len(tab.Rules()) {
			t.Fatalf("docs/security.md lists %d methods, the code's table %d (run TestSecurityDoc)", len(doc), len(tab.Rules()))
		}
		empty, err := wire.Marshal(struct{}{})
		if err != nil {
			t.Fatal(err)
		}
		// refusal is a refused call of an audited method, which the audit log must show: an
		// entry of its principal naming the rule's audit action, or (a handler's refusal,
		// audited under the service's own action name) giving the reason the caller was told.
		type refusal struct{ principal, method, msg string }
		var audited []refusal
		cells := 0
		for _, r := range tab.Rules() {
			for _, cl := range callers {
				cell, ok := doc[r.Method][cl.role]
				if !ok {
					t.Fatalf("docs/security.md has no cell %s × %s", r.Method, cl.role)
				}
				if cell != r.Cell(cl.role).String() {
					t.Errorf("%s × %s: docs say %q, the code %q", r.Method, cl.role, cell, r.Cell(cl.role))
				}
				want := cell
				if cl.revoked {
					want = "refused"
				}
				cells++
				if strings.HasPrefix(r.Method, "stream:") {
					refusedAtCheck := checkStream(t, ctx, cl, metaAddr, strings.TrimPrefix(r.Method, "stream:"), want)
					if refusedAtCheck && r.Audited() && !cl.revoked {
						audited = append(audited, refusal{cl.name, r.AuditAction(), ""})
					}
					continue
				}
				addr := chunkAddr
				if strings.HasPrefix(r.Method, "meta.") {
					addr = metaAddr
				}
				err := callOnce(ctx, cl, addr, r.Method, empty)
				code := transport.CodeOf(err)
				if cl.role == authz.Anonymous && errors.Is(err, transport.ErrRefused) {
					// Nodes that serve no anonymous method refuse the enrollment protocol
					// at the handshake.
					code = transport.Unauthenticated
				}
				tableRefusal := err != nil && strings.HasPrefix(err.Error(), "authz: ")
				switch {
				case cl.revoked:
					if code != transport.PermissionDenied || !strings.Contains(err.Error(), "revoked") {
						t.Errorf("%s × revoked certificate: %v, want permission denied (revoked)", r.Method, err)
					}
				case want == "refused":
					wantCode := transport.PermissionDenied
					if cl.role == authz.Anonymous {
						wantCode = transport.Unauthenticated
					}
					if code != wantCode {
						t.Errorf("%s × %s: %v (%s), want %s", r.Method, cl.role, err, code, wantCode)
					}
				case want == "allowed":
					if code == transport.PermissionDenied || code == transport.Unauthenticated || code == transport.UnknownMethod {
						t.Errorf("%s × %s: %v, want it served (allowed)", r.Method, cl.role, err)
					}
				default: // conditional: the handler decides
					if tableRefusal || code == transport.UnknownMethod || code == transport.Unauthenticated {
						t.Errorf("%s × %s: %v, want it to reach its handler (%s)", r.Method, cl.role, err, want)
					}
				}
				if r.Audited() && cl.role != authz.Anonymous && code == transport.PermissionDenied {
					audited = append(audited, refusal{cl.name, r.AuditAction(), err.Error()})
				}
			}
		}
		// Unknown methods, on every node kind.
		for _, cl := range callers {
			for _, m := range []string{"meta.NoSuchMethod", "shard.NoSuchMethod", "bogus.Method"} {
				_, err := cl.ep.Call(ctx, metaAddr, m, empty)
				if code := transport.CodeOf(err); code != transport.UnknownMethod && code != transport.Unauthenticated && code != transport.PermissionDenied {
					t.Errorf("%s × %s: %v, want refused", m, cl.role, err)
				}
			}
		}
		if t.Failed() {
			return
		}
		adm := admin.Meta.(meta.RetentionService)
		waitAudit(t, adm, func(es []meta.AuditEntry) string {
			var missing []string
			for _, rf := range audited {
				if !slices.ContainsFunc(es, func(e meta.AuditEntry) bool {
					// The service may append its own context in parentheses.
					core, _, _ := strings.Cut(e.Reason, " (")
					return e.Outcome == meta.AuditRefused && e.Principal == rf.principal &&
						(e.Action == rf.method || core != "" && strings.Contains(rf.msg, core))
				}) {
					missing = append(missing, rf.principal+" × "+rf.method+": "+rf.msg)
				}
			}
			if len(missing) > 0 {
				slices.Sort(missing)
				return fmt.Sprintf("refusals of destructive calls not audited: %v", missing)
			}
			return ""
		})
		t.Logf("%d cells × credentials checked, %d refusals of audited methods found in the audit log, %v since the cluster started", cells, len(audited), time.Since(start).Round(time.Millisecond))
	})

	t.Run("agent topology reads", func(t *testing.T) {
		for _, cl := range callers[:3] { // agent, restore operator, replication
			mc := metarpc.NewClient(cl.ep, []string{metaAddr})
			if _, err := mc.RaftStatus(ctx); transport.CodeOf(err) != transport.PermissionDenied {
				t.Errorf("%s: admin status (meta.RaftStatus): %v, want permission denied", cl.role, err)
			}
			if _, err := mc.PGHealth(ctx); transport.CodeOf(err) != transport.PermissionDenied {
				t.Errorf("%s: admin pgs (meta.PGHealth): %v, want permission denied", cl.role, err)
			}
			if _, err := mc.GCStatus(ctx); transport.CodeOf(err) != transport.PermissionDenied {
				t.Errorf("%s: meta.GCStatus: %v, want permission denied", cl.role, err)
			}
			for _, m := range []string{"node.Status", "node.PGHealth"} {
				var out struct{}
				if err := wire.Call(ctx, cl.ep, chunkAddr, m, struct{}{}, &out); transport.CodeOf(err) != transport.PermissionDenied {
					t.Errorf("%s: admin status (%s): %v, want permission denied", cl.role, m, err)
				}
			}
			// admin nodes (the cluster map): entry points only.
			m, err := mc.ClusterMap(ctx)
			if err != nil {
				t.Fatalf("%s: cluster map: %v", cl.role, err)
			}
			if m.PGCount != 0 || m.Profile != (placement.Profile{}) || len(m.Nodes) == 0 {
				t.Errorf("%s: cluster map shows topology or no entry point: %+v", cl.role, m)
			}
			for _, n := range m.Nodes {
				if n.ID != "" || n.Domain != "" || n.Weight != 0 || n.Addr == "" {
					t.Errorf("%s: cluster map node %+v: want an address only", cl.role, n)
				}
			}
			vs, err := mc.ListVaults(ctx)
			if err != nil || len(vs) != 1 || vs[0].ID != "v1" {
				t.Errorf("%s: list vaults: %+v %v, want only its own vault v1", cl.role, vs, err)
			}
		}
		full, err := admin.Meta.ClusterMap(ctx)
		if err != nil || full.PGCount != 16 || len(full.Nodes) != 6 || full.Nodes[0].ID == "" {
			t.Errorf("admin: cluster map %+v %v, want the whole map", full, err)
		}
		if _, err := admin.Meta.(meta.ClusterAdmin).PGHealth(ctx); err != nil {
			t.Errorf("admin: PG health: %v", err)
		}
	})

	t.Run("node key-wrap reads", func(t *testing.T) {
		for _, cl := range callers {
			if cl.revoked || cl.role == authz.Anonymous {
				continue
			}
			mc := metarpc.NewClient(cl.ep, []string{metaAddr})
			wantWraps := cl.role != authz.Node && cl.role != authz.Meta
			v, err := mc.GetVault(ctx, "v1")
			if err != nil {
				t.Fatalf("%s: get vault: %v", cl.role, err)
			}
			if got := len(v.KeyWraps) > 0 || v.Keys != nil; got != wantWraps {
				t.Errorf("%s: get vault returned %d key wraps and key record %v, want wraps: %v", cl.role, len(v.KeyWraps), v.Keys != nil, wantWraps)
			}
			vs, err := mc.ListVaults(ctx)
			if err != nil || len(vs) == 0 {
				t.Fatalf("%s: list vaults: %v %v", cl.role, vs, err)
			}
			for _, v := range vs {
				if got := len(v.KeyWraps) > 0 || v.Keys != nil; got != wantWraps {
					t.Errorf("%s: list vaults: vault %s with %d key wraps, want wraps: %v", cl.role, v.ID, len(v.KeyWraps), wantWraps)
				}
			}
		}
	})
}

// callOnce calls method on addr as cl with body.
func callOnce(ctx context.Context, cl caller, addr, method string, body []byte) error {
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	_, err := cl.ep.Call(cctx, addr, method, body)
	return err
}

// checkStream opens a stream of protocol alpn to addr as cl and checks the answer
// against the cell: a refused caller fails the handshake (roles that may not use
// stream protocols at all) or has the stream refused by the node's check; a
// conditional or allowed one gets the stream through to the protocol. It reports
// whether the node's check refused the stream (which the audit log must show).
func checkStream(t *testing.T, ctx context.Context, cl caller, addr, alpn, want string) (refusedAtCheck bool) {
	t.Helper()
	if alpn != raftlayer.ALPN {
		t.Fatalf("stream protocol %q: the matrix knows only %q", alpn, raftlayer.ALPN)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := cl.ep.DialConn(cctx, addr, alpn)
	if err != nil {
		if want == "refused" && cl.handshake {
			return false
		}
		t.Errorf("stream %s × %s: %v", alpn, cl.role, err)
		return false
	}
	defer conn.Close()
	// The peer accepts a stream after its first byte; one byte is no Raft message, so
	// an accepted stream is closed by Raft, a refused one reset by the check.
	if _, err := conn.Write([]byte{0xff}); err != nil {
		// TLS 1.3: a refusal of the client certificate that arrives before the write
		// (a fast server) fails the write rather than the read.
		var te *quicgo.TransportError
		if want == "refused" && cl.handshake && errors.As(err, &te) && te.Remote {
			return false
		}
		t.Errorf("stream %s × %s: write: %v", alpn, cl.role, err)
		return false
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = conn.Read(make([]byte, 1))
	var se *quicgo.StreamError
	var te *quicgo.TransportError
	refused := errors.As(err, &se) && se.Remote
	// TLS 1.3: the server's refusal of a client certificate arrives after the client's
	// handshake has finished, with the first read.
	handshakeRefused := cl.handshake && errors.As(err, &te) && te.Remote
	switch {
	case want == "refused" && !refused && !handshakeRefused:
		t.Errorf("stream %s × %s: read %v, want the stream refused", alpn, cl.role, err)
	case want != "refused" && (refused || handshakeRefused):
		t.Errorf("stream %s × %s: refused (%v), want it through (%s)", alpn, cl.role, err, want)
	}
	return refused
}
