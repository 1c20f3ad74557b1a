package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
)

var (
	admin    = meta.Principal{Name: "ops", Role: meta.RoleAdmin}
	agent    = meta.Principal{Name: "web01", Role: meta.RoleBackupAgent, Vaults: []meta.VaultID{"a"}}
	restorer = meta.Principal{Name: "rest", Role: meta.RoleRestoreOperator}
	nodeP    = meta.Principal{Name: "n1", Role: meta.RoleNode}
	nobody   = meta.Principal{Name: "anon"}
)

// lockState is the state a snapshot is put in before a path is tried on it.
type lockState struct {
	name string
	lock *meta.Lock // relative: Until is an offset from the clock in Until.UnixNano()
	hold bool
}

// TestLockMatrix tries every credential on every destructive path against every lock
// state and checks the outcome against S3 Object Lock semantics: compliance binds
// everyone until it expires (extending is fine), governance gives way only to an admin
// with the bypass and a reason, a legal hold blocks deletion and only an admin changes
// it, append-only and read-only credentials never delete. Every refusal must be in the
// audit log with the principal and the reason.
func TestLockMatrix(t *testing.T) {
	const hour = int64(time.Hour)
	states := []lockState{
		{name: "unlocked"},
		{name: "governance", lock: &meta.Lock{Mode: meta.Governance, Until: time.Unix(0, hour)}},
		{name: "compliance", lock: &meta.Lock{Mode: meta.Compliance, Until: time.Unix(0, hour)}},
		{name: "expired compliance", lock: &meta.Lock{Mode: meta.Compliance, Until: time.Unix(0, hour)}},
		{name: "hold", hold: true},
	}
	type path struct {
		name string
		body func(p meta.Principal, id chunk.ID, bypass bool, now int64) command.Body
		// allowed returns whether S3 semantics allow the path for p in state s.
		allowed func(p meta.Principal, s lockState, bypass bool) bool
	}
	active := func(s lockState) bool { return s.lock != nil && s.name != "expired compliance" }
	byp := func(b bool) meta.Bypass {
		if b {
			return meta.Bypass{Governance: true, Reason: "INC-42"}
		}
		return meta.Bypass{}
	}
	canDelete := func(p meta.Principal, s lockState, bypass bool) bool {
		if p.Role != meta.RoleAdmin || s.hold {
			return false
		}
		if !active(s) {
			return true
		}
		return s.lock.Mode == meta.Governance && bypass
	}
	paths := []path{
		{"snapshot delete", func(p meta.Principal, id chunk.ID, b bool, _ int64) command.Body {
			return command.DeleteSnapshots{Vault: "a", IDs: []chunk.ID{id}, By: p, Bypass: byp(b), Action: "delete"}
		}, canDelete},
		{"forget", func(p meta.Principal, id chunk.ID, b bool, _ int64) command.Body {
			return command.DeleteSnapshots{Vault: "a", IDs: []chunk.ID{id}, By: p, Bypass: byp(b), Action: "forget"}
		}, canDelete},
		{"shorten lock", func(p meta.Principal, id chunk.ID, b bool, now int64) command.Body {
			return command.SetLock{Vault: "a", ID: id, Lock: meta.Lock{Mode: meta.Governance, Until: time.Unix(0, now+hour/2).UTC()}, By: p, Bypass: byp(b)}
		}, func(p meta.Principal, s lockState, b bool) bool {
			if p.Role != meta.RoleAdmin && p.Role != meta.RoleBackupAgent {
				return false
			}
			if !active(s) {
				return true // a new lock, not a shortening
			}
			return s.lock.Mode == meta.Governance && b && p.Role == meta.RoleAdmin
		}},
		{"compliance to governance", func(p meta.Principal, id chunk.ID, b bool, now int64) command.Body {
			return command.SetLock{Vault: "a", ID: id, Lock: meta.Lock{Mode: meta.Governance, Until: time.Unix(0, now+2*hour).UTC()}, By: p, Bypass: byp(b)}
		}, func(p meta.Principal, s lockState, b bool) bool {
			if p.Role != meta.RoleAdmin && p.Role != meta.RoleBackupAgent {
				return false
			}
			return !active(s) || s.lock.Mode == meta.Governance // governance extended is fine
		}},
		{"extend lock", func(p meta.Principal, id chunk.ID, b bool, now int64) command.Body {
			return command.SetLock{Vault: "a", ID: id, Lock: meta.Lock{Mode: meta.Compliance, Until: time.Unix(0, now+3*hour).UTC()}, By: p, Bypass: byp(b)}
		}, func(p meta.Principal, s lockState, b bool) bool {
			return p.Role == meta.RoleAdmin || p.Role == meta.RoleBackupAgent
		}},
		{"clear hold", func(p meta.Principal, id chunk.ID, b bool, _ int64) command.Body {
			return command.SetHold{Vault: "a", ID: id, Hold: false, By: p, Reason: "case closed"}
		}, func(p meta.Principal, s lockState, b bool) bool { return p.Role == meta.RoleAdmin }},
	}
	creds := []meta.Principal{admin, agent, restorer, nodeP, nobody}

	f := open(t, t.TempDir())
	idx := uint64(0)
	clock := int64(1_000_000_000_000)
	apply := func(b command.Body) Result {
		t.Helper()
		idx++
		clock += int64(time.Millisecond)
		return result(t, f.Apply(entry(t, idx, clock, b)))
	}
	tick := func(d time.Duration) {
		idx++
		clock += int64(d)
		f.Apply(entry(t, idx, clock, command.Tick{Elapsed: int64(d)}))
	}
	apply(vault("a"))
	tick(time.Second)
	n := 0
	for _, st := range states {
		for _, p := range paths {
			for _, cred := range creds {
				for _, bypass := range []bool{false, true} {
					n++
					id := chunk.ID{byte(n), byte(n >> 8), 0xcc}
					cell := fmt.Sprintf("%s / %s / %s bypass=%v", st.name, p.name, cred.Role, bypass)
					s := command.CommitSnapshot{Snapshot: meta.Snapshot{ID: id, Vault: "a", Host: "h", Tree: chunk.ID{0xee}, Refs: []chunk.ID{{0xaa}}}}
					if r := apply(s); r.Err != nil {
						t.Fatalf("%s: commit: %v", cell, r.Err)
					}
					now := f.Now().UnixNano()
					if st.lock != nil {
						l := meta.Lock{Mode: st.lock.Mode, Until: time.Unix(0, now+st.lock.Until.UnixNano()).UTC()}
						if st.name == "expired compliance" {
							l.Until = time.Unix(0, now+int64(2*time.Second)).UTC()
						}
						if r := apply(command.SetLock{Vault: "a", ID: id, Lock: l, By: admin}); r.Err != nil {
							t.Fatalf("%s: lock: %v", cell, r.Err)
						}
						if st.name == "expired compliance" {
							tick(2 * time.Second) // the clock passes the lock
							tick(2 * time.Second)
						}
					}
					if st.hold {
						if r := apply(command.SetHold{Vault: "a", ID: id, Hold: true, By: admin}); r.Err != nil {
							t.Fatalf("%s: hold: %v", cell, r.Err)
						}
					}
					before, _ := f.GetSnapshot("a", id)
					r := apply(p.body(cred, id, bypass, f.Now().UnixNano()))
					want := p.allowed(cred, st, bypass)
					if (r.Err == nil) != want {
						t.Errorf("%s: err %v, want allowed=%v", cell, r.Err, want)
						continue
					}
					es, err := f.AuditLog(idx-1, 0)
					if err != nil || len(es) != 1 {
						t.Fatalf("%s: audit entries for the attempt: %v %v", cell, es, err)
					}
					e := es[0]
					if e.Principal != cred.Name || e.Role != cred.Role || e.Seq != idx || e.Time.UnixNano() == 0 {
						t.Errorf("%s: audit entry %+v names the wrong principal or time", cell, e)
					}
					if want {
						if e.Outcome != meta.AuditOK {
							t.Errorf("%s: audit outcome %q, want ok", cell, e.Outcome)
						}
						continue
					}
					if !errors.Is(r.Err, meta.ErrDenied) && !errors.Is(r.Err, meta.ErrLocked) && !errors.Is(r.Err, meta.ErrInvalid) {
						t.Errorf("%s: refusal %v is not Denied/Locked/Invalid", cell, r.Err)
					}
					if e.Outcome != meta.AuditRefused || !strings.Contains(e.Reason, strings.TrimPrefix(r.Err.Error(), fmt.Sprintf("fsm: log %d: ", idx))) && e.Reason == "" {
						t.Errorf("%s: audit entry %+v does not record the refusal %v", cell, e, r.Err)
					}
					after, err := f.GetSnapshot("a", id)
					if err != nil || after.LegalHold != before.LegalHold || (after.Lock == nil) != (before.Lock == nil) ||
						(after.Lock != nil && (after.Lock.Mode != before.Lock.Mode || !after.Lock.Until.Equal(before.Lock.Until))) {
						t.Errorf("%s: refused attempt changed the snapshot: %+v -> %+v (%v)", cell, before, after, err)
					}
				}
			}
		}
	}
	t.Logf("%d cells", n)
}

func TestAuditRecordAndPaging(t *testing.T) {
	f := open(t, t.TempDir())
	f.Apply(entry(t, 1, 1000, vault("a")))
	for i := uint64(2); i < 7; i++ {
		r := result(t, f.Apply(entry(t, i, int64(1000+i), command.RecordAudit{Entry: meta.AuditEntry{Principal: "x", Action: "forget", Outcome: meta.AuditRefused}})))
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	all, err := f.AuditLog(0, 0)
	if err != nil || len(all) != 5 || all[0].Seq != 2 || all[4].Seq != 6 {
		t.Fatalf("audit log %+v %v", all, err)
	}
	page, err := f.AuditLog(3, 2)
	if err != nil || len(page) != 2 || page[0].Seq != 4 || page[1].Seq != 5 {
		t.Fatalf("page after 3: %+v %v", page, err)
	}
	// The audit log survives a raft snapshot round trip.
	g := open(t, t.TempDir())
	restoreFrom(t, f, g)
	if again, err := g.AuditLog(0, 0); err != nil || len(again) != 5 {
		t.Fatalf("audit log after restore: %d entries, %v", len(again), err)
	}
}

func restoreFrom(t *testing.T, src, dst *FSM) {
	t.Helper()
	if err := dst.Restore(io.NopCloser(bytes.NewReader(persist(t, src)))); err != nil {
		t.Fatal(err)
	}
}
