package node_test

import (
	"bytes"
	"context"
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
	"github.com/cofferhq/coffer/chunkstore/reflist"
	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/metarpc"
	"github.com/cofferhq/coffer/node"
	"github.com/cofferhq/coffer/node/nodetest"
	"github.com/cofferhq/coffer/node/replicate"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/pki"
	dto "github.com/prometheus/client_model/go"
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
	mc := metarpc.NewClient(ep, []string{c.WaitLeader(t).Addr()})
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

// manyFiles writes n small files of distinct content under dir.
func manyFiles(t *testing.T, dir string, n, seed int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		data := []byte(fmt.Sprintf("file %d of seed %d\n", i, seed))
		data = append(data, bytes.Repeat([]byte{byte(i), byte(seed), byte(i >> 3)}, 1000+i)...)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%04d", i)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// chunkSizes returns every chunk snapshot s needs (reference lists, the chunks they
// list, the tree) with its stored (sealed) size, read through store.
func chunkSizes(t *testing.T, ctx context.Context, store chunkstore.Store, s meta.Snapshot) map[chunk.ID]int {
	t.Helper()
	out := map[chunk.ID]int{}
	add := func(id chunk.ID) []byte {
		data, err := store.Get(ctx, id)
		if err != nil {
			t.Fatalf("chunk %s of snapshot %s: %v", id.Str(), s.ID.Str(), err)
		}
		out[id] = len(data)
		return data
	}
	for _, ref := range s.Refs {
		ids, err := reflist.Open(ref, add(ref))
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			add(id)
		}
	}
	add(s.Tree)
	return out
}

// newBytes sums the sizes of the chunks of want that none of have holds.
func newBytes(want map[chunk.ID]int, have ...map[chunk.ID]int) (bytes int64, chunks int64) {
next:
	for id, n := range want {
		for _, h := range have {
			if _, ok := h[id]; ok {
				continue next
			}
		}
		bytes += int64(n)
		chunks++
	}
	return bytes, chunks
}

// TestReplicationAcrossClusters is the acceptance scenario of cross-cluster replication
// with two clusters in one process: a replication certificate issued on the source
// (admin cert issue --role replication), a job on the target; the first run copies the
// vault, a second after another backup copies exactly the new chunks (bytes asserted);
// a compliance lock set on the source reaches the target and refuses deletion there; a
// snapshot forgotten on the source stays on the target; a run cancelled after its first
// stored batch is resumed by the next without sending anything twice (the two runs'
// bytes sum to exactly the new chunks); a run asked for through the RPC (admin replicate
// run) is started by the target's leader and recorded as a job; the metrics report the
// totals; and with the source stopped every snapshot restores bit-identically on the
// target with the vault's passphrase and with the target's own wrap (a passphrase
// changed on the target; the run after it brought the source's wrap back beside it).
func TestReplicationAcrossClusters(t *testing.T) {
	src := nodetest.New(t, nodetest.Opts{Meta: 1, Chunk: 6, PGCount: 16})
	dst := nodetest.New(t, nodetest.Opts{Meta: 1, Chunk: 6, PGCount: 16})
	ctx := ctxT(t, 5*time.Minute)
	srcAdmin, dstAdmin := src.Connect(t), dst.Connect(t)
	if _, err := client.InitVault(ctx, srcAdmin, "web", passphrase); err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	dir1 := filepath.Join(base, "one")
	smallTree(t, dir1, 1)
	s1 := backupInto(t, srcAdmin, "web", dir1)

	// The job's credential: a CSR made for it, signed on the source.
	csr, key, err := pki.NewKeyAndCSR("site-b")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := srcAdmin.Meta.(meta.CertService).IssueCert(ctx, meta.IssueCertRequest{Role: meta.CertRoleReplication, Principal: "site-b", CSR: csr, Vaults: []string{"web"}})
	if err != nil {
		t.Fatalf("issue the replication certificate: %v", err)
	}
	rs := dstAdmin.Meta.(meta.ReplicationService)
	added, err := rs.AddReplication(ctx, meta.Replication{Name: "site-a", Source: []string{src.WaitLeader(t).Addr()}, SourceCA: cert.CA, Cert: cert.Cert, Key: key,
		Principal: "site-b", Vault: "web"})
	if err != nil {
		t.Fatalf("add replication: %v", err)
	}
	if added.Key != nil || added.Cert != nil {
		t.Fatalf("add replication answered with the credentials")
	}
	leader := dst.WaitLeader(t)
	run := func() replicate.Stats {
		t.Helper()
		st, err := leader.RunReplication(ctx, "site-a", meta.TriggerManual, node.ReplicationRunOptions{})
		if err != nil {
			t.Fatalf("replication run: %v", err)
		}
		return st
	}
	srcChunks := srcAdmin.Chunks
	sizes1 := chunkSizes(t, ctx, srcChunks, s1)

	first := run()
	want, wantChunks := newBytes(sizes1)
	if first.Snapshots != 1 || first.Bytes != want || first.Chunks != wantChunks {
		t.Fatalf("first run: %+v, want 1 snapshot, %d bytes in %d chunks", first, want, wantChunks)
	}
	v, err := dstAdmin.Meta.GetVault(ctx, "web")
	if err != nil || v.Replica == nil || v.Replica.Job != "site-a" || v.Keys == nil {
		t.Fatalf("replica vault: %+v %v", v, err)
	}
	// The replica takes snapshots from its job only: a commit whose chunks are all
	// there is refused.
	forged := s1
	forged.ID, forged.Lock, forged.Time = chunk.ID{7, 7}, nil, time.Time{}
	if _, err := dstAdmin.Meta.CommitSnapshot(ctx, forged); !errors.Is(err, meta.ErrInvalid) || !strings.Contains(err.Error(), "replica") {
		t.Fatalf("commit into the replica: %v, want refused", err)
	}

	// Back up more: only the new chunks move.
	dir2 := filepath.Join(base, "two")
	smallTree(t, dir2, 1)
	manyFiles(t, filepath.Join(dir2, "new"), 3, 2)
	s2 := backupInto(t, srcAdmin, "web", dir2)
	sizes2 := chunkSizes(t, ctx, srcChunks, s2)
	second := run()
	want, wantChunks = newBytes(sizes2, sizes1)
	if second.Snapshots != 1 || second.Bytes != want || second.Chunks != wantChunks {
		t.Fatalf("second run: %+v, want 1 snapshot, %d bytes in %d chunks (the chunks of s2 not in s1)", second, want, wantChunks)
	}
	t.Logf("first run %d bytes in %d chunks; second (incremental) %d bytes in %d chunks", first.Bytes, first.Chunks, second.Bytes, second.Chunks)
	if again := run(); again != (replicate.Stats{}) {
		t.Fatalf("a run with nothing new: %+v, want nothing done", again)
	}

	// A compliance lock on the source is one on the target.
	until := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	if _, err := srcAdmin.Meta.(meta.RetentionService).SetLock(ctx, "web", s1.ID, meta.Lock{Mode: meta.Compliance, Until: until}, meta.Bypass{}); err != nil {
		t.Fatalf("lock on the source: %v", err)
	}
	if st := run(); st.Strengthened != 1 || st.Bytes != 0 {
		t.Fatalf("run after the lock: %+v, want one snapshot strengthened and nothing copied", st)
	}
	got, err := dstAdmin.Meta.GetSnapshot(ctx, "web", s1.ID)
	if err != nil || got.Lock == nil || got.Lock.Mode != meta.Compliance || got.Lock.Until.Before(until) {
		t.Fatalf("target's copy of s1: lock %+v (%v), want compliance until at least %s", got.Lock, err, until)
	}
	dstRet := dstAdmin.Meta.(meta.RetentionService)
	if _, err := dstRet.DeleteSnapshots(ctx, "web", []meta.SnapshotID{s1.ID}, meta.Bypass{Governance: true, Reason: "test"}); !errors.Is(err, meta.ErrLocked) {
		t.Fatalf("delete of the locked replica on the target: %v, want locked", err)
	}

	// Forget on the source: the target keeps its copy.
	if _, err := srcAdmin.Meta.(meta.RetentionService).DeleteSnapshots(ctx, "web", []meta.SnapshotID{s2.ID}, meta.Bypass{}); err != nil {
		t.Fatalf("forget s2 on the source: %v", err)
	}
	run()
	if _, err := dstAdmin.Meta.GetSnapshot(ctx, "web", s2.ID); err != nil {
		t.Fatalf("s2 on the target after its forget on the source and a run: %v", err)
	}

	// An interrupted run resumes without sending anything twice.
	dir3 := filepath.Join(base, "three")
	manyFiles(t, dir3, 150, 3)
	s3 := backupInto(t, srcAdmin, "web", dir3)
	sizes3 := chunkSizes(t, ctx, srcChunks, s3)
	want, wantChunks = newBytes(sizes3, sizes1, sizes2)
	ictx, cancel := context.WithCancel(ctx)
	// Small batches (4 chunks), so that the cut falls among them.
	cut, err := leader.RunReplication(ictx, "site-a", meta.TriggerManual, node.ReplicationRunOptions{Batch: 4, Progress: func(st replicate.Stats) {
		if st.Chunks > 0 {
			cancel()
		}
	}})
	cancel()
	if !errors.Is(err, context.Canceled) || cut.Chunks == 0 || cut.Bytes >= want || cut.Snapshots != 0 {
		t.Fatalf("interrupted run: %+v %v, want cancelled after some of the %d chunks", cut, err, wantChunks)
	}
	rest := run()
	if rest.Snapshots != 1 || cut.Bytes+rest.Bytes != want || cut.Chunks+rest.Chunks != wantChunks {
		t.Fatalf("interrupted run %+v then %+v: want %d bytes in %d chunks in all (nothing sent twice)", cut, rest, want, wantChunks)
	}
	t.Logf("interrupted run sent %d bytes, its successor %d (total %d)", cut.Bytes, rest.Bytes, want)

	// The second site's own wrap: a passphrase change on the target replaces the
	// replica's passphrase wrap; the next run brings the source's back beside it.
	own := []byte("the second site's own passphrase")
	ta, err := client.Open(ctx, dstAdmin, "web", passphrase)
	if err != nil {
		t.Fatalf("open the replica: %v", err)
	}
	if _, err := ta.ChangePassphrase(ctx, own, "second site"); err != nil {
		t.Fatalf("passphrase change on the replica: %v", err)
	}
	ta.Close()

	// A run asked for through the RPC is started by the target's leader and recorded.
	before, err := rs.ListReplications(ctx)
	if err != nil || len(before) != 1 {
		t.Fatalf("list replications: %v %v", before, err)
	}
	if _, err := rs.RunReplication(ctx, "site-a"); err != nil {
		t.Fatalf("replicate run: %v", err)
	}
	var job meta.Replication
	waitFor(t, time.Minute, "a requested replication run", func() (bool, string) {
		l, err := rs.ListReplications(ctx)
		if err != nil || len(l) != 1 {
			return false, fmt.Sprint(l, err)
		}
		job = l[0]
		return job.State.LastJob != before[0].State.LastJob && job.State.LastStatus != "" && !job.State.LastRun.Before(job.RunRequested), fmt.Sprintf("%+v", job.State)
	})
	if job.State.LastStatus != meta.JobCompleted || job.State.Snapshots != 3 || job.Key != nil {
		t.Fatalf("job after the requested run: %+v", job)
	}
	jobs, err := dstAdmin.Meta.(meta.JobService).ListJobs(ctx, meta.JobFilter{Policy: "site-a"})
	if err != nil {
		t.Fatal(err)
	}
	var runs, failed int
	for _, j := range jobs {
		if j.Kind == meta.JobReplication {
			runs++
			if j.Status == meta.JobFailed {
				failed++
			}
		}
	}
	if runs != 8 || failed != 1 {
		t.Fatalf("replication jobs: %d (%d failed), want 8 runs of which the interrupted one failed", runs, failed)
	}
	total := first.Bytes + second.Bytes + cut.Bytes + rest.Bytes
	if job.State.Bytes != total {
		t.Fatalf("job totals: %d bytes, want %d", job.State.Bytes, total)
	}
	mfs, err := leader.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	fams := map[string]*dto.MetricFamily{}
	for _, f := range mfs {
		fams[f.GetName()] = f
	}
	if got := value(fams, "coffer_replication_bytes_total", "job", "site-a"); got != float64(total) {
		t.Errorf("coffer_replication_bytes_total = %v, want %d", got, total)
	}
	if got := value(fams, "coffer_replication_snapshots_total", "job", "site-a"); got != 3 {
		t.Errorf("coffer_replication_snapshots_total = %v, want 3", got)
	}
	if got := value(fams, "coffer_replication_last_success_timestamp_seconds", "job", "site-a"); got < float64(job.State.LastSuccess.Unix()) || got == 0 {
		t.Errorf("coffer_replication_last_success_timestamp_seconds = %v, want %d", got, job.State.LastSuccess.Unix())
	}

	// With the source stopped, every snapshot restores on the target with the passphrase.
	if err := src.Dev.Close(); err != nil {
		t.Logf("stop the source: %v", err)
	}
	snaps, err := dstAdmin.Meta.ListSnapshots(ctx, "web")
	if err != nil || len(snaps) != 3 {
		t.Fatalf("replica snapshots: %d %v, want 3", len(snaps), err)
	}
	dirs := map[meta.SnapshotID]string{s1.ID: dir1, s2.ID: dir2, s3.ID: dir3}
	for _, pass := range [][]byte{passphrase, own} {
		a, err := client.Open(ctx, dstAdmin, "web", pass)
		if err != nil {
			t.Fatalf("open the replica with passphrase %q: %v", pass, err)
		}
		for _, s := range snaps {
			restoreAndCompare(t, a, s, dirs[s.ID])
		}
		a.Close()
	}
}
