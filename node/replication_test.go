package node_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore"
	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/chunkstore/chunkrpc"
	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/metarpc"
	"github.com/cofferhq/coffer/node/nodetest"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
)

// smallTree writes a few small files (distinct per seed) under dir.
func smallTree(t *testing.T, dir string, seed int) {
	t.Helper()
	for i := range 6 {
		p := filepath.Join(dir, "d", string(rune('a'+i))+".txt")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		data := make([]byte, 20000+i*997)
		for j := range data {
			data[j] = byte(j*31 + i*7 + seed*131 + j/251)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// backupInto backs up a small tree of seed into vault (created first when create is set)
// and returns the snapshot.
func backupInto(t *testing.T, cfg client.Config, vault meta.VaultID, src string) meta.Snapshot {
	t.Helper()
	a, err := client.Open(ctxT(t, time.Minute), cfg, vault, passphrase)
	if err != nil {
		t.Fatalf("open %s: %v", vault, err)
	}
	defer a.Close()
	res, err := a.Backup(ctxT(t, 2*time.Minute), client.BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatalf("backup into %s: %v", vault, err)
	}
	return res.Snapshot
}

// TestReplicationRoleAttacks runs a replication certificate scoped to vault v1 against
// a cluster holding v1 and v2: it reads v1's vault record (with key wraps), snapshots
// and, through a grant, sealed chunks; it is refused writes, deletions, locks, holds,
// certificate issuance, chunk writes and existence queries, and every read of v2
// (vault, snapshots, grants, chunks through a v1 grant). A replication certificate
// naming no vault cannot be issued.
func TestReplicationRoleAttacks(t *testing.T) {
	c := nodetest.New(t, nodetest.Opts{Meta: 1, Chunk: 6, PGCount: 16})
	ctx := ctxT(t, 3*time.Minute)
	admin := c.Connect(t)
	src := t.TempDir()
	smallTree(t, src, 1)
	var snaps [2]meta.Snapshot
	for i, v := range []meta.VaultID{"v1", "v2"} {
		if _, err := client.InitVault(ctx, admin, v, passphrase); err != nil {
			t.Fatal(err)
		}
		smallTree(t, src, 10+i)
		snaps[i] = backupInto(t, admin, v, src)
	}
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
	if _, _, err := ca.Issue(pki.IssueRequest{CommonName: "repl-none", Role: transport.RoleReplication}, time.Now()); !errors.Is(err, pki.ErrInvalid) {
		t.Fatalf("replication certificate naming no vault: %v, want refused (invalid)", err)
	}
	id := identityFor(t, c, pki.IssueRequest{CommonName: "site-b", Role: transport.RoleReplication, Vaults: []string{"v1"}})
	ep := endpointFor(t, id)
	mc := metarpc.NewClient(ep, []string{c.Leader().Addr()})
	cc := chunkrpc.NewClient(ep, c.ChunkAddrs())

	// What it may do.
	v, err := mc.GetVault(ctx, "v1")
	if err != nil || (v.Keys == nil && len(v.KeyWraps) == 0) {
		t.Fatalf("get vault v1: %v (key record %v): want it with its key wraps", err, v.Keys != nil)
	}
	if ss, err := mc.ListSnapshots(ctx, "v1"); err != nil || len(ss) != 1 {
		t.Fatalf("list snapshots of v1: %v %v", ss, err)
	}
	tok, _, err := mc.IssueGrant(ctx, "v1", snaps[0].ID, time.Minute)
	if err != nil {
		t.Fatalf("grant on v1: %v", err)
	}
	granted := cc.WithGrant(tok)
	for _, r := range granted.GetMany(ctx, append([]chunk.ID{snaps[0].Tree}, snaps[0].Refs...)) {
		if r.Err != nil {
			t.Fatalf("read a v1 chunk through its grant: %v", r.Err)
		}
	}

	denied := func(what string, err error) {
		t.Helper()
		if transport.CodeOf(err) != transport.PermissionDenied && !errors.Is(err, meta.ErrDenied) {
			t.Errorf("%s: %v, want permission denied", what, err)
		}
	}
	// Reads of another vault.
	_, err = mc.GetVault(ctx, "v2")
	denied("get vault v2", err)
	_, err = mc.ListSnapshots(ctx, "v2")
	denied("list snapshots of v2", err)
	_, err = mc.GetSnapshot(ctx, "v2", snaps[1].ID)
	denied("get snapshot of v2", err)
	_, _, err = mc.IssueGrant(ctx, "v2", snaps[1].ID, time.Minute)
	denied("grant on v2", err)
	if vs, err := mc.ListVaults(ctx); err != nil || len(vs) != 1 || vs[0].ID != "v1" {
		t.Errorf("list vaults: %v %v, want v1 only", vs, err)
	}
	for _, r := range granted.GetMany(ctx, []chunk.ID{snaps[1].Tree}) {
		denied("read a v2 chunk through a v1 grant", r.Err)
	}
	_, err = cc.Get(ctx, snaps[0].Tree)
	denied("read a chunk without a grant", err)
	// Writes, deletions, protection changes, credentials.
	err = cc.Put(ctx, []chunkstore.Chunk{{ID: chunk.ID{1}, Data: []byte("x")}})
	denied("chunk put", err)
	_, err = cc.Has(ctx, []chunk.ID{snaps[0].Tree})
	denied("chunk has", err)
	forged := snaps[0]
	forged.ID = chunk.ID{9}
	_, err = mc.CommitSnapshot(ctx, forged)
	denied("commit a snapshot", err)
	_, err = mc.DeleteSnapshots(ctx, "v1", []meta.SnapshotID{snaps[0].ID}, meta.Bypass{})
	denied("delete a snapshot", err)
	_, err = mc.SetLock(ctx, "v1", snaps[0].ID, meta.Lock{Mode: meta.Compliance, Until: time.Now().Add(time.Hour)}, meta.Bypass{})
	denied("lock a snapshot", err)
	_, err = mc.SetHold(ctx, "v1", snaps[0].ID, true, "x")
	denied("hold a snapshot", err)
	_, err = mc.DeleteVault(ctx, "v1", time.Hour, "x")
	denied("delete the vault", err)
	_, err = mc.CreateVault(ctx, meta.Vault{ID: "v3"})
	denied("create a vault", err)
	_, err = mc.IssueCert(ctx, meta.IssueCertRequest{Role: meta.CertRoleAdmin, Principal: "evil"})
	denied("issue a certificate", err)
	_, _, err = mc.CreateEnrollToken(ctx, "v1", "evil", time.Hour, nil)
	denied("create an enrollment token", err)
	_, err = mc.AuditLog(ctx, 0, 10)
	denied("read the audit log", err)
}
