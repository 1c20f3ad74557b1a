package server

import (
	"errors"
	"testing"
	"time"

	"github.com/cofferhq/coffer/meta"
)

// TestVaultDeleteAndPurge: an agent cannot delete a vault; an admin soft-deletes it, the
// vault refuses commits, and once the window ends the leader's loop purges it.
func TestVaultDeleteAndPurge(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) { cfg.TickInterval = 20 * time.Millisecond })
	ctx := ctxT(t)
	l := c.srv[c.leader()]
	if _, err := l.CreateVault(ctx, newVault("gone")); err != nil {
		t.Fatal(err)
	}
	if _, err := l.CommitSnapshot(ctx, storedSnapshot(t, c.chunks, "gone", 3, 0)); err != nil {
		t.Fatal(err)
	}
	agentCtx := meta.WithPrincipal(ctx, meta.Principal{Name: "web01", Role: meta.RoleBackupAgent})
	if _, err := l.DeleteVault(agentCtx, "gone", time.Hour, ""); !errors.Is(err, meta.ErrDenied) {
		t.Fatalf("agent vault delete: %v, want ErrDenied", err)
	}
	adminCtx := meta.WithPrincipal(ctx, meta.Principal{Name: "ops", Role: meta.RoleAdmin})
	v, err := l.DeleteVault(adminCtx, "gone", 300*time.Millisecond, "retired")
	if err != nil || v.Deleted == nil {
		t.Fatalf("admin vault delete: %+v %v", v, err)
	}
	if _, err := l.CommitSnapshot(ctx, storedSnapshot(t, c.chunks, "gone", 3, 0)); !errors.Is(err, meta.ErrInvalid) {
		t.Fatalf("commit into a deleted vault: %v, want ErrInvalid", err)
	}
	waitFor(t, "the leader to purge the vault", func() bool {
		_, err := l.fsm.Vault("gone")
		return errors.Is(err, meta.ErrNotFound)
	})
	if ss, _ := l.fsm.Snapshots("gone"); len(ss) != 0 {
		t.Fatalf("%d snapshots survive the purge", len(ss))
	}
	es, err := l.AuditLog(adminCtx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range es {
		actions = append(actions, e.Action+"/"+e.Outcome)
	}
	want := []string{"vault create/ok", "vault delete/refused", "vault delete/ok", "vault purge/ok"}
	if len(actions) != len(want) {
		t.Fatalf("audit %v, want %v", actions, want)
	}
	for i := range want {
		if actions[i] != want[i] {
			t.Fatalf("audit %v, want %v", actions, want)
		}
	}
}

// TestForgetUsesStoredPolicy: forget with no rules applies the vault's stored policy, and
// refuses when none is stored.
func TestForgetUsesStoredPolicy(t *testing.T) {
	c := newCluster(t, 1, nil)
	ctx := ctxT(t)
	l := c.srv[c.leader()]
	if _, err := l.CreateVault(ctx, newVault("p")); err != nil {
		t.Fatal(err)
	}
	var ids []meta.SnapshotID
	for range 3 {
		s, err := l.CommitSnapshot(ctx, storedSnapshot(t, c.chunks, "p", 2, 0))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.ID)
	}
	if _, err := l.Forget(ctx, "p", meta.Policy{}, true); !errors.Is(err, meta.ErrInvalid) {
		t.Fatalf("forget with no rules and no stored policy: %v, want ErrInvalid", err)
	}
	if _, err := l.SetVaultPolicy(ctx, "p", meta.VaultPolicy{Keep: meta.Policy{Last: 1}}); err != nil {
		t.Fatal(err)
	}
	res, err := l.Forget(ctx, "p", meta.Policy{}, false)
	if err != nil || len(res.Removed) != 2 {
		t.Fatalf("forget by the stored policy: %+v %v", res, err)
	}
	left, err := l.ListSnapshots(ctx, "p")
	if err != nil || len(left) != 1 || left[0].ID != ids[2] {
		t.Fatalf("left %+v %v, want only the newest", left, err)
	}
}
