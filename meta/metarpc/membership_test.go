package metarpc

import (
	"context"
	"testing"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/wire"
)

// removedCaller forwards as a meta server the leader no longer counts in the group.
type removedCaller struct{ l *loop }

func (m removedCaller) Call(ctx context.Context, addr, method string, body []byte) ([]byte, error) {
	return m.l.callAs(ctx, transport.Peer{Principal: "meta-9", Role: transport.RoleMeta}, addr, method, body)
}

// TestRemovedFollowerSendsCallersOn: a server removed from the group (meta remove) that
// still thinks it follows the leader forwards a request; the leader refuses its
// delegation, and the removed server answers Unavailable, so the client asks the next
// meta server, which succeeds.
func TestRemovedFollowerSendsCallersOn(t *testing.T) {
	leader := newFake(true, "L")
	removed := newFake(false, "L")
	lp := &loop{role: transport.RoleAdmin, handlers: map[string]transport.Handler{}}
	lp.handlers["L"] = handler(leader, lp)
	lp.handlers["R"] = NewServer(removed, removedCaller{lp}, testAuthority{})
	cl := NewClient(lp, []string{"R", "L"})
	ctx := ctxT(t, 5*time.Second)
	if v, err := cl.CreateVault(ctx, meta.Vault{ID: "v", KeyWraps: [][]byte{{1}}}); err != nil || v.ID != "v" {
		t.Fatalf("CreateVault through a removed follower first: %+v %v", v, err)
	}
	body, err := wire.Marshal(getVaultReq{ID: "v"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = lp.handlers["R"].ServeRPC(ctx, transport.Peer{Principal: "ops", Role: transport.RoleAdmin}, MethodGetVault, body)
	if transport.CodeOf(err) != transport.Unavailable {
		t.Fatalf("removed follower's answer: %v, want Unavailable", err)
	}
}
