package fsm

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/meta"
	"github.com/cofferhq/coffer/meta/command"
)

// TestEnrollTokenLifecycle: an admin's token is consumed once by cluster time; reuse,
// expiry, an unknown token and a non-admin creator are refused, each refusal audited and
// no token text stored anywhere.
func TestEnrollTokenLifecycle(t *testing.T) {
	f := open(t, t.TempDir())
	const sec = int64(time.Second)
	tok, err := meta.NewEnrollToken()
	if err != nil {
		t.Fatal(err)
	}
	h := meta.EnrollTokenHash(tok)
	short := meta.EnrollTokenHash(tok + "x")
	idx := uint64(0)
	apply := func(stamp int64, b command.Body) Result {
		idx++
		return result(t, f.Apply(entry(t, idx, stamp, b)))
	}
	apply(100*sec, vault("a"))
	if r := apply(101*sec, command.CreateEnrollToken{Hash: h, Vault: "a", TTL: int64(time.Hour), By: admin}); !errors.Is(r.Err, meta.ErrInvalid) {
		t.Fatalf("token naming no agent: %v, want ErrInvalid", r.Err)
	}
	if r := apply(101*sec, command.CreateEnrollToken{Hash: h, Vault: "a", Name: "web01", TTL: int64(time.Hour), By: admin}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := apply(101*sec, command.CreateEnrollToken{Hash: short, Vault: "a", Name: "db1", TTL: sec, By: admin}); r.Err != nil {
		t.Fatal(r.Err)
	}
	for _, p := range []meta.Principal{agent, nodeP, nobody} {
		if r := apply(102*sec, command.CreateEnrollToken{Hash: strings.Repeat("1", 64), Vault: "a", TTL: sec, By: p}); !errors.Is(r.Err, meta.ErrDenied) {
			t.Fatalf("token by %s: %v, want ErrDenied", p, r.Err)
		}
	}
	if r := apply(102*sec, command.ConsumeEnrollToken{Hash: h, Name: "web02", Serial: "a1"}); !errors.Is(r.Err, meta.ErrDenied) {
		t.Fatalf("another name than the token's: %v, want ErrDenied", r.Err)
	}
	r := apply(102*sec, command.ConsumeEnrollToken{Hash: h, Name: "web01", Serial: "a1"})
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	if got := r.Value.(meta.EnrollToken); !got.Used || got.Principal != "web01" || got.Vault != "a" || got.Serial != "a1" {
		t.Fatalf("consumed token %+v", got)
	}
	if r := apply(103*sec, command.ConsumeEnrollToken{Hash: h, Name: "web01", Serial: "a2"}); !errors.Is(r.Err, meta.ErrDenied) || !strings.Contains(r.Err.Error(), "already used") {
		t.Fatalf("reuse: %v", r.Err)
	}
	if r := apply(103*sec, command.ConsumeEnrollToken{Hash: strings.Repeat("0", 64), Name: "x", Serial: "a3"}); !errors.Is(r.Err, meta.ErrDenied) || !strings.Contains(r.Err.Error(), "unknown") {
		t.Fatalf("unknown: %v", r.Err)
	}
	if r := apply(103*sec, command.ConsumeEnrollToken{Hash: short, Name: "other", Serial: "a4"}); !errors.Is(r.Err, meta.ErrDenied) {
		t.Fatalf("wrong name for a named token: %v", r.Err)
	}
	apply(103*sec, command.Tick{Elapsed: 10 * sec}) // lets the cluster clock reach the stamps
	if r := apply(103*sec, command.ConsumeEnrollToken{Hash: short, Serial: "a5"}); !errors.Is(r.Err, meta.ErrDenied) || !strings.Contains(r.Err.Error(), "expired") {
		t.Fatalf("expired (cluster time 103 s, token until 102 s): %v", r.Err)
	}
	es, err := f.AuditLog(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	refused := 0
	for _, e := range es {
		if strings.Contains(e.Reason+e.Target+e.Action, tok) || strings.Contains(e.Reason+e.Target, h) {
			t.Fatalf("audit entry holds the token or its full hash: %+v", e)
		}
		if e.Outcome == meta.AuditRefused {
			refused++
		}
	}
	if refused != 9 {
		t.Fatalf("%d refusals audited, want 9: %+v", refused, es)
	}
	// State survives a snapshot round trip (the keys are known to Restore).
	g := open(t, t.TempDir())
	restoreFrom(t, f, g)
	if tk, err := g.EnrollToken(h); err != nil || !tk.Used {
		t.Fatalf("restored token %+v %v", tk, err)
	}
}

// TestRevokeEnrollToken: an admin withdraws a live token by a unique ID prefix, after
// which it cannot enroll; used, expired, revoked, unknown, ambiguous and malformed IDs
// and non-admins are refused with nothing changed, and every attempt is audited.
func TestRevokeEnrollToken(t *testing.T) {
	f := open(t, t.TempDir())
	const sec = int64(time.Second)
	idx := uint64(0)
	apply := func(stamp int64, b command.Body) Result {
		idx++
		return result(t, f.Apply(entry(t, idx, stamp, b)))
	}
	apply(100*sec, vault("a"))
	live := strings.Repeat("ab", 32)
	used := strings.Repeat("cd", 32)
	twinA, twinB := "ef01ef01"+strings.Repeat("0", 56), "ef01ef01"+strings.Repeat("1", 56)
	for i, h := range []string{live, used, twinA, twinB} {
		ttl := int64(time.Hour)
		if h == twinA || h == twinB {
			ttl = sec
		}
		if r := apply(101*sec, command.CreateEnrollToken{Hash: h, Vault: "a", Name: fmt.Sprintf("web%02d", i), TTL: ttl, By: admin}); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	if r := apply(101*sec, command.ConsumeEnrollToken{Hash: used, Serial: "s1"}); r.Err != nil {
		t.Fatal(r.Err)
	}
	refusals := []struct {
		body command.RevokeEnrollToken
		want error
		says string
	}{
		{command.RevokeEnrollToken{ID: live[:16], By: agent}, meta.ErrDenied, ""},
		{command.RevokeEnrollToken{ID: "abab", By: admin}, meta.ErrInvalid, "8 to 16 hex digits"},
		{command.RevokeEnrollToken{ID: "ABABABAB", By: admin}, meta.ErrInvalid, "lower-case hex"},
		{command.RevokeEnrollToken{ID: "99999999", By: admin}, meta.ErrNotFound, "no enrollment token with ID 99999999"},
		{command.RevokeEnrollToken{ID: "ef01ef01", By: admin}, meta.ErrInvalid, "more than one"},
		{command.RevokeEnrollToken{ID: used[:16], By: admin}, meta.ErrInvalid, "coffer admin cert revoke --serial s1"},
	}
	for _, c := range refusals {
		if r := apply(102*sec, c.body); !errors.Is(r.Err, c.want) || !strings.Contains(r.Err.Error(), c.says) {
			t.Fatalf("revoke %q by %s: %v, want %v saying %q", c.body.ID, c.body.By, r.Err, c.want, c.says)
		}
	}
	if tk, err := f.EnrollToken(live); err != nil || tk.Revoked {
		t.Fatalf("token after refusals: %+v %v, want live", tk, err)
	}
	r := apply(102*sec, command.RevokeEnrollToken{ID: live[:8], Reason: "pasted in a ticket", By: admin})
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	got := r.Value.(meta.EnrollToken)
	if !got.Revoked || got.RevokedBy != admin.Name || got.RevokeReason != "pasted in a ticket" || got.ID != live[:16] {
		t.Fatalf("revoked token %+v", got)
	}
	if r := apply(103*sec, command.ConsumeEnrollToken{Hash: live, Serial: "s2"}); !errors.Is(r.Err, meta.ErrDenied) || !strings.Contains(r.Err.Error(), "revoked") {
		t.Fatalf("enroll with a revoked token: %v, want ErrDenied saying revoked", r.Err)
	}
	if r := apply(103*sec, command.RevokeEnrollToken{ID: live[:16], By: admin}); !errors.Is(r.Err, meta.ErrInvalid) || !strings.Contains(r.Err.Error(), "already revoked") {
		t.Fatalf("revoke twice: %v", r.Err)
	}
	apply(104*sec, command.Tick{Elapsed: 10 * sec}) // lets the clock pass the twins' expiry
	if r := apply(104*sec, command.RevokeEnrollToken{ID: twinA[:16], By: admin}); !errors.Is(r.Err, meta.ErrInvalid) || !strings.Contains(r.Err.Error(), "expired") {
		t.Fatalf("revoke an expired token: %v", r.Err)
	}
	ts, err := f.EnrollTokens()
	if err != nil || len(ts) != 4 {
		t.Fatalf("EnrollTokens: %d %v, want 4", len(ts), err)
	}
	es, err := f.AuditLog(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	revokes := 0
	for _, e := range es {
		if e.Action == "enroll-token revoke" {
			revokes++
		}
	}
	if want := len(refusals) + 3; revokes != want {
		t.Fatalf("%d revoke attempts audited, want %d", revokes, want)
	}
}

// TestRevocations: admins revoke by serial or principal; the list is versioned by log
// index; a principal revocation covers only certificates issued before it.
func TestRevocations(t *testing.T) {
	f := open(t, t.TempDir())
	const sec = int64(time.Second)
	if r := result(t, f.Apply(entry(t, 1, 100*sec, command.RevokeCert{Revocation: meta.Revocation{Serial: "ab"}, By: agent}))); !errors.Is(r.Err, meta.ErrDenied) {
		t.Fatalf("agent revoking: %v", r.Err)
	}
	if r := result(t, f.Apply(entry(t, 2, 100*sec, command.RevokeCert{Revocation: meta.Revocation{Serial: "ab", Principal: "x"}, By: admin}))); !errors.Is(r.Err, meta.ErrInvalid) {
		t.Fatalf("both serial and principal: %v", r.Err)
	}
	result(t, f.Apply(entry(t, 3, 100*sec, command.RevokeCert{Revocation: meta.Revocation{Serial: "ab", Reason: "lost"}, By: admin})))
	result(t, f.Apply(entry(t, 4, 200*sec, command.RevokeCert{Revocation: meta.Revocation{Principal: "web01"}, By: admin})))
	list, version, err := f.Revocations()
	if err != nil || len(list) != 2 || version != 4 || list[0].By != "ops" || list[0].At.IsZero() {
		t.Fatalf("revocations %+v version %d %v", list, version, err)
	}
	at := list[1].At
	for _, c := range []struct {
		serial, principal string
		issued            time.Time
		want              bool
	}{
		{"ab", "any", at.Add(time.Hour), true},
		{"ac", "any", at, false},
		{"ff", "web01", at.Add(-time.Minute), true},
		{"ff", "web01", at.Add(time.Minute), false},
		{"ff", "web02", at.Add(-time.Minute), false},
	} {
		if _, got := meta.Revoked(list, c.serial, c.principal, c.issued); got != c.want {
			t.Errorf("Revoked(%s, %s, %v) = %v, want %v", c.serial, c.principal, c.issued, got, c.want)
		}
	}
}

// TestEnrollRetrySameKey: an enrollment retried by the same key (its answer was lost in a
// leader change) gets the first serial back and writes nothing; another key, a retry
// without a key and one after meta.EnrollRetryWindow are refused as a reuse.
func TestEnrollRetrySameKey(t *testing.T) {
	f := open(t, t.TempDir())
	const sec = int64(time.Second)
	tok, err := meta.NewEnrollToken()
	if err != nil {
		t.Fatal(err)
	}
	h := meta.EnrollTokenHash(tok)
	idx := uint64(0)
	apply := func(stamp int64, b command.Body) Result {
		idx++
		return result(t, f.Apply(entry(t, idx, stamp, b)))
	}
	apply(100*sec, vault("a"))
	if r := apply(101*sec, command.CreateEnrollToken{Hash: h, Vault: "a", Name: "web01", TTL: int64(time.Hour), By: admin}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := apply(102*sec, command.ConsumeEnrollToken{Hash: h, Name: "web01", Serial: "a1", Key: "k1"}); r.Err != nil {
		t.Fatal(r.Err)
	}
	r := apply(103*sec, command.ConsumeEnrollToken{Hash: h, Name: "web01", Serial: "a2", Key: "k1"})
	if r.Err != nil {
		t.Fatalf("retry by the same key: %v", r.Err)
	}
	if got := r.Value.(meta.EnrollToken); got.Serial != "a1" || got.Principal != "web01" {
		t.Fatalf("retry answered %+v, want the first serial a1", got)
	}
	if st, err := f.EnrollToken(h); err != nil || st.Serial != "a1" || st.UsedKey != "k1" {
		t.Fatalf("stored token after the retry: %+v %v", st, err)
	}
	for _, c := range []command.ConsumeEnrollToken{
		{Hash: h, Name: "web01", Serial: "a3", Key: "k2"}, // another key holding the token
		{Hash: h, Name: "web01", Serial: "a4"},            // no key: an old client
	} {
		if r := apply(104*sec, c); !errors.Is(r.Err, meta.ErrDenied) || !strings.Contains(r.Err.Error(), "already used") {
			t.Fatalf("%+v: %v, want already used", c, r.Err)
		}
	}
	// The cluster clock follows the leader's stamps by Ticks of at most MaxTickElapsed.
	stamp := 104 * sec
	for end := stamp + int64(meta.EnrollRetryWindow) + 10*sec; stamp < end; {
		stamp += int64(MaxTickElapsed)
		apply(stamp, command.Tick{Elapsed: int64(MaxTickElapsed)})
	}
	if r := apply(stamp, command.ConsumeEnrollToken{Hash: h, Name: "web01", Serial: "a5", Key: "k1"}); !errors.Is(r.Err, meta.ErrDenied) {
		t.Fatalf("same key after the retry window: %v, want refused", r.Err)
	}
}
