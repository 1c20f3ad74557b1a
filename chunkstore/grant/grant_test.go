package grant

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore/chunk"
)

// testGrants returns valid grants expiring an hour after now: one reference, many, and
// the longest names.
func testGrants(now time.Time) []Grant {
	r := rand.New(rand.NewPCG(11, 12))
	return []Grant{
		{Vault: "web01", Snapshot: randIDs(r, 1)[0], Refs: randIDs(r, 1), Principal: "oncall", Expires: now.Add(time.Hour)},
		{Vault: "v", Snapshot: randIDs(r, 1)[0], Refs: randIDs(r, 40), Principal: "op", Expires: now.Add(time.Second)},
		{Vault: strings.Repeat("v", MaxVaultLen), Snapshot: randIDs(r, 1)[0], Refs: randIDs(r, 2), Principal: strings.Repeat("p", MaxPrincipalLen), Expires: now.Add(time.Hour)},
	}
}

// legacyGrantToken signs g as a version 1 token did: version byte 1, HMAC-SHA-256 of the
// JSON payload, the payload.
func legacyGrantToken(tb testing.TB, key []byte, g Grant) []byte {
	tb.Helper()
	payload, err := json.Marshal(g)
	if err != nil {
		tb.Fatal(err)
	}
	m := hmac.New(sha256.New, key)
	m.Write(payload)
	return append(append([]byte{1}, m.Sum(nil)...), payload...)
}

func TestGrantRoundTrip(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	key := Key([]byte("secret"))
	for i, g := range testGrants(now) {
		tok, err := Sign(key, g)
		if err != nil {
			t.Fatalf("grant %d: %v", i, err)
		}
		if tok[0] != grantVersion {
			t.Fatalf("grant %d: version byte %d, want %d", i, tok[0], grantVersion)
		}
		got, err := Verify(key, tok, now)
		if err != nil {
			t.Fatalf("grant %d: %v", i, err)
		}
		if got.Vault != g.Vault || got.Snapshot != g.Snapshot || got.Principal != g.Principal || !slices.Equal(got.Refs, g.Refs) || !got.Expires.Equal(g.Expires) {
			t.Fatalf("grant %d: verified %+v, signed %+v", i, got, g)
		}
	}
}

// TestVerifyGrantRefuses: forged, altered, expired, truncated and old-version tokens are
// refused with an error wrapping ErrBad that says which.
func TestVerifyGrantRefuses(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	key := Key([]byte("secret"))
	g := testGrants(now)[0]
	tok, err := Sign(key, g)
	if err != nil {
		t.Fatal(err)
	}
	mod := func(f func(b []byte) []byte) []byte { return f(slices.Clone(tok)) }
	cases := []struct {
		name  string
		key   []byte
		token []byte
		at    time.Time
		want  string
	}{
		{"empty", key, nil, now, "empty token"},
		{"version 1", key, legacyGrantToken(t, key, g), now, "version 1 grant is not bound to its holder"},
		{"unknown version", key, mod(func(b []byte) []byte { b[0] = 3; return b }), now, "unknown version 3"},
		{"short", key, tok[:20], now, "shorter than its 33-byte header"},
		{"other key", Key([]byte("other")), tok, now, "signature does not verify"},
		{"principal altered", key, mod(func(b []byte) []byte {
			copy(b[bytes.Index(b, []byte("oncall")):], "intrud")
			return b
		}), now, "signature does not verify"},
		{"reference dropped", key, tok[:len(tok)-chunk.Size], now, "signature does not verify"},
		{"expired", key, tok, g.Expires, "expired at"},
	}
	for _, c := range cases {
		_, err := Verify(c.key, c.token, c.at)
		if !errors.Is(err, ErrBad) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrBad saying %q", c.name, err, c.want)
		}
	}
}

// TestSignRefuses: a grant without a holder, vault, snapshot or references, or with
// an expiry the token cannot carry, is not signed.
func TestSignRefuses(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	good := testGrants(now)[0]
	cases := map[string]func(g *Grant){
		"no principal":   func(g *Grant) { g.Principal = "" },
		"long principal": func(g *Grant) { g.Principal = strings.Repeat("p", MaxPrincipalLen+1) },
		"no vault":       func(g *Grant) { g.Vault = "" },
		"zero snapshot":  func(g *Grant) { g.Snapshot = chunk.ID{} },
		"no references":  func(g *Grant) { g.Refs = nil },
		"year 3000":      func(g *Grant) { g.Expires = time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC) },
	}
	for name, f := range cases {
		g := good
		f(&g)
		if _, err := Sign(Key([]byte("secret")), g); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}

func randIDs(r *rand.Rand, n int) []chunk.ID {
	ids := make([]chunk.ID, n)
	for i := range ids {
		for j := range ids[i] {
			ids[i][j] = byte(r.UintN(256))
		}
	}
	return ids
}
