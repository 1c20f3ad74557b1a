package metatest

import (
	"errors"
	"slices"
	"time"

	"github.com/cofferhq/coffer/meta"
)

// retention returns the implementation's meta.RetentionService as p, or skips the case
// when the fixture has none.
func (e *env) retention(p meta.Principal) meta.RetentionService {
	e.t.Helper()
	if e.f.Retention == nil {
		e.t.Skip("the implementation has no meta.RetentionService")
	}
	return e.f.Retention(p)
}

// retained commits a snapshot of vault as admin, its agent's clock n hours after a fixed
// start, and returns it.
func (e *env) retained(vault meta.VaultID, n int) meta.Snapshot {
	e.t.Helper()
	s := e.stored(vault, 1, 0)
	s.Start = time.Unix(1_700_000_000, 0).Add(time.Duration(n) * time.Hour).UTC()
	return e.commit(s)
}

// testSetLock: locking and extending need the lock permission; a governance lock is
// shortened only with the bypass and a reason; a compliance lock is neither shortened
// nor weakened by anyone (ErrLocked); a lock must end in the future (ErrInvalid).
func testSetLock(e *env) {
	ctx := ctxT(e.t)
	v := e.vault("a")
	adm, ag := e.retention(admin()), e.retention(agent(v))
	s := e.retained(v, 0)
	day := time.Now().Add(24 * time.Hour).UTC().Truncate(time.Second)
	got, err := ag.SetLock(ctx, v, s.ID, meta.Lock{Mode: meta.Governance, Until: day}, meta.Bypass{})
	if err != nil || got.Lock == nil || !got.Lock.Until.Equal(day) {
		e.t.Fatalf("agent locking a snapshot of its vault: %+v %v", got.Lock, err)
	}
	if read, err := e.admin().GetSnapshot(ctx, v, s.ID); err != nil || read.Lock == nil || !read.Lock.Until.Equal(day) {
		e.t.Fatalf("lock not recorded: %+v %v", read.Lock, err)
	}
	if _, err := ag.SetLock(ctx, v, s.ID, meta.Lock{Mode: meta.Governance, Until: day.Add(time.Hour)}, meta.Bypass{}); err != nil {
		e.t.Fatalf("agent extending: %v", err)
	}
	_, err = e.retention(restorer(v)).SetLock(ctx, v, s.ID, meta.Lock{Mode: meta.Governance, Until: day.Add(2 * time.Hour)}, meta.Bypass{})
	wantErr(e.t, "restore operator locking", err, meta.ErrDenied)
	_, err = adm.SetLock(ctx, v, s.ID, meta.Lock{Mode: meta.Governance, Until: time.Unix(1, 0)}, meta.Bypass{})
	wantErr(e.t, "lock in the past", err, meta.ErrInvalid)
	_, err = ag.SetLock(ctx, v, s.ID, meta.Lock{Mode: meta.Governance, Until: day}, meta.Bypass{})
	wantErr(e.t, "agent shortening a governance lock", err, meta.ErrLocked)
	_, err = adm.SetLock(ctx, v, s.ID, meta.Lock{Mode: meta.Governance, Until: day}, meta.Bypass{Governance: true})
	wantErr(e.t, "bypass without a reason", err, meta.ErrInvalid)
	if _, err := adm.SetLock(ctx, v, s.ID, meta.Lock{Mode: meta.Governance, Until: day}, meta.Bypass{Governance: true, Reason: "metatest"}); err != nil {
		e.t.Fatalf("admin shortening a governance lock with the bypass and a reason: %v", err)
	}
	if _, err := adm.SetLock(ctx, v, s.ID, meta.Lock{Mode: meta.Compliance, Until: day}, meta.Bypass{}); err != nil {
		e.t.Fatalf("governance to compliance (an extension): %v", err)
	}
	bypass := meta.Bypass{Governance: true, Reason: "metatest"}
	_, err = adm.SetLock(ctx, v, s.ID, meta.Lock{Mode: meta.Compliance, Until: day.Add(-time.Hour)}, bypass)
	wantErr(e.t, "shortening a compliance lock", err, meta.ErrLocked)
	_, err = adm.SetLock(ctx, v, s.ID, meta.Lock{Mode: meta.Governance, Until: day}, bypass)
	wantErr(e.t, "compliance to governance", err, meta.ErrLocked)
	if read, err := e.admin().GetSnapshot(ctx, v, s.ID); err != nil || read.Lock == nil || read.Lock.Mode != meta.Compliance || !read.Lock.Until.Equal(day) {
		e.t.Fatalf("after refused changes: %+v %v, want compliance until %s", read.Lock, err, day)
	}
	_, err = adm.SetLock(ctx, v, randID(e.t), meta.Lock{Mode: meta.Governance, Until: day}, meta.Bypass{})
	wantErr(e.t, "locking an unknown snapshot", err, meta.ErrNotFound)
}

// testHoldAndDelete: deleting needs the delete permission; a held or locked snapshot is
// not deleted (ErrLocked) and a batch is deleted all or none; only admins hold.
func testHoldAndDelete(e *env) {
	ctx := ctxT(e.t)
	v := e.vault("a")
	adm := e.retention(admin())
	plain, held, locked := e.retained(v, 0), e.retained(v, 1), e.retained(v, 2)
	_, err := e.retention(agent(v)).SetHold(ctx, v, held.ID, true, "metatest")
	wantErr(e.t, "agent setting a hold", err, meta.ErrDenied)
	if got, err := adm.SetHold(ctx, v, held.ID, true, "metatest"); err != nil || !got.LegalHold {
		e.t.Fatalf("admin setting a hold: %+v %v", got, err)
	}
	if _, err := adm.SetLock(ctx, v, locked.ID, meta.Lock{Mode: meta.Compliance, Until: time.Now().Add(time.Hour)}, meta.Bypass{}); err != nil {
		e.t.Fatal(err)
	}
	_, err = e.retention(agent(v)).DeleteSnapshots(ctx, v, []meta.SnapshotID{plain.ID}, meta.Bypass{})
	wantErr(e.t, "agent deleting", err, meta.ErrDenied)
	bypass := meta.Bypass{Governance: true, Reason: "metatest"}
	for name, id := range map[string]meta.SnapshotID{"held": held.ID, "compliance-locked": locked.ID} {
		_, err := adm.DeleteSnapshots(ctx, v, []meta.SnapshotID{plain.ID, id}, bypass)
		wantErr(e.t, "deleting a batch with a "+name+" snapshot", err, meta.ErrLocked)
	}
	list, err := e.admin().ListSnapshots(ctx, v)
	if err != nil || len(list) != 3 {
		e.t.Fatalf("after refused deletes: %d snapshots %v, want all 3 (all or none)", len(list), err)
	}
	if got, err := adm.DeleteSnapshots(ctx, v, []meta.SnapshotID{plain.ID}, meta.Bypass{}); err != nil || len(got) != 1 || got[0].ID != plain.ID {
		e.t.Fatalf("admin deleting a plain snapshot: %v %v", got, err)
	}
	e.absent(v, plain.ID)
	if _, err := adm.SetHold(ctx, v, held.ID, false, "metatest"); err != nil {
		e.t.Fatal(err)
	}
	if _, err := adm.DeleteSnapshots(ctx, v, []meta.SnapshotID{held.ID}, meta.Bypass{}); err != nil {
		e.t.Fatalf("deleting once the hold is cleared: %v", err)
	}
	e.absent(v, held.ID)
}

// testForget: a policy keeps what it names and every locked or held snapshot; a dry run
// removes nothing; agents may not forget (ErrDenied); an empty policy with none stored
// is ErrInvalid.
func testForget(e *env) {
	ctx := ctxT(e.t)
	v := e.vault("a")
	adm := e.retention(admin())
	locked, held, plain, newest := e.retained(v, 0), e.retained(v, 1), e.retained(v, 2), e.retained(v, 3)
	if _, err := adm.SetLock(ctx, v, locked.ID, meta.Lock{Mode: meta.Governance, Until: time.Now().Add(time.Hour)}, meta.Bypass{}); err != nil {
		e.t.Fatal(err)
	}
	if _, err := adm.SetHold(ctx, v, held.ID, true, "metatest"); err != nil {
		e.t.Fatal(err)
	}
	_, err := e.retention(agent(v)).Forget(ctx, v, meta.Policy{Last: 1}, false)
	wantErr(e.t, "agent forgetting", err, meta.ErrDenied)
	_, err = adm.Forget(ctx, v, meta.Policy{}, false)
	wantErr(e.t, "forget with no rules", err, meta.ErrInvalid)
	dry, err := adm.Forget(ctx, v, meta.Policy{Last: 1}, true)
	if err != nil || !dry.DryRun || len(dry.Removed) != 0 || len(dry.Decisions) != 4 {
		e.t.Fatalf("dry run: %+v %v, want 4 decisions and nothing removed", dry, err)
	}
	if list, err := e.admin().ListSnapshots(ctx, v); err != nil || len(list) != 4 {
		e.t.Fatalf("after a dry run: %d snapshots %v", len(list), err)
	}
	res, err := adm.Forget(ctx, v, meta.Policy{Last: 1}, false)
	if err != nil || !slices.Equal(res.Removed, []meta.SnapshotID{plain.ID}) {
		e.t.Fatalf("forget keeping the last: removed %v %v, want only %s", res.Removed, err, plain.ID.Str())
	}
	list, err := e.admin().ListSnapshots(ctx, v)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, s := range []meta.Snapshot{locked, held, newest} {
		if !slices.ContainsFunc(list, func(o meta.Snapshot) bool { return o.ID == s.ID }) {
			e.t.Errorf("forget removed %s", s.ID.Str())
		}
	}
	if _, err := e.admin().GetSnapshot(ctx, v, plain.ID); !errors.Is(err, meta.ErrNotFound) {
		e.t.Errorf("forgotten snapshot still there: %v", err)
	}
}
