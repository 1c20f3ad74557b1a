package meta

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	sha256 "github.com/minio/sha256-simd"
)

// FuzzDecodeRefList: any bytes decode to a list or to an error wrapping ErrInvalid, never
// a panic; the IDs take no more room than the bytes they came from; a decoded list
// re-encodes to the same bytes and opens under its own hash.
func FuzzDecodeRefList(f *testing.F) {
	r := rand.New(rand.NewPCG(7, 8))
	f.Add(EncodeRefList(randIDs(r, 4))[0].Data)
	f.Add([]byte("CREF\x01\x00\x00\x00\x00"))
	f.Add([]byte("CREF\x01\xff\xff\xff\xff"))
	f.Add([]byte("junk"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ids, err := DecodeRefList(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		if cap(ids)*chunk.Size > len(data) {
			t.Fatalf("%d bytes decoded into room for %d IDs", len(data), cap(ids))
		}
		if _, err := OpenRefList(chunk.ID(sha256.Sum256(data)), data); err != nil {
			t.Fatalf("a decodable list does not open under its own hash: %v", err)
		}
		// A valid list re-encodes to exactly the same bytes.
		if len(ids) == 0 {
			return
		}
		re := EncodeRefList(ids)
		if len(re) != 1 || !bytes.Equal(re[0].Data, data) {
			t.Fatalf("re-encoding a decoded list changed it")
		}
	})
}

// fuzzGrantKey signs the fuzz targets' grants.
var fuzzGrantKey = GrantKey([]byte("fuzz cluster secret"))

// FuzzVerifyGrant: any token verifies or fails with an error wrapping ErrBadGrant, never a
// panic; a token that verifies is exactly what SignGrant makes of its grant, so the
// signed bytes have one reading.
func FuzzVerifyGrant(f *testing.F) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, g := range testGrants(now) {
		tok, err := SignGrant(fuzzGrantKey, g)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(tok)
		f.Add(tok[:len(tok)-1])
	}
	f.Add(legacyGrantToken(f, fuzzGrantKey, testGrants(now)[0]))
	f.Add([]byte{grantVersion})
	f.Fuzz(func(t *testing.T, token []byte) {
		g, err := VerifyGrant(fuzzGrantKey, token, now)
		if err != nil {
			if !errors.Is(err, ErrBadGrant) {
				t.Fatalf("error does not wrap ErrBadGrant: %v", err)
			}
			return
		}
		re, err := SignGrant(fuzzGrantKey, g)
		if err != nil || !bytes.Equal(re, token) {
			t.Fatalf("re-signing a verified grant %+v: %x, %v; want the token %x", g, re, err, token)
		}
	})
}

// FuzzGrantPayload: any payload (as if its tag verified) decodes to a grant or fails with
// an error wrapping ErrBadGrant, never a panic; the grant's references take no more room
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
			if !errors.Is(err, ErrBadGrant) {
				t.Fatalf("error does not wrap ErrBadGrant: %v", err)
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
