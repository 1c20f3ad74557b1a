package chunkrpc_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/chunkrpc"
	"github.com/cofferhq/coffer/chunkstore/grant"
	"github.com/cofferhq/coffer/chunkstore/memstore"
	"github.com/cofferhq/coffer/chunkstore/reflist"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
	"github.com/cofferhq/coffer/transport/wire"
)

// grantNode is a chunk node serving restore grants, holding two vaults' snapshots that
// share one snapshot ID (agents choose snapshot IDs; they are unique only in a vault).
type grantNode struct {
	n    *testNet
	srv  *chunkrpc.Server
	addr string
	key  []byte
	now  time.Time
	snap chunk.ID
	// refs are each vault's reference-list chunk IDs; data each vault's one data chunk.
	refs map[string][]chunk.ID
	data map[string]chunk.ID

	mu      sync.Mutex
	refused []string // "method: reason" of each refusal the audit hook saw
}

func newGrantNode(t *testing.T) *grantNode {
	t.Helper()
	g := &grantNode{
		n:    newNet(t),
		key:  grant.Key([]byte("cluster secret")),
		now:  time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
		snap: id(7000),
		refs: map[string][]chunk.ID{},
		data: map[string]chunk.ID{},
	}
	chunks := memstore.NewChunks()
	for i, v := range []string{"A", "B"} {
		d := id(100 + i)
		g.data[v] = d
		put := []chunkstore.Chunk{{ID: d, Data: []byte("data of vault " + string(v))}}
		for _, c := range reflist.Encode([]chunk.ID{d}) {
			g.refs[v] = append(g.refs[v], c.ID)
			put = append(put, chunkstore.Chunk(c))
		}
		if err := chunks.Put(context.Background(), put); err != nil {
			t.Fatal(err)
		}
	}
	g.srv = chunkrpc.NewServer(nil, chunks)
	g.srv.EnableGrants(g.key, func() (time.Time, error) { return g.now, nil })
	g.srv.OnRefused(func(_ transport.Peer, method, reason string) {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.refused = append(g.refused, method+": "+reason)
	})
	g.addr = g.n.node("node-g", g.srv).Addr()
	return g
}

// grant signs a grant for vault's snapshot issued to principal.
func (g *grantNode) grant(t *testing.T, vault string, principal string) []byte {
	t.Helper()
	tok, err := grant.Sign(g.key, grant.Grant{Vault: vault, Snapshot: g.snap, Refs: g.refs[vault], Principal: principal, Expires: g.now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// operator returns a client of a restore operator whose certificate is scoped to vaults
// (none: every vault), presenting grant.
func (g *grantNode) operator(t *testing.T, name string, grant []byte, vaults ...string) *chunkrpc.Granted {
	t.Helper()
	ep := g.n.endpointFor(pki.IssueRequest{CommonName: name, Role: transport.RoleRestore, Vaults: vaults}, false, nil)
	return chunkrpc.NewClient(ep, []string{g.addr}).WithGrant(grant)
}

// lastRefusal returns the newest refusal the audit hook saw.
func (g *grantNode) lastRefusal() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.refused) == 0 {
		return ""
	}
	return g.refused[len(g.refused)-1]
}

// wantDenied fails unless err is PermissionDenied naming every want, and the audit hook
// saw the refusal.
func (g *grantNode) wantDenied(t *testing.T, what string, err error, want ...string) {
	t.Helper()
	if transport.CodeOf(err) != transport.PermissionDenied {
		t.Fatalf("%s: %v, want PermissionDenied", what, err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("%s: %v, want it to name %q", what, err, w)
		}
		if r := g.lastRefusal(); !strings.Contains(r, w) {
			t.Fatalf("%s: audit hook saw %q, want it to name %q", what, r, w)
		}
	}
}

// TestGrantCrossVault: vault B's restore operator, with a grant for B's snapshot whose ID
// vault A's snapshot shares, cannot read A's chunks, not even after A's reference lists
// are cached; nor can a grant for vault A serve a certificate scoped to B.
func TestGrantCrossVault(t *testing.T) {
	g := newGrantNode(t)
	ctx := ctxT(t)
	opA := g.operator(t, "op-a", g.grant(t, "A", "op-a"), "A")
	if _, err := opA.Get(ctx, g.data["A"]); err != nil {
		t.Fatalf("vault A's operator reading its own chunk: %v", err)
	}
	opB := g.operator(t, "op-b", g.grant(t, "B", "op-b"), "B")
	_, err := opB.Get(ctx, g.data["A"])
	g.wantDenied(t, "vault B's grant for snapshot "+g.snap.Str()+" reading vault A's chunk", err, "does not cover")
	for i, r := range opB.GetMany(ctx, []chunk.ID{g.data["B"], g.data["A"]}) {
		if r.Data != nil {
			t.Fatalf("batch %d: vault B's grant read a batch holding vault A's chunk", i)
		}
		g.wantDenied(t, fmt.Sprintf("batch %d with vault A's chunk", i), r.Err, "does not cover")
	}
	if data, err := opB.Get(ctx, g.data["B"]); err != nil || string(data) != "data of vault B" {
		t.Fatalf("vault B's operator reading its own chunk after vault A's lists were cached: %q, %v", data, err)
	}

	// A grant naming vault A, issued to op-b, presented with op-b's certificate scoped
	// to vault B only.
	opB = g.operator(t, "op-b", g.grant(t, "A", "op-b"), "B")
	_, err = opB.Get(ctx, g.data["A"])
	g.wantDenied(t, "grant for vault A under a certificate scoped to vault B", err, `vault "A"`, "scope")
}

// TestGrantCrossPrincipal: a grant issued to one restore operator does not serve another,
// though its certificate is valid and has the same vault scope.
func TestGrantCrossPrincipal(t *testing.T) {
	g := newGrantNode(t)
	ctx := ctxT(t)
	grantX := g.grant(t, "A", "op-x")
	if _, err := g.operator(t, "op-x", grantX, "A").Get(ctx, g.data["A"]); err != nil {
		t.Fatalf("the grant's own holder: %v", err)
	}
	opY := g.operator(t, "op-y", grantX, "A")
	_, err := opY.Get(ctx, g.data["A"])
	g.wantDenied(t, "op-x's grant presented by op-y", err, `"op-x"`, `"op-y"`)
	r := opY.GetMany(ctx, []chunk.ID{g.data["A"]})
	g.wantDenied(t, "op-x's grant presented by op-y in a batch", r[0].Err, `"op-x"`, `"op-y"`)
	// An unscoped certificate does not make another's grant its own either.
	_, err = g.operator(t, "op-z", grantX).Get(ctx, g.data["A"])
	g.wantDenied(t, "op-x's grant presented by unscoped op-z", err, `"op-x"`)
}

// getManyBody encodes a chunk.GetMany request of ids with grant, as the client would.
func getManyBody(t *testing.T, ids []chunk.ID, grant []byte) []byte {
	t.Helper()
	body, err := wire.Marshal(struct {
		IDs   []chunk.ID `cbor:"1,keyasint"`
		Grant []byte     `cbor:"2,keyasint,omitempty"`
	}{ids, grant})
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// TestGetManyGrantOncePerRequest: a restore operator's GetMany of 100,000 IDs is refused
// Invalid, naming the limit, before its grant is verified once; a GetMany at the limit
// verifies its grant once, not once per ID.
func TestGetManyGrantOncePerRequest(t *testing.T) {
	g := newGrantNode(t)
	ctx := ctxT(t)
	tok := g.grant(t, "A", "op-a")
	ep := g.n.endpointFor(pki.IssueRequest{CommonName: "op-a", Role: transport.RoleRestore, Vaults: []string{"A"}}, false, nil)

	huge := make([]chunk.ID, 100_000) // 25x the limit, 3.4 MB of request
	for i := range huge {
		huge[i] = g.data["A"]
	}
	before := chunkrpc.GrantVerifications(g.srv)
	_, err := ep.Call(ctx, g.addr, chunkrpc.MethodChunkGetMany, getManyBody(t, huge, tok))
	if transport.CodeOf(err) != transport.Invalid || !strings.Contains(err.Error(), fmt.Sprint(chunkrpc.MaxGetManyItems)) {
		t.Fatalf("GetMany of %d ids: %v, want Invalid naming the limit %d", len(huge), err, chunkrpc.MaxGetManyItems)
	}
	if n := chunkrpc.GrantVerifications(g.srv) - before; n != 0 {
		t.Fatalf("GetMany of %d ids refused after %d grant verifications, want 0", len(huge), n)
	}

	atCap := huge[:chunkrpc.MaxGetManyItems]
	before = chunkrpc.GrantVerifications(g.srv)
	cl := chunkrpc.NewClient(ep, []string{g.addr}).WithGrant(tok)
	for i, r := range cl.GetMany(ctx, atCap) {
		if r.Err != nil || string(r.Data) != "data of vault A" {
			t.Fatalf("GetMany at the limit, id %d: %q, %v", i, r.Data, r.Err)
		}
	}
	if n := chunkrpc.GrantVerifications(g.srv) - before; n != 1 {
		t.Fatalf("GetMany of %d ids verified the grant %d times, want once", len(atCap), n)
	}
}

// TestGetManyOverLimitAllocatesLittle: the server refuses a million-ID GetMany without
// decoding its IDs (the body itself is the transport's).
func TestGetManyOverLimitAllocatesLittle(t *testing.T) {
	g := newGrantNode(t)
	huge := make([]chunk.ID, 100_000) // 25x the limit, 3.4 MB of request
	for i := range huge {
		huge[i] = g.data["A"]
	}
	body := getManyBody(t, huge, g.grant(t, "A", "op-a"))
	peer := transport.Peer{Principal: "op-a", Role: transport.RoleRestore, Vaults: []string{"A"}}
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	_, err := g.srv.ServeRPC(context.Background(), peer, chunkrpc.MethodChunkGetMany, body)
	runtime.ReadMemStats(&m1)
	if transport.CodeOf(err) != transport.Invalid {
		t.Fatalf("GetMany of a million ids: %v, want Invalid", err)
	}
	// NB: TotalAlloc counts every goroutine's allocations; the test's QUIC endpoint is
	// idle, and decoding the IDs would allocate 32 MB.
	got := m1.TotalAlloc - m0.TotalAlloc
	t.Logf("refusing a %d-byte GetMany of a million ids allocated %d bytes", len(body), got)
	if got > 4<<20 {
		t.Fatalf("refusing a %d-byte GetMany allocated %d bytes, want under 4 MiB", len(body), got)
	}
}

// TestGrantIsAValue: a grant travels with the reader WithGrant made, not with the Client:
// the Client it came from still reads without one and is refused.
func TestGrantIsAValue(t *testing.T) {
	g := newGrantNode(t)
	ctx := ctxT(t)
	ep := g.n.endpointFor(pki.IssueRequest{CommonName: "op-a", Role: transport.RoleRestore, Vaults: []string{"A"}}, false, nil)
	cl := chunkrpc.NewClient(ep, []string{g.addr})
	granted := cl.WithGrant(g.grant(t, "A", "op-a"))
	if data, err := granted.Get(ctx, g.data["A"]); err != nil || string(data) != "data of vault A" {
		t.Fatalf("reading through the grant: %q, %v", data, err)
	}
	if r := granted.GetMany(ctx, []chunk.ID{g.data["A"]}); r[0].Err != nil || string(r[0].Data) != "data of vault A" {
		t.Fatalf("batch read through the grant: %q, %v", r[0].Data, r[0].Err)
	}
	if _, err := cl.Get(ctx, g.data["A"]); transport.CodeOf(err) != transport.PermissionDenied || !strings.Contains(err.Error(), "needs a restore grant") {
		t.Fatalf("the Client a grant was taken from: %v, want PermissionDenied without a grant", err)
	}
}
