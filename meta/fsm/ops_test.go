package fsm

import (
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
)

// TestVaultRetentionAppliesPolicyRules: ApplyVaultRetention applies a backup policy's own
// retention to the snapshots tagged with it, in a vault without stored rules; the
// vault's other snapshots are untouched; a locked snapshot of the policy is kept and
// reported; the report names the policy and is audited. The older ApplyRetention keeps
// its meaning (no vault rules: refused), and a vault with neither is refused.
func TestVaultRetentionAppliesPolicyRules(t *testing.T) {
	f := open(t, t.TempDir())
	const sec = int64(time.Second)
	idx := uint64(0)
	apply := func(stamp int64, b command.Body) Result {
		idx++
		return result(t, f.Apply(entry(t, idx, stamp, b)))
	}
	apply(100*sec, vault("a"))
	apply(100*sec, vault("b"))
	keep := meta.Policy{Last: 1}
	if r := apply(101*sec, command.PutPolicy{Policy: meta.BackupPolicy{Name: "hourly", Schedule: "@hourly", Paths: []string{"/srv"},
		Hosts: []string{"web01"}, Retention: &keep}, Create: true, By: admin}); r.Err != nil {
		t.Fatal(r.Err)
	}
	commit := func(stamp int64, id byte, tags ...string) {
		c := snap("a", id)
		c.Snapshot.Tags = tags
		if r := apply(stamp, c); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	commit(110*sec, 1, "policy-hourly")
	commit(111*sec, 2, "policy-hourly", "db")
	commit(112*sec, 3, "policy-hourly")
	commit(113*sec, 4)
	commit(114*sec, 5, "policy-other")
	if r := apply(115*sec, command.SetLock{Vault: "a", ID: meta.SnapshotID(chunk.ID{1}), Lock: meta.Lock{Mode: meta.Governance, Until: time.Unix(900, 0).UTC()}, By: admin}); r.Err != nil {
		t.Fatal(r.Err)
	}

	wantErr(t, f.Apply(entry(t, idx+1, 116*sec, command.ApplyRetention{Vault: "a"})), meta.ErrInvalid)
	idx++
	wantErr(t, f.Apply(entry(t, idx+1, 116*sec, command.ApplyVaultRetention{Vault: "b"})), meta.ErrInvalid)
	idx++
	r := apply(117*sec, command.ApplyVaultRetention{Vault: "a"})
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	rep := r.Value.(meta.RetentionReport)
	if len(rep.Removed) != 1 || rep.Removed[0] != meta.SnapshotID(chunk.ID{2}) {
		t.Fatalf("removed %v, want only snapshot 02 (01 is locked, 03 the last, 04 and 05 not the policy's)", rep.Removed)
	}
	if len(rep.Held) != 1 || rep.Held[0].ID != meta.SnapshotID(chunk.ID{1}) {
		t.Fatalf("held %+v, want the locked snapshot 01", rep.Held)
	}
	if bp := rep.BackupPolicies; len(bp) != 1 || bp[0].Name != "hourly" || bp[0].Removed != 1 || bp[0].Kept != 2 || bp[0].Keep != keep {
		t.Fatalf("backup policies %+v", bp)
	}
	if rep.Kept != 4 || !rep.Policy.Empty() {
		t.Fatalf("report %+v: want 4 kept, no vault rules", rep)
	}
	left, err := f.Snapshots("a")
	if err != nil || len(left) != 4 {
		t.Fatalf("%d snapshots left (%v), want 4", len(left), err)
	}
	log, err := f.AuditLog(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	last := log[len(log)-1]
	if last.Action != "retention" || last.Principal != "system" || last.Vault != "a" || last.Outcome != meta.AuditOK {
		t.Fatalf("last audit entry %+v, want the system's retention in vault a", last)
	}
}

// TestCompactAlerts: resolved alerts and one-time events older than the retention go
// (an event's key is freed: raised again it is a new alert); an open condition alert
// and newer ones stay; a retention that is not positive is refused.
func TestCompactAlerts(t *testing.T) {
	f := open(t, t.TempDir())
	const sec = int64(time.Second)
	idx := uint64(0)
	apply := func(stamp int64, b command.Body) Result {
		idx++
		return result(t, f.Apply(entry(t, idx, stamp, b)))
	}
	advance := func(stamp int64) {
		for f.Now().UnixNano() < stamp {
			apply(min(f.Now().UnixNano()+sec, stamp), command.Tick{Elapsed: sec})
		}
	}
	raise := func(stamp int64, key string, kind meta.AlertKind) meta.Alert {
		advance(stamp)
		r := apply(stamp, command.RaiseAlert{Alert: meta.Alert{Key: key, Kind: kind, Severity: meta.SeverityWarning, Subject: "s", Message: "m"}})
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		return r.Value.(meta.Alert)
	}
	apply(100*sec, vault("a")) // the first entry sets the clock
	oldEvent := raise(100*sec, "job-failed/j1", meta.AlertJobFailed)
	openCond := raise(100*sec, "node-down/n1", meta.AlertNodeDown)
	raise(100*sec, "capacity/n2", meta.AlertCapacity)
	apply(101*sec, command.ResolveAlert{Key: "capacity/n2"})
	newEvent := raise(190*sec, "anomaly/j2", meta.AlertAnomaly)
	advance(200 * sec)
	wantErr(t, f.Apply(entry(t, idx+1, 200*sec, command.CompactAlerts{Retain: 0})), meta.ErrInvalid)
	idx++
	r := apply(200*sec, command.CompactAlerts{Retain: 50 * sec})
	if r.Err != nil || r.Value.(int) != 2 {
		t.Fatalf("compact: %v %v, want 2 removed", r.Value, r.Err)
	}
	all, err := f.Alerts(meta.AlertFilter{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0].Seq != newEvent.Seq || all[1].Seq != openCond.Seq {
		t.Fatalf("alerts left %+v, want the new event and the open condition", all)
	}
	if _, ok, err := f.OpenAlert(oldEvent.Key); ok || err != nil {
		t.Fatalf("the compacted event's key is still taken (%v)", err)
	}
	if a, ok, err := f.OpenAlert(openCond.Key); !ok || err != nil || a.Seq != openCond.Seq {
		t.Fatalf("open condition alert: %+v %v %v", a, ok, err)
	}
	again := raise(201*sec, oldEvent.Key, meta.AlertJobFailed)
	if again.Seq == oldEvent.Seq {
		t.Fatal("an event raised again after compaction is not a new alert")
	}
}
