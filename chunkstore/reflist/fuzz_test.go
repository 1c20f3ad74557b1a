package reflist

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cofferhq/coffer/chunkstore/chunk"
	sha256 "github.com/minio/sha256-simd"
)

// FuzzDecodeRefList: any bytes decode to a list or to an error wrapping ErrInvalid, never
// a panic; the IDs take no more room than the bytes they came from; a decoded chunk
// re-encodes to the same bytes and opens under its own hash; Encode keeps its IDs.
func FuzzDecodeRefList(f *testing.F) {
	r := rand.New(rand.NewPCG(7, 8))
	f.Add(Encode(randIDs(r, 4))[0].Data)
	f.Add([]byte("CREF\x01\x00\x00\x00\x00"))
	f.Add([]byte("CREF\x01\xff\xff\xff\xff"))
	f.Add([]byte("junk"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ids, err := Decode(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		if cap(ids)*chunk.Size > len(data) {
			t.Fatalf("%d bytes decoded into room for %d IDs", len(data), cap(ids))
		}
		if _, err := Open(chunk.ID(sha256.Sum256(data)), data); err != nil {
			t.Fatalf("a decodable list does not open under its own hash: %v", err)
		}
		// A valid chunk re-encodes to exactly the same bytes, and Encode splits its IDs
		// into chunks that hold them all, in order.
		if len(ids) == 0 {
			return
		}
		if re := encodeRun(ids); !bytes.Equal(re.Data, data) {
			t.Fatalf("re-encoding a decoded chunk changed it")
		}
		var all []chunk.ID
		for _, c := range Encode(ids) {
			got, err := Decode(c.Data)
			if err != nil {
				t.Fatalf("Encode wrote a chunk that does not decode: %v", err)
			}
			all = append(all, got...)
		}
		if !slices.Equal(all, ids) {
			t.Fatalf("Encode's chunks hold %d IDs, want the %d decoded", len(all), len(ids))
		}
	})
}
