package fsm

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
)

// TestAgentLockLimit: an append-only agent cannot compliance-lock snapshots until the
// year 9999 (which would block every delete and the vault's delete for ever), by SetLock
// or at commit: it is refused naming the vault's limit (default 1 year), and nothing
// changes. A lock within the limit works; admins are not bound; an admin raising the
// limit is audited and lets the agent lock further.
func TestAgentLockLimit(t *testing.T) {
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
	apply(snap("a", 1))
	apply(snap("a", 2))
	forever := time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)
	setLock := func(p meta.Principal, id byte, until time.Time) Result {
		return apply(command.SetLock{Vault: "a", ID: chunk.ID{id}, Lock: meta.Lock{Mode: meta.Compliance, Until: until}, By: p})
	}
	lockOf := func(id byte) *meta.Lock {
		s, err := f.GetSnapshot("a", chunk.ID{id})
		if err != nil {
			t.Fatal(err)
		}
		return s.Lock
	}
	refusedNaming := func(what string, r Result, limit string) {
		t.Helper()
		if !errors.Is(r.Err, meta.ErrDenied) || !strings.Contains(r.Err.Error(), limit) {
			t.Fatalf("%s: %v, want ErrDenied naming the limit %s", what, r.Err, limit)
		}
	}

	r := setLock(agent, 1, forever)
	refusedNaming("agent locks until 9999", r, "365d")
	if l := lockOf(1); l != nil {
		t.Fatalf("refused lock was stored: %+v", l)
	}
	if last := lastAudit(t, f); last.Outcome != meta.AuditRefused || last.Principal != agent.Name {
		t.Fatalf("refusal not audited: %+v", last)
	}
	// At commit too.
	c := snap("a", 3)
	c.By = &agent
	c.Snapshot.Lock = &meta.Lock{Mode: meta.Compliance, Until: forever}
	refusedNaming("agent commits locked until 9999", apply(c), "365d")
	if _, err := f.GetSnapshot("a", chunk.ID{3}); !errors.Is(err, meta.ErrNotFound) {
		t.Fatalf("refused commit stored the snapshot: %v", err)
	}
	// Within the limit (judged at the entry's cluster time): allowed.
	if r := setLock(agent, 1, f.Now().Add(364*24*time.Hour)); r.Err != nil {
		t.Fatalf("agent lock within the limit: %v", r.Err)
	}
	c.Snapshot.Lock.Until = f.Now().Add(30 * 24 * time.Hour)
	if r := apply(c); r.Err != nil {
		t.Fatalf("agent commit locked within the limit: %v", r.Err)
	}
	// Extending beyond the limit is refused the same way.
	refusedNaming("agent extends past the limit", setLock(agent, 1, f.Now().Add(366*24*time.Hour)), "365d")
	// Admins are not bound by it.
	if r := setLock(admin, 2, forever); r.Err != nil {
		t.Fatalf("admin lock until 9999: %v", r.Err)
	}

	// An admin raises the limit to 2 years: audited, and the agent may lock further.
	for _, p := range []meta.Principal{agent, restorer, nodeP} {
		if r := apply(command.SetVaultPolicy{Vault: "a", Policy: meta.VaultPolicy{MaxAgentLock: 2 * 365 * 24 * time.Hour}, By: p}); !errors.Is(r.Err, meta.ErrDenied) {
			t.Fatalf("limit change by %s: %v, want ErrDenied", p, r.Err)
		}
	}
	if r := apply(command.SetVaultPolicy{Vault: "a", Policy: meta.VaultPolicy{MaxAgentLock: -time.Hour}, By: admin}); !errors.Is(r.Err, meta.ErrInvalid) {
		t.Fatalf("negative limit: %v, want ErrInvalid", r.Err)
	}
	if r := apply(command.SetVaultPolicy{Vault: "a", Policy: meta.VaultPolicy{MaxAgentLock: 2 * 365 * 24 * time.Hour}, By: admin}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if last := lastAudit(t, f); last.Outcome != meta.AuditOK || last.Principal != admin.Name || last.Action != "vault policy" || !strings.Contains(last.Reason, "730d") {
		t.Fatalf("limit change audited as %+v, want an ok vault policy entry naming 730d", last)
	}
	if r := setLock(agent, 1, f.Now().Add(700*24*time.Hour)); r.Err != nil {
		t.Fatalf("agent lock within the raised limit: %v", r.Err)
	}
	refusedNaming("agent locks until 9999 under the raised limit", setLock(agent, 1, forever), "730d")

	// Nor can an agent bring its own policy (a century-long default lock, a huge limit)
	// or a deletion with a new vault: policies are set by SetVaultPolicy (admin) only.
	other := meta.Principal{Name: "db01", Role: meta.RoleBackupAgent, Vaults: []meta.VaultID{"c"}}
	century := 100 * 365 * 24 * time.Hour
	for _, v := range []meta.Vault{
		{Retention: &meta.VaultPolicy{Lock: &meta.DefaultLock{Mode: meta.Compliance, For: century}}},
		{Retention: &meta.VaultPolicy{MaxAgentLock: century}},
		{Deleted: &meta.VaultDeletion{At: time.Unix(0, clock), RecoverUntil: time.Unix(0, clock)}},
	} {
		c := vault("c")
		c.Vault.Retention, c.Vault.Deleted, c.By = v.Retention, v.Deleted, &other
		if r := apply(c); !errors.Is(r.Err, meta.ErrInvalid) {
			t.Fatalf("agent creating a vault with %+v %+v: %v, want ErrInvalid", v.Retention, v.Deleted, r.Err)
		}
		if _, err := f.Vault("c"); !errors.Is(err, meta.ErrNotFound) {
			t.Fatalf("refused vault stored: %v", err)
		}
	}
}

func lastAudit(t *testing.T, f *FSM) meta.AuditEntry {
	t.Helper()
	es, err := f.AuditLog(0, 0)
	if err != nil || len(es) == 0 {
		t.Fatalf("audit log: %d entries, %v", len(es), err)
	}
	return es[len(es)-1]
}

// TestCreateVaultAudited: a vault creation naming its principal is audited whether it is
// allowed or refused (out of the agent's scope, or existing), and a refused one creates
// nothing; an entry without a principal (written before issue 11) is applied as it was.
func TestCreateVaultAudited(t *testing.T) {
	f := open(t, t.TempDir())
	idx := uint64(0)
	apply := func(id string, by *meta.Principal) Result {
		t.Helper()
		idx++
		c := vault(id)
		c.By = by
		return result(t, f.Apply(entry(t, idx, int64(idx)*1000, c)))
	}
	if r := apply("old", nil); r.Err != nil {
		t.Fatal(r.Err)
	}
	if es, _ := f.AuditLog(0, 0); len(es) != 0 {
		t.Fatalf("an old CreateVault wrote audit entries: %+v", es)
	}
	for _, tc := range []struct {
		vault   string
		by      meta.Principal
		outcome string
		err     error
	}{
		{"a", agent, meta.AuditOK, nil},
		{"b", agent, meta.AuditRefused, meta.ErrDenied}, // outside its scope
		{"b", restorer, meta.AuditRefused, meta.ErrDenied},
		{"b", admin, meta.AuditOK, nil},
		{"a", admin, meta.AuditRefused, meta.ErrExists},
	} {
		r := apply(tc.vault, &tc.by)
		if !errors.Is(r.Err, tc.err) || (tc.err == nil && r.Err != nil) {
			t.Fatalf("create %s by %s: %v, want %v", tc.vault, tc.by, r.Err, tc.err)
		}
		last := lastAudit(t, f)
		if last.Action != "vault create" || last.Principal != tc.by.Name || last.Vault != meta.VaultID(tc.vault) || last.Outcome != tc.outcome {
			t.Fatalf("create %s by %s audited as %+v, want outcome %s", tc.vault, tc.by, last, tc.outcome)
		}
	}
	if vs, _ := f.Vaults(); len(vs) != 3 {
		t.Fatalf("%d vaults, want old, a and b", len(vs))
	}
}
