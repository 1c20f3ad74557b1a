package node_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/client"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/node/nodetest"
)

// TestAutoRetentionOnCluster is issue 15's retention acceptance on a whole cluster, with
// real backups: vault "plain" with stored policy keep-last 3 and eight backups loses
// five within one retention interval (cluster time) with no command from anyone; in
// vault "locked" a governance-locked snapshot the policy would remove is kept and
// reported; in vault "pol", which stores no rules, a backup policy's own retention
// (keep-last 2) removes the older two of its four snapshots and leaves the vault's
// untagged snapshot alone. Every removal is audited as the system.
func TestAutoRetentionOnCluster(t *testing.T) {
	const interval = 3 * time.Second
	c := nodetest.New(t, nodetest.Opts{RetentionInterval: interval})
	ctx := ctxT(t, 5*time.Minute)
	cfg := c.Connect(t)
	cfg.CacheDir = filepath.Join(t.TempDir(), "cache")
	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	rs := cfg.Meta.(meta.RetentionService)
	vs := cfg.Meta.(meta.VaultService)
	ra := cfg.Meta.(meta.RetentionAdmin)
	js := cfg.Meta.(meta.JobService)
	snaps := map[meta.VaultID][]meta.Snapshot{}
	n := 0
	for _, v := range []meta.VaultID{"plain", "locked", "pol"} {
		if _, err := client.InitVault(ctx, cfg, v, passphrase); err != nil {
			t.Fatal(err)
		}
		a, err := client.Open(ctx, cfg, v, passphrase)
		if err != nil {
			t.Fatal(err)
		}
		runs, tags := 8, []string(nil)
		if v == "pol" {
			runs, tags = 5, []string{"policy-hourly"}
		}
		for i := range runs {
			n++
			if err := os.WriteFile(filepath.Join(src, "note.txt"), []byte(fmt.Sprintf("backup %d\n", n)), 0o644); err != nil {
				t.Fatal(err)
			}
			opts := client.BackupOptions{Paths: []string{src}, Tags: tags}
			if v == "pol" && i == 0 {
				opts.Tags = nil // the vault's own, governed by no rule
			}
			res, err := a.Backup(ctx, opts)
			if err != nil {
				t.Fatal(err)
			}
			snaps[v] = append(snaps[v], res.Snapshot)
		}
		a.Close()
	}
	held := snaps["locked"][1] // the second oldest: keep-last 3 would remove it
	if _, err := rs.SetLock(ctx, "locked", held.ID, meta.Lock{Mode: meta.Governance, Until: time.Now().Add(time.Hour).UTC()}, meta.Bypass{}); err != nil {
		t.Fatal(err)
	}
	before, err := ra.RetentionStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	keep2 := meta.Policy{Last: 2}
	if _, err := js.PutPolicy(ctx, meta.BackupPolicy{Name: "hourly", Schedule: "@hourly", Paths: []string{src}, Hosts: []string{"web01"},
		Retention: &keep2}, true); err != nil {
		t.Fatal(err)
	}
	for _, v := range []meta.VaultID{"plain", "locked"} {
		if _, err := vs.SetVaultPolicy(ctx, v, meta.VaultPolicy{Keep: meta.Policy{Last: 3}}); err != nil {
			t.Fatal(err)
		}
	}
	st, err := ra.RetentionStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	setAt := st.Now

	reps := map[meta.VaultID]meta.RetentionReport{}
	deadline := time.Now().Add(2 * time.Minute)
	for len(reps) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("after 2 min, retention reports only for %v", reps)
		}
		time.Sleep(200 * time.Millisecond) // poll interval
		st, err := ra.RetentionStatus(ctx)
		if err != nil {
			continue // a leader change: ask again
		}
		for _, r := range st.Reports {
			if r.Time.After(before.Now) { // a round may run between the changes: any since the first
				reps[r.Vault] = r
			}
		}
	}
	for v, rep := range reps {
		// The round starts within one interval, on a tick (cluster time advances a second
		// at a time): the first tick an interval after the last round's record, which a
		// loaded machine may commit one tick after that round began (CI saw 4.001 s
		// here). Its entries follow its start by the time the proposals take. So one
		// interval, one tick and a second for the proposals.
		if took := rep.Time.Sub(setAt); took > interval+2*time.Second {
			t.Errorf("vault %s: retention ran %v after the policies were set, more than one interval (%v)", v, took, interval)
		}
		gone := map[meta.SnapshotID]bool{}
		for _, id := range rep.Removed {
			gone[id] = true
		}
		for i, s := range snaps[v] {
			kept := i >= 5 || (v == "locked" && s.ID == held.ID) || (v == "pol" && (i == 0 || i >= 3))
			if gone[s.ID] == kept {
				t.Errorf("vault %s: snapshot %d (%s) removed=%v, want %v", v, i, s.ID.Str(), gone[s.ID], !kept)
			}
		}
		t.Logf("vault %s: %s", v, rep.Summary())
	}
	if got := len(reps["plain"].Removed); got != 5 {
		t.Errorf("plain: removed %d, want 5", got)
	}
	if h := reps["locked"].Held; len(h) != 1 || h[0].ID != held.ID || !strings.Contains(h[0].Reason, "governance-locked until") {
		t.Errorf("locked: held %+v, want the locked snapshot %s with its lock", h, held.ID.Str())
	}
	if bp := reps["pol"].BackupPolicies; len(reps["pol"].Removed) != 2 || len(bp) != 1 || bp[0].Name != "hourly" || bp[0].Removed != 2 {
		t.Errorf("pol: removed %d, backup policies %+v; want 2 by policy hourly's keep-last 2", len(reps["pol"].Removed), bp)
	}
	for v, want := range map[meta.VaultID]int{"plain": 3, "locked": 4, "pol": 3} {
		a, err := client.Open(ctx, cfg, v, passphrase)
		if err != nil {
			t.Fatal(err)
		}
		left, err := a.Snapshots(ctx)
		a.Close()
		if err != nil || len(left) != want {
			t.Errorf("vault %s: %d snapshots left (%v), want %d", v, len(left), err, want)
		}
	}
	log, err := rs.AuditLog(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	audited := map[meta.VaultID]bool{}
	for _, e := range log {
		if e.Action == "retention" && e.Principal == "system" && e.Outcome == meta.AuditOK {
			audited[e.Vault] = true
			if e.Vault == "locked" && !strings.Contains(e.Reason, held.ID.Str()) {
				t.Errorf("retention audit of vault locked does not name the held snapshot: %q", e.Reason)
			}
			if e.Vault == "pol" && !strings.Contains(e.Reason, "backup policy hourly") {
				t.Errorf("retention audit of vault pol does not name the backup policy: %q", e.Reason)
			}
		}
	}
	if len(audited) != 3 {
		t.Errorf("retention audited in %v, want all three vaults", audited)
	}
}
