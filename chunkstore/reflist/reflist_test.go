package reflist

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/chunkstore/chunk"
)

func randIDs(r *rand.Rand, n int) []chunk.ID {
	ids := make([]chunk.ID, n)
	for i := range ids {
		for j := range ids[i] {
			ids[i][j] = byte(r.UintN(256))
		}
	}
	return ids
}

func TestRefListRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	ids := randIDs(r, 1000)
	in := append(slices.Clone(ids), ids[:100]...) // duplicates
	chunks := Encode(in)
	if len(chunks) != 1 {
		t.Fatalf("got %d chunks, want 1", len(chunks))
	}
	if got := chunk.ID(sha256.Sum256(chunks[0].Data)); got != chunks[0].ID {
		t.Fatalf("chunk ID %s is not the SHA-256 of its data (%s)", chunks[0].ID.Str(), got.Str())
	}
	got, err := Decode(chunks[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(ids)
	slices.SortFunc(want, func(a, b chunk.ID) int { return bytes.Compare(a[:], b[:]) })
	if !slices.Equal(got, want) {
		t.Fatalf("decoded %d IDs, want the %d sorted distinct inputs", len(got), len(want))
	}
	if Encode(nil) != nil {
		t.Fatal("empty input gave chunks")
	}
}

func TestRefListSplit(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	ids := randIDs(r, 2*MaxIDs+5)
	chunks := Encode(ids)
	if len(chunks) != 3 {
		t.Fatalf("got %d chunks, want 3", len(chunks))
	}
	var all []chunk.ID
	for i, c := range chunks {
		got, err := Decode(c.Data)
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		if len(got) > MaxIDs {
			t.Fatalf("chunk %d holds %d IDs", i, len(got))
		}
		all = append(all, got...)
	}
	if len(all) != len(ids) || !slices.IsSortedFunc(all, func(a, b chunk.ID) int { return bytes.Compare(a[:], b[:]) }) {
		t.Fatalf("concatenation has %d IDs (want %d) or is unsorted", len(all), len(ids))
	}
}

func TestDecodeRefListRejects(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	good := Encode(randIDs(r, 3))[0].Data
	mod := func(f func(b []byte) []byte) []byte { return f(slices.Clone(good)) }
	cases := map[string][]byte{
		"short":      good[:5],
		"magic":      mod(func(b []byte) []byte { b[0] = 'X'; return b }),
		"version":    mod(func(b []byte) []byte { b[4] = 2; return b }),
		"count high": mod(func(b []byte) []byte { binary.BigEndian.PutUint32(b[5:], 4); return b }),
		"truncated":  good[:len(good)-1],
		"trailing":   append(slices.Clone(good), 0),
		"over limit": mod(func(b []byte) []byte { binary.BigEndian.PutUint32(b[5:], MaxIDs+1); return b }),
		"unsorted":   mod(func(b []byte) []byte { b[header], b[header+32] = 0xff, 0; return b }),
		"duplicate":  mod(func(b []byte) []byte { copy(b[header+32:header+64], b[header:]); return b }),
	}
	for name, data := range cases {
		if _, err := Decode(data); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}

// TestOpen: a list opens only under the ID it hashes to, and a list that hashes
// right but is malformed is refused too; both errors name the reference.
func TestOpen(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	c := Encode(randIDs(r, 10))[0]
	ids, err := Open(c.ID, c.Data)
	if err != nil || len(ids) != 10 {
		t.Fatalf("Open of a good list: %d ids, %v", len(ids), err)
	}
	other := randIDs(r, 1)[0]
	if _, err := Open(other, c.Data); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), other.Str()) || !strings.Contains(err.Error(), "does not hash") {
		t.Fatalf("Open under another ID: %v, want ErrInvalid naming it", err)
	}
	bad := append([]byte(nil), c.Data...)
	bad[0] ^= 0xff // wrong magic
	badID := chunk.ID(sha256.Sum256(bad))
	if _, err := Open(badID, bad); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), badID.Str()) {
		t.Fatalf("Open of a malformed list: %v, want ErrInvalid naming it", err)
	}
}
