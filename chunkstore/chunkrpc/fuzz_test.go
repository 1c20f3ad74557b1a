package chunkrpc

import (
	"slices"
	"testing"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	"github.com/cofferhq/coffer/transport"
	"github.com/cofferhq/coffer/transport/wire"
)

// FuzzGetManyRequest: any chunk.GetMany body decodes to at most MaxGetManyItems IDs or is
// refused Invalid, never a panic, and never holds room for more IDs than the limit; a
// decoded request re-encodes to one that decodes the same.
func FuzzGetManyRequest(f *testing.F) {
	for _, n := range []int{0, 1, 23, 24, 256, MaxGetManyItems, MaxGetManyItems + 1} {
		body, err := wire.Marshal(chunkGetManyReq{IDs: make([]chunk.ID, n), Grant: []byte("grant")})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(body)
	}
	f.Add([]byte{0xa1, 0x01, 0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeGetMany(MethodChunkGetMany, body)
		if err != nil {
			if transport.CodeOf(err) != transport.Invalid {
				t.Fatalf("refusal is not Invalid: %v", err)
			}
			return
		}
		if cap(req.IDs) > MaxGetManyItems {
			t.Fatalf("%d-byte body decoded into %d ids (room for %d)", len(body), len(req.IDs), cap(req.IDs))
		}
		re, err := wire.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		again, err := decodeGetMany(MethodChunkGetMany, re)
		if err != nil || !slices.Equal(again.IDs, req.IDs) || !slices.Equal(again.Grant, req.Grant) {
			t.Fatalf("re-encoded request decodes to %d ids, %v; want %d ids", len(again.IDs), err, len(req.IDs))
		}
	})
}

// TestCBORArrayLen: the array head parser reads every length encoding and nothing else.
func TestCBORArrayLen(t *testing.T) {
	for _, n := range []int{0, 23, 24, 255, 256, 65535, 65536, 1 << 20} {
		b, err := wire.Marshal(make([]uint8, n))
		if err != nil {
			t.Fatal(err)
		}
		// NB: []uint8 is a byte string; an array of bools is an array.
		if _, ok := cborArrayLen(b); ok {
			t.Fatalf("byte string of %d read as an array", n)
		}
		b, err = wire.Marshal(make([]bool, n))
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := cborArrayLen(b); !ok || got != uint64(n) {
			t.Fatalf("array of %d read as %d, %v", n, got, ok)
		}
	}
	for _, b := range [][]byte{nil, {0x9f}, {0x99, 0x01}, {0x9b, 1, 2, 3}} {
		if n, ok := cborArrayLen(b); ok {
			t.Fatalf("%x read as an array of %d", b, n)
		}
	}
}
