package node_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/chunkrpc"
	"github.com/cofferhq/coffer/chunkstore/grant"
	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/client/clientconfig"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/node"
	"github.com/cofferhq/coffer/node/nodetest"
	"github.com/cofferhq/coffer/placement"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
	cquic "github.com/cofferhq/coffer/transport/quic"
	"github.com/cofferhq/coffer/transport/wire"
)

// findAudit returns the first audit entry with the action, principal, outcome and (when
// not empty) vault, or nil.
func findAudit(es []meta.AuditEntry, action, principal, outcome string, vault meta.VaultID) *meta.AuditEntry {
	for i, e := range es {
		if e.Action == action && e.Principal == principal && e.Outcome == outcome && (vault == "" || e.Vault == vault) {
			return &es[i]
		}
	}
	return nil
}

func wantAudit(t *testing.T, es []meta.AuditEntry, action, principal, outcome string, vault meta.VaultID) {
	t.Helper()
	if findAudit(es, action, principal, outcome, vault) == nil {
		t.Errorf("no audit entry %q by %s, %s, vault %q", action, principal, outcome, vault)
	}
}

// identityFor issues a certificate from the dev cluster's CA.
func identityFor(t *testing.T, c *nodetest.Cluster, req pki.IssueRequest) *pki.Identity {
	t.Helper()
	caCert, err := os.ReadFile(filepath.Join(c.Dir, "pki", "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	caKey, err := os.ReadFile(filepath.Join(c.Dir, "pki", "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(caCert, caKey)
	if err != nil {
		t.Fatal(err)
	}
	req.Validity = time.Hour
	cert, key, err := ca.Issue(req, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.NewIdentity(caCert, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// followerFirst orders the meta addresses so that a follower answers first: every call
// is forwarded to the leader, which must still see the original caller.
func followerFirst(t *testing.T, c *nodetest.Cluster, addrs []string) []string {
	t.Helper()
	leader := c.WaitLeader(t).Addr()
	out := []string{}
	for _, a := range addrs {
		if a != leader {
			out = append(out, a)
		}
	}
	return append(out, leader)
}

// TestAppendOnlyAgentAndRetention runs the credentials against a real cluster over QUIC:
// a backup agent scoped to its vault backs up fine but cannot delete, forget, shorten a
// lock or touch a hold; a restore operator reads only; an admin cannot delete a
// compliance-locked snapshot; every refusal is in the audit log with its principal.
func TestAppendOnlyAgentAndRetention(t *testing.T) {
	c := nodetest.New(t, nodetest.Opts{})
	f, err := clientconfig.Load(node.DevClientConfig(c.Dir))
	if err != nil {
		t.Fatal(err)
	}
	metas := followerFirst(t, c, f.Meta)
	adminCfg := nodetest.ConnectWith(t, identityFor(t, c, pki.IssueRequest{CommonName: "dev-admin", Role: transport.RoleAdmin}), metas, c.ChunkAddrs())
	agentID := identityFor(t, c, pki.IssueRequest{CommonName: "web01", Role: transport.RoleAgent, Vaults: []string{"web01"}})
	agentCfg := nodetest.ConnectWith(t, agentID, metas, c.ChunkAddrs())
	restID := identityFor(t, c, pki.IssueRequest{CommonName: "oncall", Role: transport.RoleRestore})
	restCfg := nodetest.ConnectWith(t, restID, metas, c.ChunkAddrs())
	ctx := ctxT(t, 3*time.Minute)

	// The agent creates its vault and backs up twice.
	if _, err := client.InitVault(ctx, agentCfg, "web01", passphrase); err != nil {
		t.Fatalf("agent init: %v", err)
	}
	if _, err := client.InitVault(ctx, agentCfg, "other", passphrase); !errors.Is(err, meta.ErrDenied) {
		t.Fatalf("agent creating a vault outside its scope: %v, want ErrDenied", err)
	}
	if _, err := client.InitVault(ctx, adminCfg, "other", passphrase); err != nil {
		t.Fatalf("admin init: %v", err)
	}
	src := filepath.Join(t.TempDir(), "src")
	nodetest.MakeTree(t, src, nodetest.TreeOpts{Seed: 6})
	a, err := client.Open(ctx, agentCfg, "web01", passphrase)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	s1 := backup(t, a, src)
	s2 := backup(t, a, src)
	if !s2.Time.After(s1.Time) {
		t.Fatalf("cluster commit times not increasing: %v then %v", s1.Time, s2.Time)
	}
	ms := agentCfg.Meta.(meta.RetentionService)
	vs, err := agentCfg.Meta.ListVaults(ctx)
	if err != nil || len(vs) != 1 || vs[0].ID != "web01" {
		t.Fatalf("agent sees vaults %v (%v), want only web01", vs, err)
	}
	if _, err := agentCfg.Meta.ListSnapshots(ctx, "other"); !errors.Is(err, meta.ErrDenied) {
		t.Fatalf("agent listing another vault: %v, want ErrDenied", err)
	}

	// The agent locks its newest snapshot (allowed: it only adds protection).
	until := time.Now().Add(time.Hour).UTC()
	if _, err := ms.SetLock(ctx, "web01", s2.ID, meta.Lock{Mode: meta.Compliance, Until: until}, meta.Bypass{}); err != nil {
		t.Fatalf("agent lock: %v", err)
	}
	// Every destructive path is refused for the agent.
	refusals := map[string]error{}
	_, refusals["agent delete"] = ms.DeleteSnapshots(ctx, "web01", []meta.SnapshotID{s1.ID}, meta.Bypass{})
	_, refusals["agent forget"] = ms.Forget(ctx, "web01", meta.Policy{Last: 1}, false)
	_, refusals["agent shorten"] = ms.SetLock(ctx, "web01", s2.ID, meta.Lock{Mode: meta.Compliance, Until: until.Add(-time.Minute)}, meta.Bypass{})
	_, refusals["agent hold"] = ms.SetHold(ctx, "web01", s1.ID, true, "")
	rs := restCfg.Meta.(meta.RetentionService)
	_, refusals["restore-operator delete"] = rs.DeleteSnapshots(ctx, "web01", []meta.SnapshotID{s1.ID}, meta.Bypass{})
	_, refusals["restore-operator lock"] = rs.SetLock(ctx, "web01", s1.ID, meta.Lock{Mode: meta.Governance, Until: until}, meta.Bypass{})
	adm := adminCfg.Meta.(meta.RetentionService)
	_, refusals["admin delete compliance"] = adm.DeleteSnapshots(ctx, "web01", []meta.SnapshotID{s2.ID}, meta.Bypass{Governance: true, Reason: "try"})
	_, refusals["admin compliance to governance"] = adm.SetLock(ctx, "web01", s2.ID, meta.Lock{Mode: meta.Governance, Until: until.Add(time.Hour)}, meta.Bypass{Governance: true, Reason: "try"})
	for name, err := range refusals {
		if !errors.Is(err, meta.ErrDenied) && !errors.Is(err, meta.ErrLocked) {
			t.Errorf("%s: %v, want a refusal", name, err)
		}
	}
	if _, err := agentCfg.Meta.(meta.RetentionService).AuditLog(ctx, 0, 0); !errors.Is(err, meta.ErrDenied) {
		t.Errorf("agent reading the audit log: %v, want ErrDenied", err)
	}
	// Read-only paths work for the restore operator; a dry run works for the agent.
	if ss, err := restCfg.Meta.ListSnapshots(ctx, "web01"); err != nil || len(ss) != 2 {
		t.Fatalf("restore operator lists %d snapshots, %v", len(ss), err)
	}
	dry, err := ms.Forget(ctx, "web01", meta.Policy{Last: 1}, true)
	if err != nil || len(dry.Decisions) != 2 || len(dry.Removed) != 0 {
		t.Fatalf("agent dry run: %+v %v", dry, err)
	}

	// The admin's forget keeps the newest (and locked) one and removes the other.
	res, err := adm.Forget(ctx, "web01", meta.Policy{Last: 1}, false)
	if err != nil || len(res.Removed) != 1 || res.Removed[0] != s1.ID {
		t.Fatalf("admin forget: %+v %v", res, err)
	}
	left, err := adminCfg.Meta.ListSnapshots(ctx, "web01")
	if err != nil || len(left) != 1 || left[0].ID != s2.ID || left[0].Lock == nil || left[0].Lock.Mode != meta.Compliance {
		t.Fatalf("after forget: %+v %v", left, err)
	}

	// The audit log holds every refusal with its principal, and the admin's forget.
	es, err := adm.AuditLog(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, e := range es {
		if e.Outcome == meta.AuditRefused {
			count[e.Principal]++
		}
		if e.Principal == "" || e.Time.IsZero() {
			t.Errorf("audit entry without principal or time: %+v", e)
		}
	}
	// At least: a refused call whose reply is lost to a leader change is retried by the
	// client and refused (and audited) again by the new leader.
	if count["web01"] < 4 || count["oncall"] < 2 || count["dev-admin"] < 2 {
		t.Errorf("refusals audited per principal %v, want at least web01 4, oncall 2, dev-admin 2", count)
	}
	if last := es[len(es)-1]; last.Principal != "dev-admin" || last.Outcome != meta.AuditOK || !strings.Contains(last.Action, "forget") {
		t.Errorf("last audit entry %+v, want the admin's forget", last)
	}
	// Vault creation is audited, allowed and refused.
	wantAudit(t, es, "vault create", "web01", meta.AuditOK, "web01")
	wantAudit(t, es, "vault create", "web01", meta.AuditRefused, "other")
	wantAudit(t, es, "vault create", "dev-admin", meta.AuditOK, "other")
	// So is a deep scrub start on a chunk node, allowed (admin) and refused (agent).
	chunkAddr := c.ChunkAddrs()[0]
	for _, id := range []*pki.Identity{identityFor(t, c, pki.IssueRequest{CommonName: "dev-admin", Role: transport.RoleAdmin}), agentID} {
		ep, err := cquic.New(cquic.Config{Identity: id, Logger: nodetest.Discard()})
		if err != nil {
			t.Fatal(err)
		}
		defer ep.Close()
		err = wire.Call(ctx, ep, chunkAddr, "node.Scrub", struct{}{}, &struct {
			PGs []placement.PGHealth `cbor:"pgs"`
		}{})
		if agent := id == agentID; agent != (transport.CodeOf(err) == transport.PermissionDenied) {
			t.Fatalf("scrub start by %s: %v", id.Principal(), err)
		}
	}
	waitFor(t, 20*time.Second, "scrub starts in the audit log", func() (bool, string) {
		es, err := adm.AuditLog(ctx, 0, 0)
		return err == nil && findAudit(es, "scrub start", "dev-admin", meta.AuditOK, "") != nil &&
			findAudit(es, "scrub start", "web01", meta.AuditRefused, "") != nil, fmt.Sprintf("%d entries, %v", len(es), err)
	})

	// Restore grants: the restore operator reads chunks only through a grant, and only
	// the granted snapshot's chunks.
	ao, err := client.Open(ctx, adminCfg, "other", passphrase)
	if err != nil {
		t.Fatal(err)
	}
	defer ao.Close()
	otherSrc := filepath.Join(t.TempDir(), "other")
	nodetest.MakeTree(t, otherSrc, nodetest.TreeOpts{Seed: 7})
	otherSnap := backup(t, ao, otherSrc)
	rc := restCfg.Chunks.(*chunkrpc.Client)
	if _, err := rc.Get(ctx, s2.Tree); transport.CodeOf(err) != transport.PermissionDenied {
		t.Fatalf("restore operator reading without a grant: %v, want PermissionDenied", err)
	}
	gs := restCfg.Meta.(meta.GrantService)
	tok, g, err := gs.IssueGrant(ctx, "web01", s2.ID, 0)
	if err != nil || g.Vault != "web01" || g.Principal != "oncall" || time.Until(g.Expires) > grant.MaxTTL+time.Minute {
		t.Fatalf("grant %+v %v", g, err)
	}
	// As coffer does: the agent is opened without a grant, and the restore runs on an
	// agent reading through one (rc itself still reads without a grant).
	ra, err := client.Open(ctx, restCfg, "web01", passphrase)
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	grc := rc.WithGrant(tok)
	rga := ra.WithChunks(grc)
	defer rga.Close()
	restoreAndCompare(t, rga, s2, src)
	if _, err := grc.Get(ctx, otherSnap.Tree); transport.CodeOf(err) != transport.PermissionDenied || !strings.Contains(fmt.Sprint(err), "does not cover") {
		t.Fatalf("grant reading another vault's chunk: %v, want PermissionDenied", err)
	}
	// A batch read is refused whole when the grant does not cover one of its chunks.
	for i, r := range grc.GetMany(ctx, []chunk.ID{s2.Tree, otherSnap.Tree}) {
		if transport.CodeOf(r.Err) != transport.PermissionDenied || r.Data != nil {
			t.Fatalf("batch read %d with a chunk the grant does not cover: %v, want PermissionDenied", i, r.Err)
		}
	}
	if r := grc.GetMany(ctx, []chunk.ID{s2.Tree, s2.Tree}); r[0].Err != nil || r[1].Err != nil || len(r[0].Data) == 0 {
		t.Fatalf("batch read of granted chunks: %v, %v", r[0].Err, r[1].Err)
	}
	if err := grc.Put(ctx, []chunkstore.Chunk{{ID: otherSnap.Tree, Data: []byte("x")}}); err == nil {
		t.Fatal("restore operator wrote a chunk")
	}
	scoped := nodetest.ConnectWith(t, identityFor(t, c, pki.IssueRequest{CommonName: "scoped", Role: transport.RoleRestore, Vaults: []string{"other"}}), metas, c.ChunkAddrs())
	if _, _, err := scoped.Meta.(meta.GrantService).IssueGrant(ctx, "web01", s2.ID, 0); !errors.Is(err, meta.ErrDenied) {
		t.Fatalf("grant for a vault outside the operator's scope: %v, want ErrDenied", err)
	}
	// Nor can it borrow oncall's grant: chunk nodes honour a grant only for its principal.
	borrower := scoped.Chunks.(*chunkrpc.Client).WithGrant(tok)
	if _, err := borrower.Get(ctx, s2.Tree); transport.CodeOf(err) != transport.PermissionDenied || !strings.Contains(fmt.Sprint(err), `issued to "oncall"`) {
		t.Fatalf("another operator presenting oncall's grant: %v, want PermissionDenied", err)
	}
	short, _, err := gs.IssueGrant(ctx, "web01", s2.ID, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	grc = rc.WithGrant(short)
	// NB: nodes judge expiry by cluster time, which can lag the wall clock on a loaded
	// machine (TestEnrollRevokeAndGrantClock checks it against the cluster clock).
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := grc.Get(ctx, s2.Tree)
		if err != nil && strings.Contains(err.Error(), "expired") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("expired grant still serves reads (last: %v)", err)
		}
		time.Sleep(20 * time.Millisecond) // polling an expiry by the cluster clock
	}

	// A direct shard delete from the agent's or the admin's certificate is refused by the
	// chunk node and lands in the audit log.
	for _, id := range []*pki.Identity{agentID, identityFor(t, c, pki.IssueRequest{CommonName: "ops2", Role: transport.RoleAdmin})} {
		ep, err := cquic.New(cquic.Config{Identity: id, Logger: nodetest.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		defer ep.Close()
		err = chunkrpc.NewShardClient(ep, c.ChunkAddrs()[0]).DeleteShards(ctx, []chunkstore.ShardKey{{ID: s2.Tree, Index: 0}})
		if transport.CodeOf(err) != transport.PermissionDenied {
			t.Fatalf("shard delete by %s: %v, want PermissionDenied", id.Principal(), err)
		}
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		es, err := adm.AuditLog(ctx, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, e := range es {
			if e.Action == chunkrpc.MethodShardDelete && e.Outcome == meta.AuditRefused {
				seen[e.Principal] = true
			}
		}
		if seen["web01"] && seen["ops2"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("refused shard deletes not audited: %v", seen)
		}
		time.Sleep(20 * time.Millisecond) // the chunk node records the refusal asynchronously
	}
}
