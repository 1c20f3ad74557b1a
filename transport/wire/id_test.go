package wire_test

import (
	"testing"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/transport/wire"
)

// BenchmarkUnmarshalIDs decodes a batch of 4,096 chunk IDs, the largest batch a request
// carries (chunk.GetMany), to show what the exact-length check on every ID costs.
func BenchmarkUnmarshalIDs(b *testing.B) {
	type req struct {
		IDs []chunk.ID `cbor:"ids"`
	}
	in := req{IDs: make([]chunk.ID, 4096)}
	for i := range in.IDs {
		in.IDs[i][0], in.IDs[i][1] = byte(i), byte(i>>8)
	}
	body, err := wire.Marshal(in)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		var out req
		if err := wire.Unmarshal(body, &out); err != nil {
			b.Fatal(err)
		}
	}
}

// TestUnmarshalRefusesShortAndLongIDs: a chunk ID on the wire is exactly 32 bytes; a
// shorter byte string used to be zero-padded into another ID, a longer one cut.
func TestUnmarshalRefusesShortAndLongIDs(t *testing.T) {
	type req struct {
		IDs []chunk.ID `cbor:"ids"`
	}
	type raw struct {
		IDs [][]byte `cbor:"ids"`
	}
	for _, n := range []int{0, 1, 31, 33, 64} {
		body, err := wire.Marshal(raw{IDs: [][]byte{make([]byte, chunk.Size), make([]byte, n)}})
		if err != nil {
			t.Fatal(err)
		}
		var out req
		if err := wire.Unmarshal(body, &out); err == nil {
			t.Errorf("a %d-byte chunk ID decoded as %v, want an error", n, out.IDs)
		}
	}
	ok, err := wire.Marshal(raw{IDs: [][]byte{make([]byte, chunk.Size)}})
	if err != nil {
		t.Fatal(err)
	}
	var out req
	if err := wire.Unmarshal(ok, &out); err != nil || len(out.IDs) != 1 {
		t.Fatalf("a 32-byte ID: %v, %v", out.IDs, err)
	}
}
