package fsm

import (
	"errors"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
)

func TestVaultSoftDelete(t *testing.T) {
	f := open(t, t.TempDir())
	idx := uint64(0)
	clock := int64(1_000_000_000_000)
	apply := func(b command.Body) Result {
		t.Helper()
		idx++
		clock += int64(time.Millisecond)
		return result(t, f.Apply(entry(t, idx, clock, b)))
	}
	advance := func(d time.Duration) { // real time passes: ticks move the clock
		for step := time.Minute; d > 0; d -= step {
			idx++
			clock += int64(step)
			f.Apply(entry(t, idx, clock, command.Tick{Elapsed: int64(step)}))
		}
	}
	apply(vault("a"))
	advance(time.Minute)
	apply(snap("a", 1))
	apply(snap("a", 2))
	lockUntil := f.Now().Add(30 * time.Minute)
	if r := apply(command.SetLock{Vault: "a", ID: chunk.ID{2}, Lock: meta.Lock{Mode: meta.Governance, Until: lockUntil}, By: admin}); r.Err != nil {
		t.Fatal(r.Err)
	}
	del := func(p meta.Principal) Result {
		return apply(command.DeleteVault{Vault: "a", Window: int64(time.Hour), By: p, Reason: "tenant left"})
	}
	// Refused for non-admins, and for anyone while a snapshot is locked.
	for _, p := range []meta.Principal{agent, restorer, nodeP, nobody} {
		if r := del(p); !errors.Is(r.Err, meta.ErrDenied) {
			t.Errorf("vault delete by %s: %v, want ErrDenied", p, r.Err)
		}
	}
	if r := del(admin); !errors.Is(r.Err, meta.ErrLocked) {
		t.Fatalf("vault delete with a governance-locked snapshot: %v, want ErrLocked", r.Err)
	}
	es, _ := f.AuditLog(0, 0)
	refused := 0
	for _, e := range es {
		if e.Action == "vault delete" && e.Outcome == meta.AuditRefused {
			refused++
		}
	}
	if refused != 5 {
		t.Fatalf("%d refused vault deletes audited, want 5", refused)
	}
	advance(31 * time.Minute) // the lock runs out
	r := del(admin)
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	v, _ := f.Vault("a")
	if v.Deleted == nil || !v.Deleted.RecoverUntil.Equal(v.Deleted.At.Add(time.Hour)) || v.Deleted.By != "ops" {
		t.Fatalf("deleted vault %+v", v.Deleted)
	}
	if r := apply(snap("a", 3)); !errors.Is(r.Err, meta.ErrInvalid) {
		t.Fatalf("commit into a deleted vault: %v", r.Err)
	}
	if r := del(admin); !errors.Is(r.Err, meta.ErrInvalid) {
		t.Fatalf("second delete: %v", r.Err)
	}
	// Undelete within the window, delete again.
	if r := apply(command.UndeleteVault{Vault: "a", By: agent}); !errors.Is(r.Err, meta.ErrDenied) {
		t.Fatalf("undelete by an agent: %v", r.Err)
	}
	if r := apply(command.UndeleteVault{Vault: "a", By: admin}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := apply(snap("a", 3)); r.Err != nil {
		t.Fatalf("commit after undelete: %v", r.Err)
	}
	if r := del(admin); r.Err != nil {
		t.Fatal(r.Err)
	}
	// Not purgeable before the window ends; a hold during the window postpones it.
	if r := apply(command.PurgeVault{Vault: "a"}); !errors.Is(r.Err, meta.ErrLocked) {
		t.Fatalf("early purge: %v", r.Err)
	}
	if due, _ := f.PurgeDue(); len(due) != 0 {
		t.Fatalf("purge due early: %v", due)
	}
	if r := apply(command.SetHold{Vault: "a", ID: chunk.ID{1}, Hold: true, By: admin}); r.Err != nil {
		t.Fatal(r.Err)
	}
	advance(61 * time.Minute)
	if due, _ := f.PurgeDue(); len(due) != 0 {
		t.Fatalf("purge due with a held snapshot: %v", due)
	}
	if r := apply(command.PurgeVault{Vault: "a"}); !errors.Is(r.Err, meta.ErrLocked) {
		t.Fatalf("purge with a held snapshot: %v", r.Err)
	}
	if r := apply(command.UndeleteVault{Vault: "a", By: admin}); !errors.Is(r.Err, meta.ErrInvalid) {
		t.Fatalf("undelete after the window: %v", r.Err)
	}
	if r := apply(command.SetHold{Vault: "a", ID: chunk.ID{1}, Hold: false, By: admin}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if due, _ := f.PurgeDue(); len(due) != 1 || due[0] != "a" {
		t.Fatalf("purge due: %v", due)
	}
	if r := apply(command.PurgeVault{Vault: "a"}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if _, err := f.Vault("a"); !errors.Is(err, meta.ErrNotFound) {
		t.Fatalf("purged vault still there: %v", err)
	}
	if ss, _ := f.Snapshots("a"); len(ss) != 0 {
		t.Fatalf("purged vault keeps %d snapshots", len(ss))
	}
	es, _ = f.AuditLog(0, 0)
	if last := es[len(es)-1]; last.Action != "vault purge" || last.Outcome != meta.AuditOK || last.Role != meta.RoleSystem {
		t.Fatalf("last audit entry %+v, want the purge", last)
	}
}

func TestVaultPolicyLocksNewSnapshots(t *testing.T) {
	f := open(t, t.TempDir())
	idx := uint64(0)
	clock := int64(1_000_000_000_000)
	apply := func(b command.Body) Result {
		t.Helper()
		idx++
		clock += int64(time.Millisecond)
		return result(t, f.Apply(entry(t, idx, clock, b)))
	}
	apply(vault("a"))
	pol := meta.VaultPolicy{Keep: meta.Policy{Daily: 7}, Lock: &meta.DefaultLock{Mode: meta.Compliance, For: 24 * time.Hour}}
	for _, p := range []meta.Principal{agent, restorer, nodeP} {
		if r := apply(command.SetVaultPolicy{Vault: "a", Policy: pol, By: p}); !errors.Is(r.Err, meta.ErrDenied) {
			t.Errorf("policy change by %s: %v, want ErrDenied", p, r.Err)
		}
	}
	if r := apply(command.SetVaultPolicy{Vault: "a", Policy: meta.VaultPolicy{Lock: &meta.DefaultLock{Mode: "soft", For: time.Hour}}, By: admin}); !errors.Is(r.Err, meta.ErrInvalid) {
		t.Errorf("bad default lock: %v", r.Err)
	}
	if r := apply(command.SetVaultPolicy{Vault: "a", Policy: pol, By: admin}); r.Err != nil {
		t.Fatal(r.Err)
	}
	r := apply(snap("a", 1))
	s := r.Value.(meta.Snapshot)
	if r.Err != nil || s.Lock == nil || s.Lock.Mode != meta.Compliance || !s.Lock.Until.Equal(s.Time.Add(24*time.Hour)) {
		t.Fatalf("new snapshot lock %+v (%v), want compliance for 24h from its commit", s.Lock, r.Err)
	}
	// An agent's own weaker, shorter lock is raised to the default.
	c := snap("a", 2)
	c.Snapshot.Lock = &meta.Lock{Mode: meta.Governance, Until: time.Unix(0, clock+int64(time.Hour)).UTC()}
	r = apply(c)
	if s := r.Value.(meta.Snapshot); r.Err != nil || s.Lock.Mode != meta.Compliance || !s.Lock.Until.Equal(s.Time.Add(24*time.Hour)) {
		t.Fatalf("weaker lock not raised: %+v (%v)", s.Lock, r.Err)
	}
	if r := apply(command.DeleteSnapshots{Vault: "a", IDs: []chunk.ID{{1}}, By: admin, Bypass: meta.Bypass{Governance: true, Reason: "x"}}); !errors.Is(r.Err, meta.ErrLocked) {
		t.Fatalf("delete of a snapshot locked by the vault policy: %v", r.Err)
	}
	v, _ := f.Vault("a")
	if v.Retention == nil || v.Retention.Keep.Daily != 7 {
		t.Fatalf("stored policy %+v", v.Retention)
	}
	if r := apply(command.SetVaultPolicy{Vault: "a", By: admin}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if v, _ := f.Vault("a"); v.Retention != nil {
		t.Fatalf("cleared policy still stored: %+v", v.Retention)
	}
}
