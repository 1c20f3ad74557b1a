package metarpc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/placement"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/wire"
)

// fakeSvc is an in-memory meta.Service. When leader is false every call except
// RaftStatus fails with a NotLeaderError naming leaderAddr.
type fakeSvc struct {
	leader     atomic.Bool
	leaderAddr string
	fail       error // returned by every call when set
	calls      atomic.Int64

	mu     sync.Mutex
	totps  []string // the TOTP code each CreateVault call carried (meta.TOTPFrom)
	vaults map[meta.VaultID]meta.Vault
	snaps  []meta.Snapshot
	m      placement.Map
}

func newFake(leader bool, leaderAddr string) *fakeSvc {
	f := &fakeSvc{leaderAddr: leaderAddr, vaults: map[meta.VaultID]meta.Vault{}}
	f.leader.Store(leader)
	return f
}

func (f *fakeSvc) check() error {
	f.calls.Add(1)
	if f.fail != nil {
		return f.fail
	}
	if !f.leader.Load() {
		return &meta.NotLeaderError{LeaderAddr: f.leaderAddr}
	}
	return nil
}

var clusterTime = time.Unix(1700000000, 5).UTC()

func (f *fakeSvc) CreateVault(ctx context.Context, v meta.Vault) (meta.Vault, error) {
	if err := f.check(); err != nil {
		return meta.Vault{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.totps = append(f.totps, meta.TOTPFrom(ctx))
	if _, ok := f.vaults[v.ID]; ok {
		return meta.Vault{}, fmt.Errorf("fake: %w", meta.ErrExists)
	}
	v.Created = clusterTime
	f.vaults[v.ID] = v
	return v, nil
}

func (f *fakeSvc) GetVault(ctx context.Context, id meta.VaultID) (meta.Vault, error) {
	if err := f.check(); err != nil {
		return meta.Vault{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.vaults[id]
	if !ok {
		return v, fmt.Errorf("fake: vault %s: %w", id, meta.ErrNotFound)
	}
	return v, nil
}

func (f *fakeSvc) ListVaults(ctx context.Context) ([]meta.Vault, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []meta.Vault
	for _, v := range f.vaults {
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b meta.Vault) int { return len(a.ID) - len(b.ID) })
	return out, nil
}

func (f *fakeSvc) CommitSnapshot(ctx context.Context, s meta.Snapshot) (meta.Snapshot, error) {
	if err := f.check(); err != nil {
		return meta.Snapshot{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s.Time = clusterTime
	f.snaps = append(f.snaps, s)
	return s, nil
}

func (f *fakeSvc) ListSnapshots(ctx context.Context, vault meta.VaultID) ([]meta.Snapshot, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.snaps), nil
}

func (f *fakeSvc) GetSnapshot(ctx context.Context, vault meta.VaultID, id meta.SnapshotID) (meta.Snapshot, error) {
	if err := f.check(); err != nil {
		return meta.Snapshot{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.snaps {
		if s.ID == id && s.Vault == vault {
			return s, nil
		}
	}
	return meta.Snapshot{}, fmt.Errorf("fake: %w", meta.ErrNotFound)
}

func (f *fakeSvc) ClusterMap(ctx context.Context) (placement.Map, error) {
	if err := f.check(); err != nil {
		return placement.Map{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.m, nil
}

func (f *fakeSvc) SetClusterMap(ctx context.Context, m placement.Map) error {
	if err := f.check(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if m.Epoch != f.m.Epoch+1 {
		return fmt.Errorf("fake: %w: epoch", meta.ErrInvalid)
	}
	f.m = m
	return nil
}

// RaftStatus answers as server "L" (the leader, applied 17, every server reachable) or
// "F" (a follower, applied 15, knowing only itself and the leader).
func (f *fakeSvc) RaftStatus(ctx context.Context) (meta.RaftStatus, error) {
	f.calls.Add(1)
	if f.leader.Load() {
		return meta.RaftStatus{Self: "L", Leader: "L", LeaderAddr: f.leaderAddr, Term: 4, AppliedIndex: 17,
			Servers: []meta.Server{{ID: "L", Leader: true, Reachable: true}, {ID: "F", Reachable: true}, {ID: "G", Reachable: true}}}, nil
	}
	return meta.RaftStatus{Self: "F", Leader: "L", LeaderAddr: f.leaderAddr, Term: 4, AppliedIndex: 15,
		Servers: []meta.Server{{ID: "L", Leader: true, Reachable: true}, {ID: "F", Reachable: true}, {ID: "G"}}}, nil
}

// loop is a transport.Caller that calls in-process handlers by address.
type loop struct {
	role     transport.Role
	handlers map[string]transport.Handler
	down     map[string]bool
	calls    atomic.Int64
	onCall   func(n int64) // called before each call with its number
}

func (l *loop) Call(ctx context.Context, addr, method string, body []byte) ([]byte, error) {
	return l.callAs(ctx, transport.Peer{Principal: "p", Role: l.role}, addr, method, body)
}

func (l *loop) callAs(ctx context.Context, peer transport.Peer, addr, method string, body []byte) ([]byte, error) {
	n := l.calls.Add(1)
	if l.onCall != nil {
		l.onCall(n)
	}
	h, ok := l.handlers[addr]
	if !ok || l.down[addr] {
		return nil, fmt.Errorf("loop: %s: %w", addr, transport.ErrUnreachable)
	}
	return h.ServeRPC(ctx, peer, method, slices.Clone(body))
}

// metaServerID is the one meta server testAuthority knows: the identity handlers forward
// with.
const metaServerID = "meta-1"

// metaCaller calls through a loop as the meta server metaServerID, as a follower
// forwarding to its leader does.
type metaCaller struct{ l *loop }

func (m metaCaller) Call(ctx context.Context, addr, method string, body []byte) ([]byte, error) {
	return m.l.callAs(ctx, transport.Peer{Principal: metaServerID, Role: transport.RoleMeta}, addr, method, body)
}

// testAuthority grants meta authority to metaServerID's meta certificate only.
type testAuthority struct{}

func (testAuthority) CheckMetaPeer(p transport.Peer) error {
	if p.Role != transport.RoleMeta || p.Principal != metaServerID {
		return fmt.Errorf("%w: %s %q is not a meta server in the configuration", meta.ErrDenied, p.Role, p.Principal)
	}
	return nil
}

// handler serves f; through a loop it forwards as the meta server metaServerID.
func handler(f *fakeSvc, c transport.Caller) *Server {
	if lp, ok := c.(*loop); ok {
		c = metaCaller{lp}
	}
	return NewServer(f, c, testAuthority{})
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestAllMethodsRoundTrip(t *testing.T) {
	f := newFake(true, "L")
	lp := &loop{role: transport.RoleAdmin, handlers: map[string]transport.Handler{}}
	lp.handlers["L"] = handler(f, lp)
	cl := NewClient(lp, []string{"L"})
	ctx := ctxT(t, 5*time.Second)

	v, err := cl.CreateVault(ctx, meta.Vault{ID: "v", KeyWraps: [][]byte{{1, 2}}, Profile: placement.DefaultProfile})
	if err != nil || !v.Created.Equal(clusterTime) || len(v.KeyWraps) != 1 {
		t.Fatalf("CreateVault: %+v %v", v, err)
	}
	if g, err := cl.GetVault(ctx, "v"); err != nil || g.ID != "v" {
		t.Fatalf("GetVault: %+v %v", g, err)
	}
	if vs, err := cl.ListVaults(ctx); err != nil || len(vs) != 1 {
		t.Fatalf("ListVaults: %v %v", vs, err)
	}
	parent := chunk.ID{8}
	s := meta.Snapshot{ID: chunk.ID{1}, Vault: "v", Tree: chunk.ID{2}, Refs: []chunk.ID{{3}}, Parent: &parent, Paths: []string{"/x"}}
	cs, err := cl.CommitSnapshot(ctx, s)
	if err != nil || !cs.Time.Equal(clusterTime) || *cs.Parent != parent {
		t.Fatalf("CommitSnapshot: %+v %v", cs, err)
	}
	if ss, err := cl.ListSnapshots(ctx, "v"); err != nil || len(ss) != 1 || ss[0].Tree != s.Tree {
		t.Fatalf("ListSnapshots: %v %v", ss, err)
	}
	if g, err := cl.GetSnapshot(ctx, "v", s.ID); err != nil || g.Refs[0] != s.Refs[0] {
		t.Fatalf("GetSnapshot: %+v %v", g, err)
	}
	m := placement.Map{Epoch: 1, PGCount: 8, Profile: placement.DefaultProfile}
	if err := cl.SetClusterMap(ctx, m); err != nil {
		t.Fatal(err)
	}
	if got, err := cl.ClusterMap(ctx); err != nil || got.Epoch != 1 || got.PGCount != 8 {
		t.Fatalf("ClusterMap: %+v %v", got, err)
	}
	if rs, err := cl.RaftStatus(ctx); err != nil || rs.Term != 4 {
		t.Fatalf("RaftStatus: %+v %v", rs, err)
	}
	if n, err := PeerApplied(lp)(ctx, "L", "L"); err != nil || n != 17 {
		t.Fatalf("PeerApplied: %d %v", n, err)
	}
}

func TestDefiniteErrorsMapAndAreNotRetried(t *testing.T) {
	for _, sentinel := range []error{meta.ErrNotFound, meta.ErrExists, meta.ErrInvalid, meta.ErrMissingChunks,
		meta.ErrLocked, meta.ErrDenied} {
		f := newFake(true, "L")
		f.fail = fmt.Errorf("fake: wrapped: %w", sentinel)
		lp := &loop{role: transport.RoleNode, handlers: map[string]transport.Handler{}}
		lp.handlers["L"] = handler(f, lp)
		cl := NewClient(lp, []string{"L", "L2"})
		_, err := cl.CommitSnapshot(ctxT(t, 5*time.Second), meta.Snapshot{})
		if !errors.Is(err, sentinel) {
			t.Errorf("%v: client got %v", sentinel, err)
		}
		if n := lp.calls.Load(); n != 1 {
			t.Errorf("%v: %d calls, want exactly 1 (no retry of a definite error)", sentinel, n)
		}
	}
	// MissingChunks has its own code, not Invalid.
	if c := Errors.Code(fmt.Errorf("x: %w", meta.ErrMissingChunks)); c != transport.MissingChunks {
		t.Fatalf("ErrMissingChunks → %v", c)
	}
}

func TestFollowerForwardsToLeader(t *testing.T) {
	leader := newFake(true, "L")
	follower := newFake(false, "L")
	lp := &loop{role: transport.RoleAgent, handlers: map[string]transport.Handler{}}
	lp.handlers["L"] = handler(leader, lp)
	lp.handlers["F"] = handler(follower, lp)
	cl := NewClient(lp, []string{"F"}) // the client only knows the follower
	ctx := ctxT(t, 5*time.Second)
	v, err := cl.CreateVault(ctx, meta.Vault{ID: "v", KeyWraps: [][]byte{{1}}})
	if err != nil || v.ID != "v" {
		t.Fatalf("forwarded CreateVault: %+v %v", v, err)
	}
	if _, err := leader.GetVault(ctx, "v"); err != nil {
		t.Fatalf("the leader did not get the write: %v", err)
	}
	if _, err := cl.GetVault(ctx, "nope"); !errors.Is(err, meta.ErrNotFound) {
		t.Fatalf("forwarded read error: %v, want ErrNotFound through the forward", err)
	}
}

// TestTOTPTravelsWithRequest: the TOTP code in a client's context (meta.WithTOTP)
// reaches the leader's service with the request, through a follower's forward too; a
// request without one carries none.
func TestTOTPTravelsWithRequest(t *testing.T) {
	leader := newFake(true, "L")
	follower := newFake(false, "L")
	lp := &loop{role: transport.RoleAdmin, handlers: map[string]transport.Handler{}}
	lp.handlers["L"] = handler(leader, lp)
	lp.handlers["F"] = handler(follower, lp)
	ctx := ctxT(t, 5*time.Second)
	for i, addr := range []string{"L", "F"} {
		cl := NewClient(lp, []string{addr})
		if _, err := cl.CreateVault(meta.WithTOTP(ctx, "123456"), meta.Vault{ID: meta.VaultID(fmt.Sprint("v", i)), KeyWraps: [][]byte{{1}}}); err != nil {
			t.Fatalf("CreateVault via %s: %v", addr, err)
		}
		if _, err := cl.CreateVault(ctx, meta.Vault{ID: meta.VaultID(fmt.Sprint("w", i)), KeyWraps: [][]byte{{1}}}); err != nil {
			t.Fatalf("CreateVault via %s: %v", addr, err)
		}
	}
	leader.mu.Lock()
	defer leader.mu.Unlock()
	if want := []string{"123456", "", "123456", ""}; !slices.Equal(leader.totps, want) {
		t.Fatalf("codes the leader's service saw: %q, want %q", leader.totps, want)
	}
}

// TestFollowerAsksLeaderForRaftStatus: a follower cannot know whether the other
// followers are reachable, so a client's RaftStatus gets the leader's view through it;
// PeerApplied gets the follower's own; with the leader silent the follower answers itself.
func TestFollowerAsksLeaderForRaftStatus(t *testing.T) {
	leader := newFake(true, "L")
	follower := newFake(false, "L")
	lp := &loop{role: transport.RoleAdmin, handlers: map[string]transport.Handler{}, down: map[string]bool{}}
	lp.handlers["L"] = handler(leader, lp)
	lp.handlers["F"] = handler(follower, lp)
	cl := NewClient(lp, []string{"F"})
	ctx := ctxT(t, 5*time.Second)
	rs, err := cl.RaftStatus(ctx)
	if err != nil || rs.Self != "L" || !rs.Servers[2].Reachable {
		t.Fatalf("RaftStatus through a follower: %+v %v, want the leader's view", rs, err)
	}
	if n, err := PeerApplied(lp)(ctx, "F", "F"); err != nil || n != 15 {
		t.Fatalf("PeerApplied of the follower: %d %v, want its own 15", n, err)
	}
	lp.down["L"] = true
	rs, err = cl.RaftStatus(ctx)
	if err != nil || rs.Self != "F" || rs.Servers[2].Reachable {
		t.Fatalf("RaftStatus with the leader silent: %+v %v, want the follower's own view", rs, err)
	}
}

func TestForwardedOnlyOnce(t *testing.T) {
	// Two servers each believing the other leads: the request must bounce once and stop.
	a := newFake(false, "B")
	b := newFake(false, "A")
	lp := &loop{role: transport.RoleNode, handlers: map[string]transport.Handler{}}
	lp.handlers["A"] = handler(a, lp)
	lp.handlers["B"] = handler(b, lp)
	body := []byte{0xa0} // empty map: a listVaultsReq
	_, err := lp.handlers["A"].ServeRPC(context.Background(), transport.Peer{Role: transport.RoleNode}, MethodListVaults, body)
	if transport.CodeOf(err) != transport.NotLeader {
		t.Fatalf("err = %v, want NotLeader", err)
	}
	if a.calls.Load() != 1 || b.calls.Load() != 1 {
		t.Fatalf("calls a=%d b=%d, want 1 each (forwarded exactly once)", a.calls.Load(), b.calls.Load())
	}
}

func TestAgentMayNotSetClusterMap(t *testing.T) {
	f := newFake(true, "L")
	lp := &loop{role: transport.RoleAgent, handlers: map[string]transport.Handler{}}
	lp.handlers["L"] = handler(f, lp)
	cl := NewClient(lp, []string{"L"})
	err := cl.SetClusterMap(ctxT(t, 5*time.Second), placement.Map{Epoch: 1, PGCount: 8, Profile: placement.DefaultProfile})
	if !errors.Is(err, meta.ErrDenied) || transport.CodeOf(err) != transport.PermissionDenied {
		t.Fatalf("agent SetClusterMap: %v, want PermissionDenied", err)
	}
	if f.calls.Load() != 0 {
		t.Fatal("the service was called for a refused peer")
	}
	// Agents may still read it.
	if _, err := cl.ClusterMap(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
}

func TestClientFindsLeaderAndSticks(t *testing.T) {
	leader := newFake(true, "")
	lost := newFake(false, "") // a follower that knows no leader: NotLeader, no forward
	lp := &loop{role: transport.RoleNode, handlers: map[string]transport.Handler{}, down: map[string]bool{"D": true}}
	lp.handlers["N"] = handler(lost, lp)
	lp.handlers["L"] = handler(leader, lp)
	cl := NewClient(lp, []string{"D", "N", "L"})
	ctx := ctxT(t, 5*time.Second)
	if _, err := cl.ListVaults(ctx); err != nil {
		t.Fatal(err)
	}
	if n := lp.calls.Load(); n != 3 {
		t.Fatalf("%d calls to find the leader, want 3", n)
	}
	if _, err := cl.ListVaults(ctx); err != nil {
		t.Fatal(err)
	}
	if n := lp.calls.Load(); n != 4 {
		t.Fatalf("second call took %d calls, want 1 (straight to the last good address)", n-3)
	}
}

func TestClientWaitsForElection(t *testing.T) {
	f := newFake(false, "")
	lp := &loop{role: transport.RoleNode, handlers: map[string]transport.Handler{}}
	lp.handlers["A"] = handler(f, lp)
	lp.onCall = func(n int64) {
		if n == 4 { // a leader is elected after a few rounds
			f.leader.Store(true)
		}
	}
	cl := NewClient(lp, []string{"A"})
	if _, err := cl.ListVaults(ctxT(t, 5*time.Second)); err != nil {
		t.Fatalf("client gave up before the election: %v", err)
	}
	// With no leader ever, the client stops when ctx ends.
	g := newFake(false, "")
	lp2 := &loop{role: transport.RoleNode, handlers: map[string]transport.Handler{}}
	lp2.handlers["A"] = handler(g, lp2)
	_, err := NewClient(lp2, []string{"A"}).ListVaults(ctxT(t, 300*time.Millisecond))
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, meta.ErrNotLeader) {
		t.Fatalf("err = %v, want deadline exceeded carrying the last NotLeader", err)
	}
}

func TestBadRequestAndUnknownMethod(t *testing.T) {
	h := handler(newFake(true, "L"), nil)
	if _, err := h.ServeRPC(context.Background(), transport.Peer{Role: transport.RoleNode}, MethodGetVault, []byte{0xff}); transport.CodeOf(err) != transport.Invalid {
		t.Fatalf("garbage body: %v", err)
	}
	if _, err := h.ServeRPC(context.Background(), transport.Peer{Role: transport.RoleNode}, "meta.Nope", nil); transport.CodeOf(err) != transport.UnknownMethod {
		t.Fatalf("unknown method: %v", err)
	}
}

// TestDelegationNeedsMetaAuthority: naming a principal (as) or marking a request forwarded
// is refused PermissionDenied from every peer without meta authority, before the service
// sees the request; so is setting the cluster map, except for admins.
func TestDelegationNeedsMetaAuthority(t *testing.T) {
	ctx := ctxT(t, 5*time.Second)
	admin := &meta.Principal{Name: "admin", Role: meta.RoleAdmin}
	vault := meta.Vault{ID: "v", KeyWraps: [][]byte{{1}}}
	nextMap := placement.Map{Epoch: 1, PGCount: 8, Profile: placement.DefaultProfile}
	for _, peer := range []transport.Peer{
		{Principal: "chunk-0", Role: transport.RoleNode},
		{Principal: "meta-9", Role: transport.RoleMeta}, // not in the configuration
		{Principal: metaServerID, Role: transport.RoleNode},
		{Principal: "web01", Role: transport.RoleAgent},
		{Principal: "ops", Role: transport.RoleAdmin},
	} {
		f := newFake(true, "L")
		h := handler(f, nil)
		refused := 0
		h.OnRefused(func(p transport.Peer, method, reason string) {
			if p.Principal != peer.Principal || !strings.Contains(reason, "meta server in the current Raft configuration") {
				t.Errorf("refusal reported for %q (%s): %s", p.Principal, method, reason)
			}
			refused++
		})
		for _, c := range []struct {
			method string
			req    any
		}{
			{MethodCreateVault, createVaultReq{Vault: vault, As: admin}},
			{MethodCreateVault, createVaultReq{Vault: vault, Fwd: true}},
			{MethodListVaults, listVaultsReq{As: admin}},
			{MethodCreateEnrollToken, createEnrollTokenReq{Vault: "v", As: admin}},
			{MethodEnroll, enrollReq{Fwd: true}},
		} {
			body, err := wire.Marshal(c.req)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := h.ServeRPC(ctx, peer, c.method, body); transport.CodeOf(err) != transport.PermissionDenied {
				t.Errorf("%s %q: %s %+v: %v, want PermissionDenied", peer.Role, peer.Principal, c.method, c.req, err)
			}
		}
		body, err := wire.Marshal(setClusterMapReq{Map: nextMap})
		if err != nil {
			t.Fatal(err)
		}
		_, err = h.ServeRPC(ctx, peer, MethodSetClusterMap, body)
		if peer.Role == transport.RoleAdmin {
			if err != nil {
				t.Errorf("admin SetClusterMap: %v", err)
			}
		} else if transport.CodeOf(err) != transport.PermissionDenied {
			t.Errorf("%s %q: SetClusterMap: %v, want PermissionDenied", peer.Role, peer.Principal, err)
		}
		if want := 6; peer.Role == transport.RoleAdmin && refused != want-1 || peer.Role != transport.RoleAdmin && refused != want {
			t.Errorf("%s %q: %d refusals reported", peer.Role, peer.Principal, refused)
		}
		if n := f.calls.Load(); n > 1 || (n == 1 && peer.Role != transport.RoleAdmin) {
			t.Errorf("%s %q: the service was called %d times for refused requests", peer.Role, peer.Principal, n)
		}
	}

	// The configured meta server's delegation is honoured; without an Authority nobody's is.
	meta1 := transport.Peer{Principal: metaServerID, Role: transport.RoleMeta}
	body, err := wire.Marshal(createVaultReq{Vault: vault, As: admin, Fwd: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := handler(newFake(true, "L"), nil).ServeRPC(ctx, meta1, MethodCreateVault, body); err != nil {
		t.Fatalf("forwarded CreateVault from the meta server: %v", err)
	}
	if _, err := NewServer(newFake(true, "L"), nil, nil).ServeRPC(ctx, meta1, MethodCreateVault, body); transport.CodeOf(err) != transport.PermissionDenied {
		t.Fatalf("forwarded CreateVault with no Authority: %v, want PermissionDenied", err)
	}
}
