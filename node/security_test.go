package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/placement"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki/pkitest"
)

// TestRevocationFileRoundTrip: the persisted list loads back as saved (not yet current);
// a missing file is an empty list; a damaged one is an error naming the file.
func TestRevocationFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if l, err := loadRevocations(dir); err != nil || l.Version != 0 || len(l.Revocations) != 0 || l.current {
		t.Fatalf("no file: %+v %v, want an empty list that is not current", l, err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	want := &revocationList{Version: 12, current: true, Revocations: []meta.Revocation{
		{Seq: 7, Serial: "ab12", At: at, By: "ops"},
		{Seq: 12, Principal: "web01", At: at.Add(time.Hour), By: "ops", Reason: "stolen"},
	}}
	if err := saveRevocations(dir, want); err != nil {
		t.Fatal(err)
	}
	got, err := loadRevocations(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.current || got.Version != 12 || len(got.Revocations) != 2 || got.Revocations[1].Principal != "web01" || !got.Revocations[1].At.Equal(at.Add(time.Hour)) {
		t.Fatalf("loaded %+v, want %+v (not current)", got, want)
	}
	if _, err := os.Stat(filepath.Join(dir, revocationFile+".tmp")); !os.IsNotExist(err) {
		t.Fatalf("temporary file left behind: %v", err)
	}
	for name, body := range map[string]string{
		"not json":      "{",
		"seq above":     `{"version":3,"revocations":[{"seq":4,"serial":"ab","at":"2026-01-01T00:00:00Z","by":"x"}]}`,
		"neither names": `{"version":3,"revocations":[{"seq":2,"at":"2026-01-01T00:00:00Z","by":"x"}]}`,
	} {
		if err := os.WriteFile(filepath.Join(dir, revocationFile), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := loadRevocations(dir); err == nil || !strings.Contains(err.Error(), revocationFile) {
			t.Errorf("%s: %v, want an error naming %s", name, err, revocationFile)
		}
	}
}

// TestGossipRefusesRevokedMembers: memberlist's alive delegate refuses a member revoked
// by principal (its certificate issued before the revocation, or not advertised) or by
// serial, and accepts a certificate issued for the name after the revocation; the gossip
// view reports such a member revoked and not alive, and a never-seen revoked name is not
// tried as a peer.
func TestGossipRefusesRevokedMembers(t *testing.T) {
	at := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	list := []meta.Revocation{
		{Seq: 4, Principal: "chunk-7", At: at, By: "ops"},
		{Seq: 5, Principal: "chunk-3", At: at, By: "ops"},
		{Seq: 6, Serial: "beef", At: at, By: "ops"},
	}
	revoked := func(name, serial string, issued time.Time) (meta.Revocation, bool) {
		return meta.Revoked(list, serial, name, issued)
	}
	nodeOf := func(name, serial string, issued time.Time) *memberlist.Node {
		gm := gossipMeta{Addr: "127.0.0.1:1", Serial: serial}
		if !issued.IsZero() {
			gm.Issued = issued.Unix()
		}
		b, err := json.Marshal(gm)
		if err != nil {
			t.Fatal(err)
		}
		return &memberlist.Node{Name: name, Meta: b, State: memberlist.StateAlive}
	}
	a := gossipAlive{revoked: revoked, log: slog.New(slog.DiscardHandler)}
	for _, tc := range []struct {
		what string
		n    *memberlist.Node
		want bool // refused
	}{
		{"revoked principal, older certificate", nodeOf("chunk-3", "01", at.Add(-time.Hour)), true},
		{"revoked principal, nothing advertised", &memberlist.Node{Name: "chunk-3"}, true},
		{"revoked principal, certificate issued after", nodeOf("chunk-3", "02", at.Add(time.Hour)), false},
		{"revoked serial", nodeOf("chunk-4", "beef", at.Add(-time.Hour)), true},
		{"not revoked", nodeOf("chunk-5", "03", at.Add(-time.Hour)), false},
	} {
		err := a.NotifyAlive(tc.n)
		if (err != nil) != tc.want {
			t.Errorf("%s: NotifyAlive %v, want refused=%v", tc.what, err, tc.want)
		}
		if err != nil && !strings.Contains(err.Error(), "revoked") {
			t.Errorf("%s: %v does not say why", tc.what, err)
		}
	}

	g := &gossip{events: &gossipEvents{now: time.Now}, revoked: revoked}
	g.events.NotifyJoin(nodeOf("chunk-3", "01", at.Add(-time.Hour)))
	g.events.NotifyJoin(nodeOf("chunk-5", "03", at.Add(-time.Hour)))
	if g.alive("chunk-3") || g.liveness("chunk-3") != placement.LiveDead {
		t.Error("a revoked member counts as alive")
	}
	if !g.alive("chunk-5") || g.liveness("chunk-5") != placement.LiveAlive {
		t.Error("a member that is not revoked counts as gone")
	}
	if g.alive("chunk-7") || !g.alive("chunk-9") {
		t.Error("never-seen members: a revoked name must not be tried, another must")
	}
	for _, m := range g.members() {
		if want := map[string]string{"chunk-3": "revoked", "chunk-5": "alive"}[m.Name]; m.State != want {
			t.Errorf("member %s is %q, want %q", m.Name, m.State, want)
		}
	}
}

// countingHandler counts log records whose message is msg.
type countingHandler struct {
	msg string
	n   *atomic.Int64
}

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.n.Add(1)
	}
	return nil
}
func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countingHandler) WithGroup(string) slog.Handler      { return h }

// TestGossipJoinOfRevokedNodeRefused runs memberlist on loopback: a node whose name is
// revoked by principal joins an honest seed and is refused (the seed's member list never
// holds it), while an honest node joining the same seed is taken in.
func TestGossipJoinOfRevokedNodeRefused(t *testing.T) {
	var held []io.Closer
	port := func() string {
		_, p, err := freePorts("127.0.0.1", &held, nil)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("127.0.0.1:%d", p)
	}
	addrs := map[string]string{"seed": port(), "bad": port(), "good": port()}
	for _, c := range held {
		c.Close()
	}
	ca := pkitest.NewCA(t)
	at := time.Now().Add(time.Hour) // after every certificate's NotBefore
	list := []meta.Revocation{{Seq: 1, Principal: "bad", At: at, By: "ops"}}
	refused := &atomic.Int64{}
	start := func(name string, join []string, log *slog.Logger) *gossip {
		cfg := Config{ID: name, Gossip: addrs[name], Join: join, Roles: []Role{RoleChunk}}
		leaf := pkitest.Identity(t, ca, name, transport.RoleNode).Leaf()
		revoked := func(n, serial string, issued time.Time) (meta.Revocation, bool) {
			if n == name {
				return meta.Revocation{}, false
			}
			return meta.Revoked(list, serial, n, issued)
		}
		g, err := startGossip(cfg, "127.0.0.1:1", []byte("secret"), leaf, revoked, time.Now, log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = g.leave(false) })
		return g
	}
	seed := start("seed", nil, slog.New(countingHandler{msg: "gossip: refused a revoked member", n: refused}))
	start("bad", []string{addrs["seed"]}, slog.New(slog.DiscardHandler))
	start("good", []string{addrs["seed"]}, slog.New(slog.DiscardHandler))
	has := func(name string) bool {
		for _, m := range seed.ml.Members() {
			if m.Name == name {
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(20 * time.Second)
	for !has("good") || (refused.Load() == 0 && !has("bad")) {
		if time.Now().After(deadline) {
			t.Fatalf("after 20 s: honest node a member %v, refusals of the revoked one %d", has("good"), refused.Load())
		}
		time.Sleep(20 * time.Millisecond) // polling memberlist's own goroutines
	}
	if has("bad") {
		t.Fatal("the revoked node is in the seed's member list")
	}
	if !seed.alive("good") || seed.alive("bad") {
		t.Fatalf("seed's view: good alive %v, bad alive %v", seed.alive("good"), seed.alive("bad"))
	}
}

// TestJoinInfoListsEveryMetaServer: a joining node is handed the answering server's
// gossip address and seeds plus every meta server gossip sees alive, once each; chunk
// nodes and dead meta servers are not seeds.
func TestJoinInfoListsEveryMetaServer(t *testing.T) {
	cfg := Config{Gossip: "10.0.0.11:7001", Join: []string{"10.0.0.11:7001", "10.0.0.12:7001"}}
	members := []meta.Member{
		{Name: "meta-2", Addr: "10.0.0.12:7001", State: "alive", Roles: []string{string(RoleMeta)}},
		{Name: "meta-3", Addr: "10.0.0.13:7001", State: "alive", Roles: []string{string(RoleMeta)}},
		{Name: "meta-4", Addr: "10.0.0.14:7001", State: "dead", Roles: []string{string(RoleMeta)}},
		{Name: "chunk-1", Addr: "10.0.0.21:7001", State: "alive", Roles: []string{string(RoleChunk)}},
	}
	got := joinInfo(cfg, []byte("s"), members).GossipSeeds
	want := []string{"10.0.0.11:7001", "10.0.0.12:7001", "10.0.0.13:7001"}
	if !slices.Equal(got, want) {
		t.Fatalf("seeds %q, want %q", got, want)
	}
}
