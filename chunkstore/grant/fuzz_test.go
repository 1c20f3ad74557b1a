package grant

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore/chunk"
)

// fuzzGrantKey signs the fuzz targets' grants.
var fuzzGrantKey = Key([]byte("fuzz cluster secret"))

// FuzzVerifyGrant: any token verifies or fails with an error wrapping ErrBad, never a
// panic; a token that verifies is exactly what Sign makes of its grant, so the
// signed bytes have one reading.
func FuzzVerifyGrant(f *testing.F) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, g := range testGrants(now) {
		tok, err := Sign(fuzzGrantKey, g)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(tok)
		f.Add(tok[:len(tok)-1])
	}
	f.Add(legacyGrantToken(f, fuzzGrantKey, testGrants(now)[0]))
	f.Add([]byte{grantVersion})
	f.Fuzz(func(t *testing.T, token []byte) {
		g, err := Verify(fuzzGrantKey, token, now)
		if err != nil {
			if !errors.Is(err, ErrBad) {
				t.Fatalf("error does not wrap ErrBad: %v", err)
			}
			return
		}
		re, err := Sign(fuzzGrantKey, g)
		if err != nil || !bytes.Equal(re, token) {
			t.Fatalf("re-signing a verified grant %+v: %x, %v; want the token %x", g, re, err, token)
		}
	})
}

// FuzzGrantPayload: any payload (as if its tag verified) decodes to a grant or fails with
// an error wrapping ErrBad, never a panic; the grant's references take no more room
// than the payload; a decoded grant encodes to the same bytes.
func FuzzGrantPayload(f *testing.F) {
	for _, g := range testGrants(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)) {
		p := encodeGrantPayload(g)
		f.Add(p)
		f.Add(p[:len(p)-chunk.Size])
		f.Add(append(p, 0))
	}
	f.Add(make([]byte, grantPayloadFixed))
	f.Fuzz(func(t *testing.T, p []byte) {
		g, err := decodeGrantPayload(p)
		if err != nil {
			if !errors.Is(err, ErrBad) {
				t.Fatalf("error does not wrap ErrBad: %v", err)
			}
			return
		}
		if cap(g.Refs)*chunk.Size > len(p) {
			t.Fatalf("%d payload bytes decoded into room for %d references", len(p), cap(g.Refs))
		}
		if re := encodeGrantPayload(g); !bytes.Equal(re, p) {
			t.Fatalf("re-encoding %+v gave %x, want %x", g, re, p)
		}
	})
}
